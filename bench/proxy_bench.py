"""The bench group ``proxy``: pysmtp-wasm-proxy beside websockify 0.13 and lighttpd's mod_wstunnel
(Debian's lighttpd 1.4.69, the event-driven C reference), in one run, with the same load client
(bench/proxy_load.py: plain ``websockets`` clients in several processes, no code of the proxy)
against the same target (bench/sink.py's raw sink).

Rows (bench/README.md, "The proxy"):
- ``proxy_idle_{100,1000,10000}_MB``: PSS of the proxy's whole process tree holding that many
  idle sessions (a fresh proxy each);
- ``proxy_one_session_MBps``: one session sending 200 MB;
- ``proxy_100_sessions_MBps``: 100 sessions at once, 10 MB each (1 GB in all);
- ``proxy_1000_senders_s`` and ``_errors``: 1,000 sessions at once, opened and 1 MB each;
- ``proxy_added_rtt_us``: a 64-byte round trip through the proxy, minus the same straight to
  the sink (the median of 2,000);
- ``proxy_cpu_s_per_GB``: CPU seconds of the proxy's tree per GB moved, over the 100-session run.

pysmtp-wasm-proxy runs with ``--workers 2`` (this machine has 2 cores, and 10,000 sessions need
two processes under the cap of 20,000 open files a process), and with one worker as a second
column for the rows one process can hold; lighttpd with ``server.max-worker = 2`` for the same
reason; websockify as it is (a process per session), skipped where it cannot finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOAD = ROOT / "bench" / "proxy_load.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Sessions one load process holds at most (one file each; the cap is 20,000 a process).
PER_CLIENT = 2500
# websockify forks a process per session: beyond this it is not run (nor waited for longer).
WEBSOCKIFY_MAX_IDLE = 1000
WEBSOCKIFY_SENDERS_LIMIT_S = 150

KINDS = ("pysmtp_wasm_proxy", "pysmtp_wasm_proxy_1w", "websockify", "lighttpd")


def log(*args: Any) -> None:
    print("==>", *args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


# -- the process tree ----------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def pss_mb(pid: int) -> float:
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU of the tree, and of the children it has reaped (websockify's)."""
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


# -- the proxies -----------------------------------------------------------------------------------


@dataclass
class Proxy:
    kind: str
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def proxy(kind: str, target: int, tmp: Path) -> Iterator[Proxy]:
    port = free_port()
    work = tmp / f"{kind}-{port}"
    work.mkdir()
    log_file = (work / "log").open("wb")
    if kind.startswith("pysmtp_wasm_proxy"):
        (work / "targets.cfg").write_text(f"sink: 127.0.0.1:{target}\n")
        workers = "1" if kind.endswith("_1w") else "2"
        command = [sys.executable, "-m", "pysmtp_wasm.proxy", "--listen", f"127.0.0.1:{port}",
                   "--targets", str(work / "targets.cfg"), "--workers", workers, "--max-sessions", "20000",
                   "--max-sessions-per-ip", "0", "--drain", "0"]  # fmt: skip
        url = f"ws://127.0.0.1:{port}/?token=sink"
    elif kind == "websockify":
        command = [sys.executable, "-m", "websockify", f"127.0.0.1:{port}", f"127.0.0.1:{target}"]
        url = f"ws://127.0.0.1:{port}/"
    else:
        (work / "lighttpd.conf").write_text(LIGHTTPD.format(port=port, target=target, root=work))
        command = [shutil.which("lighttpd") or "/usr/sbin/lighttpd", "-D", "-f", str(work / "lighttpd.conf")]
        url = f"ws://127.0.0.1:{port}/"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env=env)  # fmt: skip
    running = Proxy(kind, process, url)
    try:
        wait_port(port, process)
        time.sleep(0.5)  # every worker up
        yield running
    finally:
        running.stop()
        log_file.close()


# mod_wstunnel in front of the sink: binary frames, no idle limit of its own for the idle rows.
LIGHTTPD = """
server.modules = ("mod_wstunnel")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.max-worker = 2
server.max-fds = 20000
server.max-connections = 10000
server.max-read-idle = 3600
server.max-write-idle = 3600
server.errorlog = "{root}/error.log"
wstunnel.server = ( "" => (( "host" => "127.0.0.1", "port" => {target} )) )
wstunnel.frame-type = "binary"
"""


# -- the load --------------------------------------------------------------------------------------


def clients(
    mode: str, url: str, total: int, *extra: str, per: int = PER_CLIENT
) -> list[subprocess.Popen[str]]:
    counts = [per] * (total // per) + ([total % per] if total % per else [])
    return [
        subprocess.Popen(
            [sys.executable, str(LOAD), mode, url, str(count), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for count in counts
    ]


def read(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"a load client exited ({process.wait()})")
    return dict(json.loads(line))


def finish(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
    answers = [read(process) for process in processes]
    for process in processes:
        process.wait(60)
    return answers


def kill(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def idle_mb(running: Proxy, count: int) -> tuple[float, int]:
    """PSS of the proxy's tree with ``count`` idle sessions open, and how many failed to open."""
    load = clients("idle", running.url, count)
    try:
        errors = sum(read(process)["errors"] for process in load)
        time.sleep(2)
        return pss_mb(running.process.pid), errors
    finally:
        finish(load)


def senders(running: Proxy, count: int, size: int, per: int, limit: float) -> dict[str, float]:
    """``count`` sessions at once sending ``size`` bytes each: MB/s, seconds, errors, CPU."""
    load = clients("send", running.url, count, str(size), per=per)
    for process in load:
        read(process)  # ready
    cpu0 = cpu_s(running.process.pid)
    t0 = time.time()
    for process in load:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    answers = []
    try:
        for process in load:
            assert process.stdout is not None
            remaining = limit - (time.time() - t0)
            if remaining <= 0:
                raise TimeoutError
            process.wait(remaining)
            answers.append(json.loads(process.stdout.readline()))
    except (TimeoutError, subprocess.TimeoutExpired):
        cpu = cpu_s(running.process.pid) - cpu0
        kill(load)
        done = sum(answer["ok"] for answer in answers)
        return {"seconds": float("inf"), "errors": count - done, "MBps": 0.0, "cpu": cpu, "bytes": 0}
    cpu = cpu_s(running.process.pid) - cpu0
    moved = sum(answer["bytes"] for answer in answers)
    seconds = max(a["ended"] for a in answers) - min(a["started"] for a in answers)
    errors = sum(answer["errors"] for answer in answers)
    return {"seconds": seconds, "errors": errors, "MBps": moved / 1e6 / seconds, "cpu": cpu, "bytes": moved}


def rtt_us(running: Proxy, sink_port: int) -> float:
    [process] = clients("rtt", running.url, 2000, str(sink_port))
    answer = read(process)
    process.wait(60)
    return float(answer["proxied_us"] - answer["direct_us"])


# -- the group -------------------------------------------------------------------------------------


def run(raw_port: int, tmp: Path, runs: int, quick: bool, put: Callable[[str, str, float], None]) -> None:
    """Measure every row for every proxy; ``put(metric, who, value)`` records each figure."""
    runs = 1 if quick else min(runs, 3)
    sizes = (100, 1000) if quick else (100, 1000, 10000)
    for kind in KINDS:
        if kind == "lighttpd" and not shutil.which("lighttpd") and not Path("/usr/sbin/lighttpd").exists():
            log("lighttpd is not installed (./build.sh bench installs it): not measured")
            continue
        for count in sizes:
            if kind == "websockify" and count > WEBSOCKIFY_MAX_IDLE:
                log(f"websockify: {count} idle sessions would be {count} processes: not run")
                continue
            if kind.endswith("_1w") and count > 5000:
                continue  # one process cannot hold 10,000 sessions (two files each) under the cap
            with proxy(kind, raw_port, tmp) as running:
                megabytes, errors = idle_mb(running, count)
            put(f"proxy_idle_{count}_MB", kind, megabytes)
            if errors:
                put(f"proxy_idle_{count}_errors", kind, errors)
        with proxy(kind, raw_port, tmp) as running:
            one = [senders(running, 1, 20_000_000 if quick else 200_000_000, 1, 300) for _ in range(runs)]
            put("proxy_one_session_MBps", kind, sorted(r["MBps"] for r in one)[len(one) // 2])
            many = [senders(running, 100, 1_000_000 if quick else 10_000_000, 50, 300) for _ in range(runs)]
            put("proxy_100_sessions_MBps", kind, sorted(r["MBps"] for r in many)[len(many) // 2])
            cpu = sorted(r["cpu"] / (r["bytes"] / 1e9) for r in many if r["bytes"])
            if cpu:
                put("proxy_cpu_s_per_GB", kind, cpu[len(cpu) // 2])
            put("proxy_added_rtt_us", kind, rtt_us(running, raw_port))
        with proxy(kind, raw_port, tmp) as running:
            limit = WEBSOCKIFY_SENDERS_LIMIT_S if kind == "websockify" else 600
            count = 200 if quick else 1000
            got = senders(running, count, 1_000_000, 250, limit)
            put("proxy_1000_senders_s", kind, got["seconds"] if got["seconds"] != float("inf") else -1)
            put("proxy_1000_senders_errors", kind, got["errors"])
            if got["seconds"] == float("inf"):
                log(f"{kind}: the {count} senders did not finish in {limit} s (shown as -1)")
