"""Where a small message's time goes in the page, and a streamed chunk's: the profile behind
bench/README.md's "Where the time goes" (issue 23), for the next person to run again.

    .venv/bin/python bench/profile_page.py                  all three, in every engine
    .venv/bin/python bench/profile_page.py --browsers chromium --only instructions

- ``instructions``: the Python bytecode instructions a small message runs in the page, by
  function (and, for pysmtp-wasm, by room: the engine, the facade, the transport, the JS
  boundary), for pysmtp-wasm and for the floor client (bench/pages/work.js ``FloorClient``: the
  least Python a client could run, with the same crossings). A count: the same on every
  machine and in every engine, so it shows what a change saves without the noise of a timing.
- ``phases``: µs a message inside each of the page's calls (``useEnvelope()``, ``send()``,
  ``end()``) and in the client's handling of each reply (with the write of its answer), for
  pysmtp-wasm, the floor client and emailjs, against the in-page server (no network).
- ``chunk``: µs of the byte scans and copies of one 64 KiB chunk of a streamed message in the
  page's Pyodide (the dot-stuffer's encode and what it is made of). Firefox's and WebKit's
  clocks are coarse in a page that is not cross-origin isolated: their figures come in steps
  of 5 µs, and the copies (~2 µs) read 0 there.

Needs ./build.sh (dist/) and the browsers of tests/provision.sh, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ENGINES, close_browser, engine_browser, median, run_js, start_web  # noqa: E402

PARTS = ("instructions", "phases", "chunk")


def instructions(driver: Any, count: int, top: int) -> None:
    for client in ("pysmtp", "floor"):
        rows = run_js(
            driver,
            "window.bench.instructionProfile(arguments[0])",
            {"client": client, "warm": 50, "count": count},
        )
        total = sum(n for n, _ in rows)
        own = "floor:" if client == "floor" else "pysmtp_wasm/"
        ours = [(n, where) for n, where in rows if where.startswith(own)]
        who = "the floor client" if client == "floor" else "pysmtp_wasm"
        mine = sum(n for n, _ in ours)
        print(f"  {client}: {total:.0f} instructions a message, {mine:.0f} in {who} ({len(ours)} functions)")
        if client == "pysmtp":
            rooms: dict[str, float] = {}
            for n, where in ours:
                room = ROOMS.get(where.split("/")[-1].split(":")[0], "the engine")
                rooms[room] = rooms.get(room, 0) + n
            by_room = sorted(rooms.items(), key=_by_count)
            print("    by room: " + ", ".join(f"{room} {n:.0f}" for room, n in by_room))
        for n, where in ours[:top]:
            print(f"    {n:8.1f}  {where}")


# Which room of pysmtp_wasm each module is (docs/architecture.md); the rest is the sans-IO engine.
ROOMS = {
    "_client.py": "the client facade",
    "_browser.py": "the browser transport",
    "_transport.py": "the browser transport",
    "_jsapi.py": "the JS boundary",
}


def _by_count(item: tuple[str, float]) -> float:
    return -item[1]


def phases(driver: Any, runs: int, count: int) -> None:
    got: dict[str, list[dict[str, float]]] = {}
    for _ in range(runs):
        for client in ("pysmtp", "floor", "emailjs"):
            result = run_js(
                driver,
                "window.bench.pageCost(arguments[0])",
                {"client": client, "count": count, "phases": True},
            )
            got.setdefault(client, []).append({"the whole message": result["us"], **result["phases"]})
    names = sorted({name for samples in got.values() for s in samples for name in s}, key=_phase_order)
    print(f"  {'µs a message (median of ' + str(runs) + ' runs)':44}" + "".join(f"{c:>10}" for c in got))
    for name in names:
        cells = [
            median([s[name] for s in samples]) if all(name in s for s in samples) else None
            for samples in got.values()
        ]
        print(f"  {name:44}" + "".join(f"{c:10.1f}" if c is not None else f"{'-':>10}" for c in cells))


def _phase_order(name: str) -> tuple[int, str]:
    order = [
        "the whole message",
        "useEnvelope()",
        "reply to MAIL",
        "reply to RCPT",
        "reply to DATA",
        "send()",
        "end()",
        "reply to end of data",
    ]
    return (order.index(name), name) if name in order else (len(order), name)


def chunk(driver: Any, count: int) -> None:
    costs = run_js(driver, "window.bench.chunkProfile(arguments[0])", {"count": count})
    for what, us in costs:
        print(f"    {us:8.1f} µs  {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--browsers", default=",".join(ENGINES), help=f"of {', '.join(ENGINES)} (default: all)"
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs of the phases (the median is kept)")
    parser.add_argument("--top", type=int, default=25, help="functions listed by instructions")
    args = parser.parse_args()
    browsers = [b for b in args.browsers.split(",") if b]
    parts = [p for p in args.only.split(",") if p]
    if set(browsers) - set(ENGINES) or set(parts) - set(PARTS):
        parser.error("unknown browser or part")
    server, base = start_web()
    try:
        for engine in browsers:
            driver = engine_browser(engine)
            try:
                driver.get(base + "/bench/pages/work.html")
                run_js(driver, "null")
                run_js(
                    driver, "window.bench.pageCost(arguments[0])", {"client": "pysmtp", "count": 200}
                )  # warm
                for part in parts:
                    print(f"==> {engine}: {part}", flush=True)
                    if part == "instructions":
                        instructions(driver, 200, args.top)
                    elif part == "phases":
                        phases(driver, args.runs, 400)
                    else:
                        chunk(driver, 200)
            finally:
                close_browser(driver)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
