"""websockify, the WebSocket-to-TCP proxy a page talks through, in token mode."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._net import free_port, wait_for_port


class Websockify:
    """websockify on 127.0.0.1 in token mode: it reaches only the targets in its token file
    (``tokens.cfg`` in ``directory``), never a host a page names. It runs in its own process
    group (it forks a child per connection), and ``stop()`` ends the whole group.

    Args:
        directory: where the token file and ``websockify.log`` go.
        port: where it listens (a free port by default).
        tokens: the first targets, ``{token: (host, port)}``; ``add()`` adds more while it runs.
        origins: accept WebSockets only from these page origins (``http://127.0.0.1:8000``);
            every origin by default.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tokens: dict[str, tuple[str, int]] | None = None,
        origins: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tokens = directory / "tokens.cfg"
        self.tokens.write_text("".join(f"{t}: {h}:{p}\n" for t, (h, p) in (tokens or {}).items()))
        self.log_path = directory / "websockify.log"
        self.origins = origins
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> Websockify:
        command = [sys.executable, "-m", "websockify", "--token-plugin", "TokenFile",
                   "--token-source", str(self.tokens)]  # fmt: skip
        if self.origins is not None:
            command += ["--auth-plugin", "ExpectOrigin", "--auth-source", " ".join(self.origins)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_port(self.port, timeout, self.process)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"websockify on port {self.port}: {error}\n{self.log_tail()}") from None
        return self

    def add(self, port: int, host: str = "127.0.0.1", token: str | None = None) -> str:
        """Let it reach ``host:port`` (under ``token``, a random one by default); returns the
        WebSocket URL to give a page as its ``proxy``. It works at once: websockify reads the
        token file on each connection."""
        token = token or secrets.token_urlsafe(12)
        with self.tokens.open("a") as tokens:
            tokens.write(f"{token}: {host}:{port}\n")
        return self.url_of(token)

    def url_of(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/?token={token}"

    def url(self, target_port: int) -> str:
        """Add 127.0.0.1:``target_port`` under the token ``t<port>`` and return its URL."""
        return self.add(target_port, token=f"t{target_port}")

    def url_for(self, server: Any) -> str:
        """The URL for a server with ``hostname`` and ``port`` (an :class:`SmtpServer`)."""
        return self.add(server.port, server.hostname)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the whole group (the server and its per-connection children), then SIGKILL."""
        process = self.process
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; a child may still linger a moment: make sure of it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            break

    def kill(self) -> None:
        """Die at once, as a crashed proxy does: every connection through it drops."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Websockify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
