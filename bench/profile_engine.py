"""The sans-IO engine alone, in CPython: what one message and one megabyte cost it, with no
network, no browser and no FFI. What the page spends beyond these figures (bench/README.md) is
WebAssembly's slowdown and the crossings between JavaScript and Python.

    .venv/bin/python bench/profile_engine.py            the figures
    .venv/bin/python bench/profile_engine.py --cprofile the same under cProfile: the top functions
    .venv/bin/py-spy record -o bench/results/engine.svg -- .venv/bin/python bench/profile_engine.py
                                                        a flame graph with py-spy (needs ptrace)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysmtp_wasm._engine import SmtpEngine  # noqa: E402
from pysmtp_wasm._options import parse_options  # noqa: E402

# The benchmark's text (bench/pages/work.js): 76 columns, every third line starting with ".".
LINES = [f"{'.' if i % 3 == 0 else ''}line {i} " for i in range(13443)]
TEXT = "".join(head + "x" * (76 - len(head)) + "\r\n" for head in LINES).encode()
CHUNKS = [TEXT[at : at + 65536] for at in range(0, len(TEXT), 65536)]
SMALL = b"From: bench@example.com\r\nSubject: benchmark\r\n\r\n" + TEXT[: 25 * 78]


def session() -> SmtpEngine:
    engine = SmtpEngine(parse_options({}))
    engine.transcript = False  # as in the page when nobody listens
    engine.connection_made()
    engine.receive_data(b"220 sink ESMTP\r\n")
    engine.receive_data(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 1000000000\r\n")
    engine.data_to_send()
    return engine


def small_messages(engine: SmtpEngine, count: int) -> None:
    for _ in range(count):
        engine.use_envelope({"from": "bench@example.com", "to": ["sink@example.com"]})
        for reply in (b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n", b"354 go ahead\r\n"):
            engine.data_to_send()
            engine.receive_data(reply)
        engine.send(SMALL)
        engine.end()
        engine.data_to_send()
        engine.receive_data(b"250 2.0.0 queued\r\n")


def stream(engine: SmtpEngine, passes: int) -> None:
    engine.use_envelope({"from": "bench@example.com", "to": ["sink@example.com"]})
    for reply in (b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n", b"354 go ahead\r\n"):
        engine.data_to_send()
        engine.receive_data(reply)
    for _ in range(passes):
        for chunk in CHUNKS:
            engine.send(chunk)
            engine.data_to_send()
    engine.end()
    engine.data_to_send()
    engine.receive_data(b"250 2.0.0 queued\r\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cprofile", action="store_true", help="run under cProfile and print the top functions"
    )
    args = parser.parse_args()
    engine = session()
    small_messages(engine, 200)  # warm up
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    small_messages(engine, 5000)
    per_message = (time.perf_counter() - started) / 5000
    started = time.perf_counter()
    stream(engine, 40)
    seconds = time.perf_counter() - started
    if profiler:
        profiler.disable()
    print(f"small message (~2 KB, 4 replies): {per_message * 1e6:.1f} us of engine time")
    per_chunk = seconds / (40 * len(CHUNKS))
    print(f"streaming: {40 * len(TEXT) / 1e6 / seconds:.0f} MB/s ({per_chunk * 1e6:.0f} us per 64 KiB)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
