"""Ports on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    timeout: float = 10,
    process: subprocess.Popen[bytes] | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Wait until something listens on ``host:port``; fail at once if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), 0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"it exited with status {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing is listening on port {port} after {timeout} s") from None
            time.sleep(0.05)
