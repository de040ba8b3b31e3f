"""Real parts for the proxy's tests: TCP targets that count what reaches them, a WebSocket client
that is not a browser (or says it is, with an ``Origin``), and the proxy process's memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


class Target:
    """A real listening TCP socket on 127.0.0.1 that counts the connections it accepts, and then
    does ``mode`` with each: ``echo`` (sends back what it reads), ``greet`` (says ``greeting``,
    then echoes), ``silent`` (reads nothing, sends nothing: a server that does not read),
    ``flood`` (sends ``flood`` bytes as fast as the socket takes them, reads nothing)."""

    def __init__(self, mode: str = "echo", greeting: bytes = b"220 target ready\r\n", flood: int = 0) -> None:
        self.mode = mode
        self.greeting = greeting
        self.flood = flood
        self.accepts = 0
        self.flooded = 0  # bytes the flood got into the kernel so far
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Target:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.mode == "silent":
                self._stop.wait()
                return
            if self.mode == "flood":
                chunk = b"x" * 65536
                while self.flooded < self.flood and not self._stop.is_set():
                    self.flooded += conn.send(chunk[: self.flood - self.flooded])
                self._stop.wait()
                return
            if self.mode == "greet":
                conn.sendall(self.greeting)
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.close()

    def close_all(self) -> None:
        """Drop every connection (as a server that goes away does)."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()


def ws(port: int, query: str = "token=t", origin: str | None = None, **options: Any) -> ClientConnection:
    """A WebSocket client to the proxy on ``port``; with ``origin``, it says it is a browser."""
    options.setdefault("subprotocols", ["binary"])
    options.setdefault("open_timeout", 10)
    options.setdefault("max_size", None)
    conn = connect(f"ws://127.0.0.1:{port}/?{query}", origin=origin, compression=None, **options)  # type: ignore[arg-type]
    # Entered here (a test closes it itself, or uses it in a with block): not websockets' legacy use.
    return conn.__enter__()


def refused_over_http(port: int, query: str, **options: Any) -> tuple[int, str]:
    """A client that is not a browser (no Origin): the HTTP status and body of the refusal."""
    try:
        ws(port, query, **options).close()
    except InvalidStatus as error:
        return error.response.status_code, error.response.body.decode()
    raise AssertionError("the proxy accepted the WebSocket")


def refused_over_websocket(port: int, query: str, origin: str, **options: Any) -> tuple[int, str]:
    """A browser (an Origin): the WebSocket is accepted, then closed at once with a code."""
    with ws(port, query, origin=origin, **options) as conn:
        assert conn.subprotocol == "binary"
        try:
            conn.recv(timeout=10)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("the proxy sent data on a refused session")


def closed_with(conn: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """Wait for the proxy to close ``conn``: its close code and reason (data is skipped)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            conn.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        if closed.rcvd is None:
            return 1006, ""
        return closed.rcvd.code, closed.rcvd.reason
    except TimeoutError:
        pass
    raise AssertionError(f"still open after {timeout} s")


def rss_kb(pid: int) -> int:
    """The resident memory of ``pid`` and its children, in KiB (from /proc)."""
    total = 0
    for status in [Path(f"/proc/{pid}/status"), *children_status(pid)]:
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children_status(pid: int) -> list[Path]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(stat.parent / "status")
    return found


HAPROXY_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "haproxy.cfg"


class HAProxy:
    """Debian's HAProxy with ``docs/haproxy.cfg`` (the configuration the docs give), in front of
    the proxies on ``backends`` (two ports, its ``proxy1`` and ``proxy2``); pages connect to
    ``port``. It runs in the foreground (``-db``) in a process group of its own."""

    def __init__(self, directory: Path, backends: tuple[int, int]) -> None:
        from .servers import free_port

        self.port = free_port()
        self.stats_socket = directory / "haproxy.sock"
        self.log_path = directory / "haproxy.log"
        self.env = {
            **os.environ,
            "HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_SOCKET": str(self.stats_socket),
            "PROXY1": f"127.0.0.1:{backends[0]}",
            "PROXY2": f"127.0.0.1:{backends[1]}",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)

    def __enter__(self) -> HAProxy:
        from .servers import wait_for_port

        binary = self.binary()
        assert binary is not None, "haproxy is not installed (./build.sh test installs it)"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(HAPROXY_CONFIG)], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, 15, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def states(self) -> dict[str, str]:
        """``{server: status}`` of the backend (UP, DOWN, ...), from the admin socket's ``show stat``."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "pysmtp_wasm_proxies"
                and row["svname"] in ("proxy1", "proxy2")}  # fmt: skip

    def wait_until(self, states: dict[str, str], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        now: dict[str, str] | str = "nothing yet"
        while True:
            try:
                if (now := self.states()) == states:
                    return
            except OSError as error:  # its admin socket comes a moment after its port
                now = str(error)
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy says {now}, not {states}")
            time.sleep(0.1)
