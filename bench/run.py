"""pysmtp-wasm's benchmark: this project and its references, in one run, on one machine.

    ./build.sh bench            (builds dist/, the emailjs bundle and the snapshot, then this)
    .venv/bin/python bench/run.py [--runs 5] [--quick] [--only small,throughput,...]

Everything goes through the same pieces: headless Debian Chromium (Selenium), a static HTTP
server for dist/ and bench/pages/, one websockify (token mode, numpy installed), and the sinks
of bench/sink.py in their own process. Each figure is the median of --runs runs. Writes
bench/results/latest.json ({"metric": {"pysmtp_wasm": x, "emailjs": y, ...}}) and
bench/results/latest.md (the table for bench/README.md), and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import json
import os
import platform
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SE_CHROMEDRIVER", "/usr/bin/chromedriver")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

from tests.certs import self_signed  # noqa: E402
from tests.servers import CHROME_FLAGS as TEST_CHROME_FLAGS  # noqa: E402
from tests.servers import Websockify, permissive_client_context  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MB = 1e6

CHROME_FLAGS = [*TEST_CHROME_FLAGS, "--enable-precise-memory-info"]


def log(*args: Any) -> None:
    print("==>", *args, file=sys.stderr, flush=True)


# -- the static web server -----------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the repository; cacheable for an hour, so a second navigation is a warm cache."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".json": "application/json",
        ".whl": "application/zip",
        ".bin": "application/octet-stream",
    }

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "public, max-age=3600")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_web() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(ROOT))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


# -- the browser -----------------------------------------------------------------------------------


def new_browser() -> Any:
    """A fresh Chromium with its own empty profile: nothing cached."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="bench-chrome-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(os.environ["SE_CHROMEDRIVER"]))
    driver.set_script_timeout(600)
    driver._bench_profile = profile  # type: ignore[attr-defined]
    return driver


def close_browser(driver: Any) -> None:
    profile = getattr(driver, "_bench_profile", None)
    driver.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


def engine_browser(engine: str) -> Any:
    """A fresh browser of ``engine`` with an empty profile: Chromium as above, Firefox and WebKit
    as the tests drive them (tests/browsers.py)."""
    if engine == "chromium":
        return new_browser()
    from tests.browsers import Firefox, webkit

    driver = Firefox() if engine == "firefox" else webkit()
    driver.set_script_timeout(600)
    return driver


def wait_result(driver: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = driver.execute_script("return window.benchResult || null;")
        if result:
            if "error" in result:
                raise RuntimeError(result["error"])
            return dict(result)
        time.sleep(0.02)
    raise TimeoutError("the page gave no result")


def run_js(driver: Any, call: str, *args: Any) -> Any:
    script = (
        "const done = arguments[arguments.length - 1];"
        f"window.bench.ready.then(() => {call}).then("
        "  (v) => done({ok: true, v}), (e) => done({ok: false, e: String(e && e.stack || e)}));"
    )
    result = driver.execute_async_script(script, *args)
    if not result["ok"]:
        raise RuntimeError(result["e"])
    return result["v"]


def cpu_profile(driver: Any, call: str, spec: dict[str, Any], top: int = 25) -> str:
    """Run one workload under Chromium's sampling profiler (CDP); the functions with the most
    self time, as a table. WebAssembly functions show as wasm-function[N] (Pyodide's build has
    no names), JavaScript ones by name and file."""
    driver.execute_cdp_cmd("Profiler.enable", {})
    driver.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 100})
    driver.execute_cdp_cmd("Profiler.start", {})
    run_js(driver, call, spec)
    profile = driver.execute_cdp_cmd("Profiler.stop", {})["profile"]
    driver.execute_cdp_cmd("Profiler.disable", {})
    by_id = {node["id"]: node for node in profile["nodes"]}
    self_us: dict[str, float] = {}
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = by_id[sample]["callFrame"]
        url = frame.get("url", "").rsplit("/", 1)[-1]
        name = f"{frame.get('functionName') or '(anonymous)'} {url}".strip()
        self_us[name] = self_us.get(name, 0.0) + delta
    total = sum(self_us.values()) or 1.0
    groups: dict[str, float] = {}
    for name, us in self_us.items():
        if name.startswith("wasm-function"):
            group = "WebAssembly (CPython, Pyodide's C)"
        elif name.endswith("pyodide.asm.mjs"):
            group = "Pyodide's JavaScript (the FFI)"
        elif name.startswith("("):
            group = name
        else:
            group = "other JavaScript and built-ins"
        groups[group] = groups.get(group, 0.0) + us
    lines = [f"{us / 1000:9.1f} {100 * us / total:5.1f}  [{group}]" for group, us in
             sorted(groups.items(), key=lambda item: -item[1])]  # fmt: skip
    lines.insert(0, f"{'self ms':>9} {'%':>5}  function")
    lines.append("")
    for name, us in sorted(self_us.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{us / 1000:9.1f} {100 * us / total:5.1f}  {name}")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- native references (no browser) ------------------------------------------------------------------


def message_bytes(passes: int) -> bytes:
    """The page's message, built the same way (for smtplib and the sink alone)."""
    lines = []
    for i in range(13443):
        head = ("." if i % 3 == 0 else "") + f"line {i} "
        lines.append(head + "x" * (76 - len(head)) + "\r\n")
    text = "".join(lines).encode()
    header = b"From: bench@example.com\r\nTo: sink@example.com\r\nSubject: benchmark\r\n\r\n"
    return header + text * passes


def sink_alone(port: int, message: bytes, runs: int) -> float:
    """MB/s of the SMTP sink fed by a bare socket: pre-stuffed DATA in one sendall."""
    stuffed = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    rates = []
    for _ in range(runs):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"EHLO bench\r\n")
            while reader.readline()[3:4] == b"-":
                pass
            sock.sendall(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
            for _ in range(3):
                reader.readline()
            t0 = time.perf_counter()
            sock.sendall(stuffed)
            assert reader.readline().startswith(b"250")
            rates.append(len(message) / MB / (time.perf_counter() - t0))
            sock.sendall(b"QUIT\r\n")
    return median(rates)


def smtplib_throughput(port: int, message: bytes, runs: int, tls: bool = False) -> float:
    rates = []
    for _ in range(runs):
        if tls:
            server: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=permissive_client_context())
        else:
            server = smtplib.SMTP("127.0.0.1", port)
        with server:
            server.ehlo()
            t0 = time.perf_counter()
            server.sendmail("bench@example.com", ["sink@example.com"], message)
            rates.append(len(message) / MB / (time.perf_counter() - t0))
    return median(rates)


def smtplib_small(port: int, count: int, runs: int) -> float:
    header = message_bytes(0)
    small = header + message_bytes(1)[len(header) :][: 25 * 78]  # the page's small message
    rates = []
    for _ in range(runs):
        with smtplib.SMTP("127.0.0.1", port) as server:
            server.ehlo()
            t0 = time.perf_counter()
            for _ in range(count):
                server.sendmail("bench@example.com", ["sink@example.com"], small)
            rates.append(count / (time.perf_counter() - t0))
    return median(rates)


# -- the benchmark ---------------------------------------------------------------------------------


GROUPS = (
    "native", "cold", "blocking", "raw", "throughput", "tls", "small", "memory", "engines", "revisit",
    "proxy",
)  # fmt: skip
# The groups measured in the one page of the workloads (the others start browsers of their own,
# or none: "proxy" is pysmtp-wasm-proxy beside websockify and lighttpd, bench/proxy_bench.py).
PAGE_GROUPS = {"raw", "throughput", "tls", "small", "memory"}
ENGINES = ("chromium", "firefox", "webkit")


def small_interleaved(
    driver: Any, runs: int, spec: dict[str, Any], floors: bool = False
) -> dict[str, dict[str, float]]:
    """Small messages without changing anything else: pysmtp-wasm in-page, in worker mode and
    emailjs one after the other in each run, and with ``floors`` the floor clients of
    bench/pages/work.js too: ``python_floor`` (the least Python a client could run per message),
    ``python_floor_checked`` (that with the checks a client owes its user, written flat), and
    ``js_floor`` in the page and ``js_floor_worker`` in a Worker (no protocol engine at all, in
    JavaScript: what worker mode's hops cost by themselves). Returns {metric: {who: value}}:
    messages a second, ``reaction_us`` (where the page sees the WebSocket), the medians of the
    per-run ratios ``small_msgs_vs_emailjs`` and ``small_msgs_worker_vs_in_page``, and with
    ``floors`` ``worker_added_us_per_small_msg`` (what worker mode adds to a message, pysmtp-wasm's
    and the JS floor's) beside ``worker_allowance_us_per_small_msg`` (what 0.9× in-page allows)."""
    small = "window.bench.smallMessages(arguments[0])"
    kinds = {
        "pysmtp_wasm": (small, {"client": "pysmtp"}),
        "pysmtp_wasm_worker": (small, {"client": "worker"}),
        "emailjs": (small, {"client": "emailjs"}),
    }
    if floors:
        js_floor = "window.bench.jsFloorSmall(arguments[0])"
        kinds |= {
            "python_floor": (small, {"client": "floor"}),
            "python_floor_checked": (small, {"client": "floor_checked"}),
            "js_floor": (js_floor, {"where": "page"}),
            "js_floor_worker": (js_floor, {"where": "worker"}),
        }
    samples: dict[str, list[dict[str, Any]]] = {who: [] for who in kinds}
    for _ in range(runs):
        for who, (call, extra) in kinds.items():
            samples[who].append(run_js(driver, call, {**spec, **extra}))
    rate = {who: [s["count"] / (s["ms"] / 1000) for s in got] for who, got in samples.items()}
    out: dict[str, dict[str, float]] = {"small_msgs_per_s": {}, "reaction_us": {}}
    for who in kinds:
        out["small_msgs_per_s"][who] = median(rate[who])
        if samples[who][0].get("reactionUs") is not None:
            out["reaction_us"][who] = median([s["reactionUs"] for s in samples[who]])
    theirs = rate["emailjs"]
    out["small_msgs_vs_emailjs"] = {
        who: median([m / t for m, t in zip(rate[who], theirs, strict=True)])
        for who in kinds
        if who != "emailjs" and not who.startswith("js_floor")
    }
    pairs = {"pysmtp_wasm_worker": "pysmtp_wasm", "js_floor_worker": "js_floor"}
    pairs = {worker: page for worker, page in pairs.items() if worker in kinds}
    out["small_msgs_worker_vs_in_page"] = {
        worker: median([w / m for w, m in zip(rate[worker], rate[page], strict=True)])
        for worker, page in pairs.items()
    }
    if floors:
        out["worker_added_us_per_small_msg"] = {
            worker: median([1e6 / w - 1e6 / m for w, m in zip(rate[worker], rate[page], strict=True)])
            for worker, page in pairs.items()
        }
        out["worker_allowance_us_per_small_msg"] = {
            "pysmtp_wasm_worker": median([1e6 / m * (1 / 0.9 - 1) for m in rate["pysmtp_wasm"]])
        }
    return out


def page_cost(driver: Any, runs: int, count: int) -> dict[str, dict[str, float]]:
    """What a small message costs the page itself, with no network (bench/pages/work.js
    ``pageCost``: each client against InstantServer in place of the socket class), pysmtp-wasm
    in-page, emailjs and the floor client (the least Python a client could run per message: work.js
    ``FloorClient``) one after the other in each run; and the sans-IO engine alone in the same
    page's Pyodide (``engineAlone``: bench/profile_engine.py's loop, no facade, no FFI). Returns
    {metric: {who: value}}: ``page_us_per_small_msg`` (with the server's replies a message and one
    hop of its scheduling beside it, in ``instant_server_hop_us``), ``page_cost_vs_emailjs`` (the
    median of the per-run ratios), ``engine_alone_us_per_small_msg``, ``crossing_us``: one
    crossing of the boundary in the shapes a message takes (``crossingCost``), and
    ``worker_round_trip_us``: one round trip to a Worker that answers at once (``workerRoundTrip``;
    worker mode's small message takes two)."""
    kinds = {"pysmtp_wasm": "pysmtp", "emailjs": "emailjs", "python_floor": "floor"}
    samples: dict[str, list[dict[str, Any]]] = {who: [] for who in kinds}
    for _ in range(runs):
        for who, kind in kinds.items():
            samples[who].append(
                run_js(driver, "window.bench.pageCost(arguments[0])", {"client": kind, "count": count})
            )
    for who, got in samples.items():
        if any(s["replies"] != 4 for s in got):
            replies = [s["replies"] for s in got]
            raise RuntimeError(f"page cost: {who} took {replies} replies a message, not 4")
    spec = {"warm": 200, "count": 2000}
    alone = [run_js(driver, "window.bench.engineAlone(arguments[0])", spec) for _ in range(runs)]
    crossings = [
        run_js(driver, "window.bench.crossingCost(arguments[0])", {"count": 20000}) for _ in range(runs)
    ]
    round_trips = [
        run_js(driver, "window.bench.workerRoundTrip(arguments[0])", {"count": 2000}) for _ in range(runs)
    ]
    theirs = [s["us"] for s in samples["emailjs"]]
    return {
        "page_us_per_small_msg": {who: median([s["us"] for s in got]) for who, got in samples.items()},
        "page_cost_vs_emailjs": {
            who: median([s["us"] / t for s, t in zip(samples[who], theirs, strict=True)])
            for who in ("pysmtp_wasm", "python_floor")
        },
        "engine_alone_us_per_small_msg": {"pysmtp_wasm": median(alone)},
        "instant_server_hop_us": {"page": median([s["hopUs"] for got in samples.values() for s in got])},
        "worker_round_trip_us": {"page": median(round_trips)},
        "crossing_us": {
            shape: median([c[key] for c in crossings])
            for shape, key in (
                ("js_to_py_bytes", "receivedUs"),
                ("js_to_py", "callUs"),
                ("py_to_js", "callbackUs"),
            )
        },
    }


def measure_engine(
    engine: str, base: str, urls: dict[str, str], ports: dict[str, int], ca: str, runs: int,
    passes_20: int, passes_100: int, small_count: int, workloads: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The figures that compare engines, measured the same way in ``engine``: first onidle (cold,
    warm), the snapshot cache's first and return visits (measure_revisit), and with
    ``workloads`` (group `engines`) plaintext and TLS throughput, small messages per second,
    memory growth; this project and emailjs-smtp-client side by side.
    Returns {"version": ..., "rows": {metric: {who: x}}}."""
    from urllib.parse import quote

    rows: dict[str, dict[str, float]] = {}

    def put(metric: str, who: str, value: float) -> None:
        rows.setdefault(metric, {})[who] = round(value, 3 if value < 10 else 1)
        log(f"{engine:9s} {metric:28s} {who:22s} {value:10.3f}")

    target = f"proxy={quote(urls['smtp'], safe='')}&port={ports['smtp']}"
    pages = {
        # (wait=1&baseline: the main thread's longest task over 4 s after the first onidle, the
        # cache off: the baseline of snapshot_cache_longest_gap_ms)
        "pysmtp_wasm": f"/bench/pages/cold-pysmtp.html?snapshot=0&cache=0&wait=1&baseline=4000&{target}",
        "emailjs": f"/bench/pages/cold-emailjs.html?{target}",
    }
    starts: dict[str, dict[str, list[float]]] = {who: {"cold": [], "warm": [], "gap": []} for who in pages}
    for _ in range(runs):
        for who, path in pages.items():
            driver = engine_browser(engine)
            try:
                for kind in ("cold", "warm"):
                    driver.get("about:blank")
                    driver.get(base + path)
                    result = wait_result(driver, 300)
                    starts[who][kind].append(result["idle"])
                    if "longestGap" in result:
                        starts[who]["gap"].append(result["longestGap"])
            finally:
                close_browser(driver)
    for who, by in starts.items():
        put("first_onidle_cold_ms", who, median(by["cold"]))
        put("first_onidle_warm_ms", who, median(by["warm"]))
    put("snapshot_cache_longest_gap_ms", "pysmtp_wasm_cache_off", median(starts["pysmtp_wasm"]["gap"]))
    version = measure_revisit(engine, base, target, runs, put)
    # emailjs-smtp-client beside them: its cold and warm figures again under the visits' names
    put("first_visit_onidle_ms", "emailjs", median(starts["emailjs"]["cold"]))
    put("return_visit_onidle_ms", "emailjs", median(starts["emailjs"]["warm"]))
    if not workloads:
        return {"version": version, "rows": rows}

    driver = engine_browser(engine)
    try:
        driver.get(base + "/bench/pages/work.html")
        run_js(driver, "null")
        version = str(driver.capabilities.get("browserVersion", "?"))

        def mbps(samples: list[dict[str, Any]]) -> float:
            return median([s["bytes"] / MB / (s["ms"] / 1000) for s in samples])

        def many(call: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
            return [run_js(driver, call, spec) for _ in range(runs)]

        # Plain throughput, run by run beside the raw path and worker mode (each ratio is the
        # median of the per-run ratios: the raw path alone varies between runs on a shared VM).
        plain = {"proxy": urls["smtp"], "port": ports["smtp"], "passes": passes_20}
        raw_spec = {"via": "websocket", "proxy": urls["raw"], "passes": passes_20}
        # (and the floor clients of work.js: python_floor without dot-stuffing, python_floor_checked
        # with the engine's own DotStuffer: how far a client whose engine is Python can go here)
        kinds = {
            "pysmtp_wasm": "pysmtp", "pysmtp_wasm_worker": "worker", "emailjs": "emailjs",
            "python_floor": "floor", "python_floor_checked": "floor_checked",
        }  # fmt: skip
        rate: dict[str, list[float]] = {"raw": [], **{who: [] for who in kinds}}
        for _ in range(runs):
            s = run_js(driver, "window.bench.raw(arguments[0])", raw_spec)
            rate["raw"].append(s["bytes"] / MB / (s["ms"] / 1000))
            for who, kind in kinds.items():
                s = run_js(driver, "window.bench.throughput(arguments[0])", {**plain, "client": kind})
                rate[who].append(s["bytes"] / MB / (s["ms"] / 1000))
        for who in kinds:
            put("throughput_plain_MBps", who, median(rate[who]))
        for who in ("pysmtp_wasm", "pysmtp_wasm_worker", "python_floor", "python_floor_checked"):
            put(
                "throughput_of_raw_pct",
                who,
                median([100 * m / r for m, r in zip(rate[who], rate["raw"], strict=True)]),
            )
        ratios = [w / p for w, p in zip(rate["pysmtp_wasm_worker"], rate["pysmtp_wasm"], strict=True)]
        put("throughput_worker_vs_in_page", "pysmtp_wasm_worker", median(ratios))
        tls = {
            "pysmtp_wasm_openssl": ("pysmtp", "openssl", "smtp_tls_modern"),
            "pysmtp_wasm_forge": ("pysmtp", "forge", "smtp_tls"),
            "emailjs": ("emailjs", None, "smtp_tls"),
        }
        for who, (kind, tls_engine, port) in tls.items():
            spec = {"client": kind, "engine": tls_engine, "proxy": urls[port], "port": ports[port],
                    "passes": passes_20, "tls": True, "ca": ca}  # fmt: skip
            put("throughput_tls_MBps", who, mbps(many("window.bench.throughput(arguments[0])", spec)))
        small = small_interleaved(
            driver, runs, {"proxy": urls["smtp"], "port": ports["smtp"], "count": small_count}, floors=True
        )
        for metric, values in small.items():
            for who, value in values.items():
                put(metric, who, value)
        for metric, values in page_cost(driver, runs, 2 * small_count).items():
            for who, value in values.items():
                put(metric, who, value)
        for who, kind in (("pysmtp_wasm", "pysmtp"), ("emailjs", "emailjs")):
            spec = {"client": kind, "proxy": urls["smtp"], "port": ports["smtp"], "passes": passes_100,
                    "memory": True}  # fmt: skip
            samples = many("window.bench.throughput(arguments[0])", spec)
            # WebAssembly memory everywhere; the JS heap only where performance.memory exists (Chromium)
            put(
                "wasm_growth_MB", who, median([(s["peak"]["wasm"] - s["base"]["wasm"]) / MB for s in samples])
            )
            if samples[0]["base"]["js"]:
                put(
                    "js_heap_growth_MB",
                    who,
                    median([(s["peak"]["js"] - s["base"]["js"]) / MB for s in samples]),
                )
    finally:
        close_browser(driver)
    return {"version": version, "rows": rows}


def measure_revisit(engine: str, base: str, target: str, runs: int, put: Any) -> str:
    """The snapshot cache (web/src/snapshot-cache.js), in-page and in worker mode, each run in a
    new browser with an empty profile: the first visit to the first onidle (the cache on: the
    image is made after it), the making and storing of the image (the page's wait from starting
    its Worker to the report, the Worker's IndexedDB put, the image's size, and the main thread's
    longest task meanwhile: the lateness of a 5 ms timer chain, and Chromium's Long Tasks), then
    the return visit to the first onidle, booted from it; and, interleaved run by run, the same
    first visit with the cache off (what the cache costs a first visit). Returns the browser's
    version."""
    version = "?"
    got: dict[tuple[str, str], list[float]] = {}

    def add(metric: str, value: float | None) -> None:
        if value is not None:
            got.setdefault((metric, mode), []).append(value)

    for mode, worker in (("pysmtp_wasm", "0"), ("pysmtp_wasm_worker", "1")):
        path = f"/bench/pages/cold-pysmtp.html?snapshot=0&worker={worker}&{target}"

        for _ in range(runs):
            driver = engine_browser(engine)
            try:
                version = str(driver.capabilities.get("browserVersion", "?"))
                driver.get("about:blank")
                driver.get(base + path + "&wait=1")
                first = wait_result(driver, 300)
                job = first.get("job") or {}
                if first.get("bootKind") != "fresh" or not job.get("stored"):
                    raise RuntimeError(f"{engine} {mode}: no image stored: {first}")
                add("first_visit_onidle_ms", first["idle"])
                add("snapshot_cache_make_ms", job["totalMs"])
                add("snapshot_cache_store_ms", job["storeMs"])
                add("snapshot_cache_MB", job["bytes"] / MB)
                add("snapshot_cache_longest_gap_ms", first["longestGap"])
                add("snapshot_cache_longest_task_ms", first.get("longTask"))
                driver.get("about:blank")
                driver.get(base + path)
                back = wait_result(driver, 300)
                if back.get("bootKind") != "snapshot-cache":
                    raise RuntimeError(f"{engine} {mode}: the return visit booted {back.get('bootKind')}")
                add("return_visit_onidle_ms", back["idle"])
            finally:
                close_browser(driver)
            # The same first visit with the cache off, in the next new browser: what the cache
            # costs a first visit, as the median of the per-run ratios (the machine drifts).
            driver = engine_browser(engine)
            try:
                driver.get("about:blank")
                driver.get(base + path + "&cache=0")
                off = wait_result(driver, 300)
                add("first_visit_cache_off_onidle_ms", off["idle"])
                add("first_visit_cache_cost_pct", 100 * (first["idle"] / off["idle"] - 1))
            finally:
                close_browser(driver)
    for (metric, who), values in got.items():
        put(metric, who, median(values))
    return version


def start_path(prefix: str) -> tuple[Path, Any, subprocess.Popen[str], dict[str, int], Websockify]:
    """The path the page's clients go through, started: a temporary folder (``prefix``), a
    self-signed certificate in it, the sink (bench/sink.py, its own process) and websockify.
    Returns (folder, certificate, sink, the sink's ports by name, websockify)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    cert = self_signed(tmp / "certs")
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "sink.py"), str(cert.cert_path), str(cert.key_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        ports = json.loads(sink.stdout.readline())
        (tmp / "websockify").mkdir()
        return tmp, cert, sink, ports, Websockify(tmp / "websockify").start()
    except BaseException:
        sink.terminate()  # (no sink left running when websockify could not start)
        sink.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stop_path(tmp: Path, sink: subprocess.Popen[str], proxy: Websockify) -> None:
    """Undo start_path."""
    proxy.stop()
    sink.terminate()
    sink.wait()
    shutil.rmtree(tmp, ignore_errors=True)


def emailjs_bundle_current() -> bool:
    """The emailjs bundle (bench/build/emailjs-smtp-client.js) bundles our socket too
    (bench/tcp-shim.js), and both clients of the page use that one socket class: a bundle older
    than the socket's sources would run the old socket beside today's Python. Made again here
    when it is (bench/build-emailjs.sh, as ./build.sh bench does)."""
    bundle = ROOT / "bench" / "build" / "emailjs-smtp-client.js"
    if not bundle.exists():
        log(f"{bundle.relative_to(ROOT)} is missing: run ./build.sh bench")
        return False
    sources = [*(ROOT / "web" / "src").rglob("*.js"), *(ROOT / "bench").glob("*.js")]
    newer = [p for p in sources if p.stat().st_mtime > bundle.stat().st_mtime]
    if not newer:
        return True
    log(f"{bundle.relative_to(ROOT)} is older than {newer[0].relative_to(ROOT)}: bundling it again")
    done = subprocess.run(["bash", str(ROOT / "bench" / "build-emailjs.sh")], check=False)
    if done.returncode != 0:
        log("bench/build-emailjs.sh failed: run ./build.sh bench")
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (the median is kept)")
    parser.add_argument("--quick", action="store_true", help="1 run each, smaller messages (a smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to measure, of {', '.join(GROUPS)} (default: all); "
        "a partial run writes bench/results/partial.json",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print Chromium's CPU profile of one small-message run and one "
        "throughput run of each client",
    )
    parser.add_argument(
        "--browsers",
        default=",".join(ENGINES),
        help=f"the engines of the groups 'engines' and 'revisit', of {', '.join(ENGINES)} (default: all)",
    )
    args = parser.parse_args()
    browsers = [engine for engine in args.browsers.split(",") if engine]
    if set(browsers) - set(ENGINES):
        parser.error(f"unknown browser(s): {', '.join(sorted(set(browsers) - set(ENGINES)))}")
    only = set(args.only.split(","))
    if only - set(GROUPS):
        parser.error(f"unknown group(s): {', '.join(sorted(only - set(GROUPS)))}")
    partial = only != set(GROUPS)
    runs = 1 if args.quick else args.runs
    passes_20 = 2 if args.quick else 20  # ~1.05 MB per pass: "20 MB" is 20.97 MB
    passes_100 = 4 if args.quick else 96  # 100.7 MB
    small_count = 20 if args.quick else 200
    started = time.monotonic()

    if only - {"native", "proxy"} and not emailjs_bundle_current():
        return 1
    snapshot_present = (ROOT / "dist" / "pyodide" / "pysmtp-snapshot.bin").exists()
    wheel = sorted((ROOT / "dist").glob("pysmtp_wasm-*.whl"))[-1]

    tmp, cert, sink, ports, proxy = start_path("pysmtp-bench-")
    urls = {name: proxy.url(port) for name, port in ports.items()}
    web, base = start_web()
    results: dict[str, dict[str, float]] = {}
    engine_results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    version = "not started"  # Chromium's, once a group has started it

    def put(metric: str, who: str, value: float) -> None:
        results.setdefault(metric, {})[who] = round(value, 3 if value < 10 else 1)
        log(f"{metric:32s} {who:22s} {value:10.3f}")

    try:
        # -- the sink alone and the native references
        if "native" in only:
            msg20 = message_bytes(passes_20)
            put("sink_alone_MBps", "sink", sink_alone(ports["smtp"], msg20, runs))
            put("smtplib_native_MBps", "smtplib", smtplib_throughput(ports["smtp"], msg20, runs))
            put(
                "smtplib_native_tls_MBps",
                "smtplib",
                smtplib_throughput(ports["smtp_tls"], msg20, runs, tls=True),
            )
            put("small_msgs_per_s", "smtplib", smtplib_small(ports["smtp"], small_count, runs))

        # -- cold start: a fresh browser per run (nothing cached), then a second navigation (warm)
        target = f"proxy={urls['smtp']}&port={ports['smtp']}"
        cold_pages = {
            # (the snapshot cache off: today's cold and warm figures; group revisit measures it)
            "pysmtp_wasm": f"/bench/pages/cold-pysmtp.html?snapshot=0&cache=0&{target}",
            "bare_pyodide": "/bench/pages/cold-bare.html",
            "emailjs": f"/bench/pages/cold-emailjs.html?{target}",
        }
        # The same with the WebSocket (connection, greeting) opened while Python boots.
        cold_pages["pysmtp_wasm_preconnect"] = (
            f"/bench/pages/cold-pysmtp.html?cache=0&snapshot=0&preconnect=1&{target}"
        )
        # Worker mode: Pyodide boots in a Worker; the first onidle is still the page's.
        cold_pages["pysmtp_wasm_worker"] = (
            f"/bench/pages/cold-pysmtp.html?cache=0&snapshot=0&worker=1&{target}"
        )
        if snapshot_present:
            cold_pages["pysmtp_wasm_snapshot"] = f"/bench/pages/cold-pysmtp.html?cache=0&snapshot=1&{target}"
            cold_pages["pysmtp_wasm_snapshot_preconnect"] = (
                f"/bench/pages/cold-pysmtp.html?cache=0&snapshot=1&preconnect=1&{target}"
            )
            cold_pages["pysmtp_wasm_worker_snapshot"] = (
                f"/bench/pages/cold-pysmtp.html?cache=0&snapshot=1&worker=1&{target}"
            )
        from urllib.parse import quote

        cold: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"cold": [], "warm": []} for k in cold_pages}
        if "cold" not in only:
            cold = {}
        for _ in range(runs if cold else 0):
            for who, path in cold_pages.items():
                path = path.replace("proxy=" + urls["smtp"], "proxy=" + quote(urls["smtp"], safe=""))
                driver = new_browser()
                try:
                    driver.get("about:blank")
                    driver.get(base + path)
                    cold[who]["cold"].append(wait_result(driver))
                    driver.get("about:blank")
                    driver.get(base + path)
                    cold[who]["warm"].append(wait_result(driver))
                finally:
                    close_browser(driver)
        for who, by in cold.items():
            for kind, samples in by.items():
                metric = "cold_start_ms" if kind == "cold" else "warm_start_ms"
                if who == "bare_pyodide":
                    put(
                        "bare_pyodide_ms" if kind == "cold" else "bare_pyodide_warm_ms",
                        "bare_pyodide",
                        median([s["idle"] for s in samples]),
                    )
                    continue
                put(metric, who, median([s["idle"] for s in samples]))
                if "loaded" in samples[0]:
                    put(
                        metric.replace("_ms", "_connect_ehlo_ms"),
                        who,
                        median([s["idle"] - s["loaded"] for s in samples]),
                    )
                if samples[0].get("booted") is not None:
                    # Measured in the page: loadPyodide resolved -> first onidle (wheel, imports,
                    # connect, EHLO). Less noisy than the difference of two ~3 s medians.
                    put(
                        metric.replace("_ms", "_after_pyodide_ms"),
                        who,
                        median([s["idle"] - s["booted"] for s in samples]),
                    )
                if who.startswith("pysmtp"):
                    details.setdefault("snapshot_used", {})[who] = [s.get("snapshot") for s in samples]
        for kind, suffix in (("cold", ""), ("warm", "_warm")) if cold else ():
            bare = results["bare_pyodide_ms" if kind == "cold" else "bare_pyodide_warm_ms"]["bare_pyodide"]
            for who in (name for name in cold_pages if name.startswith("pysmtp")):
                metric = "cold_start_ms" if kind == "cold" else "warm_start_ms"
                if who in results.get(metric, {}):
                    put(f"our_share_of_start{suffix}_ms", who, results[metric][who] - bare)

        # -- the page's main thread from navigation to ondone of a 20 MB message: total blocking
        # time (the sum over long tasks of their time beyond 50 ms) and the longest task, from
        # the Long Tasks API; in-page and worker mode, without and with the snapshot. A fresh
        # browser per run: the cold start is where the long tasks are.
        if "blocking" in only:
            from urllib.parse import quote as quoted

            modes = {"pysmtp_wasm": "worker=0&snapshot=0", "pysmtp_wasm_worker": "worker=1&snapshot=0"}
            if snapshot_present:
                modes |= {"pysmtp_wasm_snapshot": "worker=0&snapshot=1",
                          "pysmtp_wasm_worker_snapshot": "worker=1&snapshot=1"}  # fmt: skip
            blocking: dict[str, list[dict[str, Any]]] = {who: [] for who in modes}
            for _ in range(runs):
                for who, mode in modes.items():
                    driver = new_browser()
                    try:
                        driver.get("about:blank")
                        driver.get(
                            f"{base}/bench/pages/blocking.html?{mode}&passes={passes_20}"
                            f"&proxy={quoted(urls['smtp'], safe='')}&port={ports['smtp']}"
                        )
                        blocking[who].append(wait_result(driver, timeout=300))
                    finally:
                        close_browser(driver)
            for who, samples in blocking.items():
                put("main_thread_blocking_ms", who, median([s["tbt"] for s in samples]))
                put("main_thread_longest_task_ms", who, median([s["longest"] for s in samples]))
                put("main_thread_long_tasks", who, median([s["count"] for s in samples]))
                put("navigation_to_ondone_ms", who, median([s["doneAt"] for s in samples]))

        # -- the WebSocket-to-TCP proxies, side by side (no browser: bench/proxy_load.py's clients)
        if "proxy" in only:
            sys.path.insert(0, str(ROOT / "bench"))
            from proxy_bench import run as run_proxy_group

            run_proxy_group(ports["raw"], tmp, args.runs, args.quick, put)

        # -- the workloads: one browser, one page
        driver = new_browser() if only & PAGE_GROUPS else None
        try:
            if driver is not None:
                driver.get(base + "/bench/pages/work.html")
                run_js(driver, "null")
            ca = cert.cert_pem

            def many(call: str, spec: dict[str, Any], n: int = runs) -> list[dict[str, Any]]:
                return [run_js(driver, call, spec) for _ in range(n)]

            def mbps(samples: list[dict[str, Any]]) -> float:
                return median([s["bytes"] / MB / (s["ms"] / 1000) for s in samples])

            # the path's limit
            if "raw" in only:
                put(
                    "raw_limit_MBps",
                    "websocket",
                    mbps(
                        many(
                            "window.bench.raw(arguments[0])",
                            {"via": "websocket", "proxy": urls["raw"], "passes": passes_20},
                        )
                    ),
                )
                put(
                    "raw_limit_MBps",
                    "pysmtp_socket",
                    mbps(
                        many(
                            "window.bench.raw(arguments[0])",
                            {
                                "via": "socket",
                                "proxy": urls["raw"],
                                "port": ports["raw"],
                                "passes": passes_20,
                            },
                        )
                    ),
                )

            # throughput: run by run, the raw path and the clients one after the other, so that
            # each ratio compares figures taken under the same conditions (on this shared VM
            # the raw path alone varies between runs by more than the clients differ)
            if "throughput" in only:
                plain = {"proxy": urls["smtp"], "port": ports["smtp"], "passes": passes_20}
                raw_spec = {"via": "websocket", "proxy": urls["raw"], "passes": passes_20}
                chunking = {
                    "proxy": urls["smtp_chunking"],
                    "port": ports["smtp_chunking"],
                    "passes": passes_20,
                }
                kinds = {
                    "pysmtp_wasm": {**plain, "client": "pysmtp"},
                    "pysmtp_wasm_uint8": {**plain, "client": "pysmtp", "bytes": True},
                    "pysmtp_wasm_worker": {**plain, "client": "worker"},
                    "emailjs": {**plain, "client": "emailjs"},
                    # CHUNKING beside DATA, on the same sink (it offers PIPELINING and CHUNKING):
                    # BDAT chunks are not dot-stuffed, DATA is (disableChunking).
                    "pysmtp_wasm_bdat": {**chunking, "client": "pysmtp"},
                    "pysmtp_wasm_data": {
                        **chunking,
                        "client": "pysmtp",
                        "options": {"disableChunking": True},
                    },
                }
                by: dict[str, list[dict[str, Any]]] = {"raw": [], **{who: [] for who in kinds}}
                for _ in range(runs):
                    by["raw"].append(run_js(driver, "window.bench.raw(arguments[0])", raw_spec))
                    for who, spec in kinds.items():
                        by[who].append(run_js(driver, "window.bench.throughput(arguments[0])", spec))
                rate = {
                    who: [s["bytes"] / MB / (s["ms"] / 1000) for s in samples] for who, samples in by.items()
                }
                put("raw_limit_interleaved_MBps", "websocket", median(rate["raw"]))
                for who in kinds:
                    put("throughput_plain_MBps", who, mbps(by[who]))
                    put("send_us_per_64KiB", who, median([s["sendMs"] * 1000 / s["chunks"] for s in by[who]]))
                    pairs = list(zip(rate[who], rate["raw"], rate["emailjs"], strict=True))
                    put("throughput_of_raw_pct", who, median([100 * mine / raw for mine, raw, _ in pairs]))
                    if who != "emailjs":
                        put(
                            "throughput_vs_emailjs", who, median([mine / theirs for mine, _, theirs in pairs])
                        )
                put(
                    "throughput_worker_vs_in_page",
                    "pysmtp_wasm_worker",
                    median(
                        [w / p for w, p in zip(rate["pysmtp_wasm_worker"], rate["pysmtp_wasm"], strict=True)]
                    ),
                )

            # TLS: OpenSSL (TLS 1.3 against the sink's modern port) beside node-forge and emailjs
            # (TLS 1.0/1.1 against its legacy port, all they speak): throughput, the path's limit
            # through each engine, the handshake, connect() to the first onidle, the module's size
            if "tls" in only:
                engines = {
                    "pysmtp_wasm_openssl": ("pysmtp", "openssl", "smtp_tls_modern", "raw_tls_modern"),
                    "pysmtp_wasm_forge": ("pysmtp", "forge", "smtp_tls", "raw_tls"),
                    "emailjs": ("emailjs", None, "smtp_tls", None),
                }

                def engines_spec(who: str) -> dict[str, Any]:
                    kind, engine, port, _ = engines[who]
                    return {"client": kind, "engine": engine, "proxy": urls[port], "port": ports[port],
                            "passes": passes_20, "tls": True, "ca": ca}  # fmt: skip

                for who, (_, _, _, raw_port) in engines.items():
                    tls = engines_spec(who)
                    put("throughput_tls_MBps", who, mbps(many("window.bench.throughput(arguments[0])", tls)))
                    if raw_port:
                        raw_tls = {**tls, "via": "socket", "proxy": urls[raw_port], "port": ports[raw_port]}
                        put("raw_limit_tls_MBps", who, mbps(many("window.bench.raw(arguments[0])", raw_tls)))
                    setup = run_js(
                        driver,
                        "window.bench.tlsSetup(arguments[0])",
                        {**tls, "count": 3 if args.quick else 21},
                    )
                    # the first of each is a cold start (the engine's module loads): left out
                    if setup["handshakeMs"]:
                        put("tls_handshake_ms", who, median(setup["handshakeMs"][1:] or setup["handshakeMs"]))
                    put("tls_connect_to_idle_ms", who, median(setup["idleMs"][1:] or setup["idleMs"]))
                # a server imposing its own order picks AES-256-GCM, 3x slower than ChaCha20 here
                server_order = {**engines_spec("pysmtp_wasm_openssl"), "proxy": urls["smtp_tls_server_order"],
                                "port": ports["smtp_tls_server_order"]}  # fmt: skip
                put(
                    "throughput_tls_aes256_MBps",
                    "pysmtp_wasm_openssl",
                    mbps(many("window.bench.throughput(arguments[0])", server_order)),
                )
                wasm = ROOT / "dist" / "openssl" / "openssl-tls.wasm"
                put(
                    "openssl_module_gzip_KB",
                    "pysmtp_wasm_openssl",
                    len(gzip.compress(wasm.read_bytes(), 9)) / 1000,
                )

            # small messages: the three clients run by run, and each ratio the median of the
            # per-run ratios (as for throughput: on a shared VM the runs differ more than the clients)
            for suffix, port in (("", "smtp"), ("_pipelined", "smtp_pipe")) if "small" in only else ():
                spec = {"proxy": urls[port], "port": ports[port], "count": small_count}
                for metric, values in small_interleaved(driver, runs, spec).items():
                    for who, value in values.items():
                        put(metric + suffix, who, value)

            if args.profile:
                for client in ("pysmtp", "emailjs"):
                    for port, call, extra in (
                        ("smtp", "window.bench.smallMessages(arguments[0])", {"count": small_count}),
                        ("smtp", "window.bench.throughput(arguments[0])", {"passes": passes_20}),
                    ):
                        spec = {"client": client, "proxy": urls[port], "port": ports[port], **extra}
                        log(f"profile of {client}: {call.split('(')[0]}\n" + cpu_profile(driver, call, spec))

            # memory while streaming ~100 MB
            for client in ("pysmtp_wasm", "emailjs") if "memory" in only else ():
                kind = "emailjs" if client == "emailjs" else "pysmtp"
                spec = {
                    "client": kind,
                    "proxy": urls["smtp"],
                    "port": ports["smtp"],
                    "passes": passes_100,
                    "memory": True,
                }
                samples = many("window.bench.throughput(arguments[0])", spec)
                growth = [
                    ((s["peak"]["js"] - s["base"]["js"]) + (s["peak"]["wasm"] - s["base"]["wasm"])) / MB
                    for s in samples
                ]
                put("peak_memory_MB", client, median(growth))
                put("peak_js_heap_MB", client, median([s["peak"]["js"] / MB for s in samples]))
                put("wasm_memory_MB", client, median([s["peak"]["wasm"] / MB for s in samples]))
                put("throughput_100MB_MBps", client, mbps(samples))
            if driver is not None:
                version = driver.capabilities.get("browserVersion", "?")
        finally:
            if driver is not None:
                close_browser(driver)

        # -- the same figures in each browser engine, side by side
        for engine in browsers if only & {"engines", "revisit"} else ():
            from tests.browsers import missing

            if reason := missing(engine):
                log(f"{engine}: {reason}: not measured")
                continue
            engine_results[engine] = measure_engine(
                engine, base, urls, ports, cert.cert_pem, runs, passes_20, passes_100, small_count,
                workloads="engines" in only,
            )  # fmt: skip
    finally:
        web.shutdown()
        stop_path(tmp, sink, proxy)

    results["wheel_size_KB"] = {"pysmtp_wasm": round(wheel.stat().st_size / 1000, 1)}
    if engine_results:
        results["_engines"] = engine_results  # type: ignore[assignment]
    machine = {
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "nproc": os.cpu_count(),
        "memory": subprocess.run(["free", "-h"], capture_output=True, text=True)
        .stdout.splitlines()[1]
        .split()[1],
        "chromium": version,
        "python": platform.python_version(),
        "os": platform.platform(),
        "runs": runs,
        "quick": args.quick,
        "only": sorted(only) if partial else "all",
        "seconds": round(time.monotonic() - started),
    }
    results["_machine"] = machine  # type: ignore[assignment]
    results["_details"] = details  # type: ignore[assignment]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "partial" if partial else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
    log(f"bench/results/{name}.json written ({machine['seconds']} s)")
    return 0


def markdown(results: dict[str, Any]) -> str:
    columns: list[str] = []
    for metric, row in results.items():
        if not metric.startswith("_"):
            for who in row:
                if who not in columns:
                    columns.append(who)
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for metric, row in results.items():
        if metric.startswith("_"):
            continue
        lines.append(f"| `{metric}` | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    m = results["_machine"]
    engines = results.get("_engines", {})
    if engines:
        # one row per engine and client: Chromium, Firefox, WebKit one under the other
        metrics = list(dict.fromkeys(metric for got in engines.values() for metric in got["rows"]))
        lines += ["", "By browser engine (groups `engines`, `revisit`):", ""]
        lines.append("| engine | client | " + " | ".join(f"`{metric}`" for metric in metrics) + " |")
        lines.append("|---|---|" + "---:|" * len(metrics))
        for engine, got in engines.items():
            for who in dict.fromkeys(who for row in got["rows"].values() for who in row):
                cells = [str(got["rows"].get(metric, {}).get(who, "")) for metric in metrics]
                lines.append(f"| {engine} {got['version']} | {who} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['memory']} RAM, Chromium {m['chromium']}, "
        f"Python {m['python']}, {m['os']}; median of {m['runs']} runs; {m['seconds']} s in all."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
