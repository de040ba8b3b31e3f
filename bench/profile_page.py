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

Needs ./build.sh (dist/) and the browsers of tests/provision.sh, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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

PARTS = ("instructions", "phases", "chunk", "threads")


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


def cpu_by_thread(roots: dict[int, str]) -> dict[tuple[str, str], float]:
    """CPU seconds so far of each process of ``roots`` ({pid: name}) with its reaped children,
    and of every thread of the browser: the other processes this one started, and theirs."""
    parent: dict[int, int] = {}
    comms: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (got := _stat(f"/proc/{entry}/stat")):
            comms[int(entry)], parent[int(entry)] = got[0], got[1]
    out: dict[tuple[str, str], float] = {}
    for pid, name in roots.items():
        if got := _stat(f"/proc/{pid}/stat"):
            out[(name, "")] = got[2] + got[3]
    me = os.getpid()
    for pid in comms:
        ancestor = pid
        while ancestor > 1 and ancestor != me and ancestor not in roots:
            ancestor = parent.get(ancestor, 1)
        if ancestor != me or pid == me:
            continue
        label = _label(pid, comms[pid])
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            if got := _stat(f"/proc/{pid}/task/{tid}/stat"):
                key = (label, got[0])
                out[key] = out.get(key, 0) + got[2]
    return out


def threads(engine: str, base: str, runs: int, top: int) -> None:
    tmp, _, sink, ports, proxy = start_path("pysmtp-profile-")
    driver = engine_browser(engine)
    try:
        driver.get(base + "/bench/pages/work.html")
        run_js(driver, "null")
        roots = {sink.pid: "sink", proxy.pid: "websockify (and its children)"}
        plain = {"proxy": proxy.url(ports["smtp"]), "port": ports["smtp"], "passes": 100}
        raw = {"via": "websocket", "proxy": proxy.url(ports["raw"]), "passes": 100}
        modes = {
            "raw (a bare WebSocket)": ("raw", raw),
            "in-page": ("throughput", {**plain, "client": "pysmtp"}),
            "worker mode": ("throughput", {**plain, "client": "worker"}),
        }
        # per mode and run: the page's sample ({bytes, ms}), the wall time, the CPU by thread
        got: dict[str, list[tuple[dict[str, Any], float, dict[tuple[str, str], float]]]] = {
            m: [] for m in modes
        }
        for round_ in range(runs + 1):
            for mode, (call, spec) in modes.items():
                before, t0 = cpu_by_thread(roots), time.monotonic()
                sample = run_js(driver, f"window.bench.{call}(arguments[0])", spec)
                wall, after = time.monotonic() - t0, cpu_by_thread(roots)
                if round_:  # (the first round warms up)
                    spent = {k: v - before.get(k, 0) for k, v in after.items()}
                    got[mode].append((sample, wall, spent))
        for mode, samples in got.items():
            megabytes = samples[0][0]["bytes"] / MB
            rate = median([s["bytes"] / MB / (s["ms"] / 1000) for s, _, _ in samples])
            wall = median([w for _, w, _ in samples]) * 1000
            total = median([sum(s.values()) for _, _, s in samples]) * 1000
            print(
                f"  {mode}: {rate:.1f} MB/s; {wall:.0f} ms, CPU {total:.0f} ms "
                f"({total / wall:.2f} cores), {total / megabytes:.1f} ms a MB"
            )
            keys = {k for _, _, s in samples for k in s}
            rows = sorted(
                ((median([s.get(k, 0) for _, _, s in samples]) * 1000, k) for k in keys), reverse=True
            )
            for ms, (process, thread) in rows[:top]:
                if ms >= 10:
                    print(f"    {ms:6.0f} ms  {process}{' / ' + thread if thread else ''}")
    finally:
        close_browser(driver)
        stop_path(tmp, sink, proxy)


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
            page_parts = [part for part in parts if part != "threads"]
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
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
