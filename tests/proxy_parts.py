"""Real parts for the proxy's tests: TCP targets that count what reaches them, a WebSocket client
that is not a browser (or says it is, with an ``Origin``), and the proxy process's memory."""

from __future__ import annotations

import contextlib
import socket
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
