"""Where a small message's time goes in the page, and a streamed chunk's: the profile behind
bench/README.md's "Where the time goes" (issue 23), for the next person to run again.

    .venv/bin/python bench/profile_page.py                  every part, in every engine
    .venv/bin/python bench/profile_page.py --browsers chromium --only instructions

- ``instructions``: the Python bytecode instructions a small message runs in the page, by
  function (and, for pysmtp-wasm, by room: the engine, the facade, the transport, the JS
  boundary), for pysmtp-wasm, for the floor client (bench/pages/work.js ``FloorClient``: the
  least Python a client could run, with the same crossings) and for the checked floor (the
  floor with the checks a client owes its user, written flat: ``_BenchCheckedFloor``). A
  count: the same on every machine and in every engine, so it shows what a change saves
  without the noise of a timing.
- ``phases``: µs a message inside each of the page's calls (``useEnvelope()``, ``send()``,
  ``end()``) and in the client's handling of each reply (with the write of its answer), for
  pysmtp-wasm, the floor client, the checked floor and emailjs, against the in-page server (no
  network).
- ``chunk``: µs of the byte scans and copies of one 64 KiB chunk of a streamed message in the
  page's Pyodide (the dot-stuffer's encode and what it is made of). Firefox's and WebKit's
  clocks are coarse in a page that is not cross-origin isolated: their figures come in steps
  of 5 µs, and the copies (~2 µs) read 0 there.
- ``threads``: a 105 MB message streamed over the real path (websockify, bench/sink.py), raw
  (a bare WebSocket), in-page and in worker mode, and the CPU time each process and thread of
  the path spent on it (Linux's /proc: the browser's processes are the other descendants of
  this one, websockify's per-connection children are counted in its parent): where streaming's
  time goes, across threads (the page's, the Worker's, the network's) and processes.
- ``small_threads``: small messages over the same path, the same way (CPU µs a message by
  thread and process): pysmtp-wasm in-page and in worker mode, emailjs, and the JS floor
  (bench/pages/work.js ``jsFloorSmall``, no engine at all) in the page and in a Worker. What
  worker mode adds to a message, in time and in the CPU of the browser's threads, for
  pysmtp-wasm beside a client that does nothing but the hops.
- ``worker_cpu`` (Chromium only): the same five, each thread's busy time a message by kind of
  work (WebSocket sends, postMessage, Python, Pyodide's JavaScript, ours, the browser's own),
  from V8's sampling profiler on the page and its Workers (bench/profile_worker.mjs).

Needs ./build.sh (dist/) and the browsers of tests/provision.sh, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    ENGINES,
    MB,
    close_browser,
    engine_browser,
    median,
    run_js,
    start_path,
    start_web,
    stop_path,
)

from tests.browsers import descendants  # noqa: E402

PARTS = ("instructions", "phases", "chunk", "threads", "small_threads", "worker_cpu")


def instructions(driver: Any, count: int, top: int) -> None:
    for client in ("pysmtp", "floor", "floor_checked"):
        rows = run_js(
            driver,
            "window.bench.instructionProfile(arguments[0])",
            {"client": client, "warm": 50, "count": count},
        )
        total = sum(n for n, _ in rows)
        own = "pysmtp_wasm/" if client == "pysmtp" else "floor:"
        ours = [(n, where) for n, where in rows if where.startswith(own)]
        who = "pysmtp_wasm" if client == "pysmtp" else f"the {client.replace('_', ' ')} client"
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
        for client in ("pysmtp", "floor", "floor_checked", "emailjs"):
            result = run_js(
                driver,
                "window.bench.pageCost(arguments[0])",
                {"client": client, "count": count, "phases": True},
            )
            got.setdefault(client, []).append({"the whole message": result["us"], **result["phases"]})
    names = sorted({name for samples in got.values() for s in samples for name in s}, key=_phase_order)
    print(f"  {'µs a message (median of ' + str(runs) + ' runs)':44}" + "".join(f"{c:>14}" for c in got))
    for name in names:
        cells = [
            median([s[name] for s in samples]) if all(name in s for s in samples) else None
            for samples in got.values()
        ]
        print(f"  {name:44}" + "".join(f"{c:14.1f}" if c is not None else f"{'-':>14}" for c in cells))


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


TICK = os.sysconf("SC_CLK_TCK")  # (Linux's /proc counts CPU time in these)


def _stat(path: str) -> tuple[str, int, float, float] | None:
    """(comm, ppid, own CPU s, reaped children's CPU s) of /proc/<pid>[/task/<tid>]/stat."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / TICK
    return comm, int(fields[1]), own, (int(fields[13]) + int(fields[14])) / TICK


def _label(pid: int, comm: str) -> str:
    """A process's name, with Chromium's process type (they are all "chromium")."""
    try:  # (Chromium rewrites its command line into one string: split on spaces too)
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return comm
    kind = [a.decode()[7:] for a in args if a.startswith(b"--type=")]
    sub = [a.decode().rsplit(".", 1)[-1] for a in args if a.startswith(b"--utility-sub-type=")]
    return " ".join([comm, *kind, *sub])


WHOLE = "(the whole process)"  # cpu_by_thread's row of a browser process, ended threads too


def cpu_by_thread(roots: dict[int, str]) -> dict[tuple[str, str], float]:
    """CPU seconds so far of each process of ``roots`` ({pid: name}) with its reaped children,
    and of every thread of the browser: the other processes this one started, and theirs. Each
    browser process also has a row ``(label, WHOLE)``, summed over the processes of that label:
    its threads that ended are in it (a Worker's, once terminated); :func:`_total` sums these
    rows and the roots', not the threads."""
    out: dict[tuple[str, str], float] = {}
    for pid, name in roots.items():
        if got := _stat(f"/proc/{pid}/stat"):
            out[(name, "")] = got[2] + got[3]
    for pid in descendants(os.getpid(), skip=roots):
        if not (whole := _stat(f"/proc/{pid}/stat")):
            continue  # (ended meanwhile)
        label = _label(pid, whole[0])
        out[(label, WHOLE)] = out.get((label, WHOLE), 0) + whole[2]
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            if got := _stat(f"/proc/{pid}/task/{tid}/stat"):
                key = (label, got[0])
                out[key] = out.get(key, 0) + got[2]
    return out


def _total(spent: dict[tuple[str, str], float]) -> float:
    """The CPU of every process, once: the rows of ``roots`` and the browser's whole-process
    rows (threads that ended included), not their threads again."""
    return sum(v for (_, thread), v in spent.items() if thread in ("", WHOLE))


def cpu_runs(
    driver: Any, roots: dict[int, str], modes: dict[str, tuple[str, dict[str, Any]]], runs: int
) -> dict[str, list[tuple[dict[str, Any], float, dict[tuple[str, str], float]]]]:
    """Each mode ({name: (bench's function, its spec)}) once a round, runs rounds after one to
    warm up: per mode and run, the page's sample, the wall time (s) and the CPU by thread (s)."""
    got: dict[str, list[tuple[dict[str, Any], float, dict[tuple[str, str], float]]]] = {m: [] for m in modes}
    for round_ in range(runs + 1):
        for mode, (call, spec) in modes.items():
            before, t0 = cpu_by_thread(roots), time.monotonic()
            sample = run_js(driver, f"window.bench.{call}(arguments[0])", spec)
            wall, after = time.monotonic() - t0, cpu_by_thread(roots)
            if round_:  # (the first round warms up)
                spent = {k: v - before.get(k, 0) for k, v in after.items()}
                got[mode].append((sample, wall, spent))
    return got


def cpu_rows(
    samples: list[tuple[Any, float, dict[tuple[str, str], float]]], per: float, top: int, at_least: float
) -> list[str]:
    """The busiest threads (and whole browser processes), the medians over the runs of their CPU
    seconds divided by ``per``, those of ``at_least`` or more."""
    keys = {k for _, _, s in samples for k in s}
    rows = sorted(((median([s.get(k, 0) for _, _, s in samples]) / per, k) for k in keys), reverse=True)
    return [
        f"{value:8.0f}  {process}{' / ' + thread if thread else ''}"
        for value, (process, thread) in rows[:top]
        if value >= at_least
    ]


@contextlib.contextmanager
def on_the_path(engine: str, base: str) -> Iterator[tuple[Any, dict[int, str], dict[str, int], Any]]:
    """The path started (websockify, bench/sink.py) and the engine's browser on the bench page:
    (the driver, the path's processes for :func:`cpu_by_thread`, the sink's ports, websockify)."""
    tmp, _, sink, ports, proxy = start_path("pysmtp-profile-")
    try:
        driver = engine_browser(engine)
        try:
            driver.get(base + "/bench/pages/work.html")
            run_js(driver, "null")
            yield driver, {sink.pid: "sink", proxy.pid: "websockify (and its children)"}, ports, proxy
        finally:
            close_browser(driver)
    finally:
        stop_path(tmp, sink, proxy)


def threads(engine: str, base: str, runs: int, top: int) -> None:
    with on_the_path(engine, base) as (driver, roots, ports, proxy):
        plain = {"proxy": proxy.url(ports["smtp"]), "port": ports["smtp"], "passes": 100}
        raw = {"via": "websocket", "proxy": proxy.url(ports["raw"]), "passes": 100}
        modes = {
            "raw (a bare WebSocket)": ("raw", raw),
            "in-page": ("throughput", {**plain, "client": "pysmtp"}),
            "worker mode": ("throughput", {**plain, "client": "worker"}),
        }
        for mode, samples in cpu_runs(driver, roots, modes, runs).items():
            megabytes = samples[0][0]["bytes"] / MB
            rate = median([s["bytes"] / MB / (s["ms"] / 1000) for s, _, _ in samples])
            wall = median([w for _, w, _ in samples]) * 1000
            total = median([_total(s) for _, _, s in samples]) * 1000
            print(
                f"  {mode}: {rate:.1f} MB/s; {wall:.0f} ms, CPU {total:.0f} ms "
                f"({total / wall:.2f} cores), {total / megabytes:.1f} ms a MB"
            )
            for row in cpu_rows(samples, 0.001, top, at_least=10):
                print("  " + row + " ms")


def small_threads(engine: str, base: str, runs: int, top: int, count: int = 500) -> None:
    """Small messages over the real path, and the CPU each thread and process spent on them,
    µs a message: pysmtp-wasm in-page and in worker mode, emailjs, and the JS floor in the page
    and in a Worker (bench/pages/work.js jsFloorSmall). What worker mode adds to a message's
    time, beside what it adds to the CPU of the page's process, for pysmtp-wasm and for a
    client with no engine at all: the hops' own work, and ours on top of it. (Linux counts CPU
    in ticks of 10 ms: 20 µs a message with 500 messages. The JS floor's Worker ends with each
    run, so its thread shows only in its process's whole row.)"""
    with on_the_path(engine, base) as (driver, roots, ports, proxy):
        spec = {"proxy": proxy.url(ports["smtp"]), "port": ports["smtp"], "count": count}
        modes = {
            "pysmtp-wasm in-page": ("smallMessages", {**spec, "client": "pysmtp"}),
            "pysmtp-wasm worker mode": ("smallMessages", {**spec, "client": "worker"}),
            "emailjs": ("smallMessages", {**spec, "client": "emailjs"}),
            "JS floor in-page": ("jsFloorSmall", {**spec, "where": "page"}),
            "JS floor in a Worker": ("jsFloorSmall", {**spec, "where": "worker"}),
        }
        for mode, samples in cpu_runs(driver, roots, modes, runs).items():
            wall = median([s["ms"] * 1000 / s["count"] for s, _, _ in samples])
            total = median([_total(s) for _, _, s in samples]) * 1e6 / count
            print(f"  {mode}: {wall:.0f} µs a message (the page's clock), CPU {total:.0f} µs a message")
            for row in cpu_rows(samples, 1e-6 * count, top, at_least=10):
                print("  " + row + " µs")


def worker_cpu(base: str, count: int = 1000) -> None:
    """Chromium only: each thread's busy time a small message, by kind of work, from V8's
    sampling profiler on the page and on its Workers (bench/profile_worker.mjs, through the
    browser tests' puppeteer-core: ./build.sh test installs it)."""
    tmp, _, sink, ports, proxy = start_path("pysmtp-profile-")
    try:
        spec = {"proxy": proxy.url(ports["smtp"]), "port": ports["smtp"], "count": count}
        script = Path(__file__).resolve().parent / "profile_worker.mjs"
        done = subprocess.run(
            ["node", str(script), base, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            print(f"  bench/profile_worker.mjs failed: {done.stderr.strip()[-2000:]}")
            return
        for mode, threads_ in json.loads(done.stdout).items():
            clock = threads_.pop("the page's clock, µs a message")["all"]
            busy = sum(kinds["busy"] for kinds in threads_.values())
            print(f"  {mode}: {clock:.0f} µs a message (the page's clock), threads busy {busy:.0f} µs")
            for thread, kinds in threads_.items():
                print(f"    {thread}: busy {kinds.pop('busy'):.0f} µs")
                for what, us in sorted(kinds.items(), key=lambda item: -item[1]):
                    if us >= 3:
                        print(f"      {us:6.0f}  {what}")
    finally:
        stop_path(tmp, sink, proxy)


PATH_PARTS = ("threads", "small_threads", "worker_cpu")


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
            page_parts = [part for part in parts if part not in PATH_PARTS]
            if page_parts:
                driver = engine_browser(engine)
                try:
                    driver.get(base + "/bench/pages/work.html")
                    run_js(driver, "null")
                    run_js(
                        driver, "window.bench.pageCost(arguments[0])", {"client": "pysmtp", "count": 200}
                    )  # warm
                    for part in page_parts:
                        print(f"==> {engine}: {part}", flush=True)
                        if part == "instructions":
                            instructions(driver, 200, args.top)
                        elif part == "phases":
                            phases(driver, args.runs, 400)
                        else:
                            chunk(driver, 200)
                finally:
                    close_browser(driver)
            if "threads" in parts:
                print(f"==> {engine}: threads", flush=True)
                threads(engine, base, args.runs, args.top)
            if "small_threads" in parts:
                print(f"==> {engine}: small_threads", flush=True)
                small_threads(engine, base, args.runs, min(args.top, 12))
            if "worker_cpu" in parts:
                print(f"==> {engine}: worker_cpu", flush=True)
                if engine == "chromium":
                    worker_cpu(base)
                else:
                    print("  (Chromium only: V8's profiler over the DevTools protocol)")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
