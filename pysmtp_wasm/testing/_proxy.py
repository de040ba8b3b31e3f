"""The WebSocket-to-TCP proxies a page talks through: pysmtp-wasm's own (``pysmtp-wasm-proxy``,
:class:`PysmtpProxy`) and websockify in token mode (:class:`Websockify`), with one interface:
``add()``/``url_for()`` give a page its ``proxy`` URL for a server, ``stop()`` ends it all."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._net import free_port, wait_for_port

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the folder that holds pysmtp_wasm/


class PysmtpProxy:
    """``pysmtp-wasm-proxy`` (``python -m pysmtp_wasm.proxy``, the package this module belongs
    to) on 127.0.0.1, reaching only the targets in its targets file (``targets.cfg`` in
    ``directory``); its JSON log goes to ``proxy.log`` there. ``add()`` writes a new target and
    has the proxy re-read the file (SIGHUP), as a deployment would.

    Args:
        directory: where the targets file and the log go.
        port: where it listens (a free port by default).
        tokens: the first targets, ``{token: (host, port)}``.
        origins: ``--allow-origin`` for each; none by default: pages from loopback origins only
            (``http://127.0.0.1:<any port>``, ``http://localhost:...``), the proxy's own rule.
        max_sessions_per_ip: 0 (no limit) by default: a test's pages all come from 127.0.0.1.
        drain: ``--drain`` (seconds): how long ``stop()`` lets open sessions go on.
        flags: more command-line flags (``["--idle-timeout", "5"]``, ``["--ticket-key", path]``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tokens: dict[str, tuple[str, int]] | None = None,
        origins: Iterable[str] | None = None,
        max_sessions_per_ip: int = 0,
        drain: float = 2.0,
        flags: Iterable[str] = (),
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tokens = directory / "targets.cfg"
        self.targets: dict[str, tuple[str, int]] = dict(tokens or {})
        self._write_targets()
        self.log_path = directory / "proxy.log"
        self.origins = list(origins or [])
        self.flags = [
            "--listen", f"127.0.0.1:{self.port}", "--targets", str(self.tokens),
            "--max-sessions-per-ip", str(max_sessions_per_ip), "--drain", f"{drain:g}",
            *(flag for origin in self.origins for flag in ("--allow-origin", origin)), *map(str, flags),
        ]  # fmt: skip
        self.drain = drain
        self.process: subprocess.Popen[bytes] | None = None

    def _write_targets(self) -> None:
        text = "".join(f"{t}: {f'[{h}]' if ':' in h else h}:{p}\n" for t, (h, p) in self.targets.items())
        partial = self.tokens.with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(self.tokens)  # the proxy never reads half a file

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "pysmtp_wasm.proxy", *self.flags]

    def start(self, timeout: float = 15) -> PysmtpProxy:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )  # fmt: skip
        try:
            wait_for_port(self.port, timeout, self.process)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"pysmtp-wasm-proxy on port {self.port}: {error}\n{self.log_tail()}") from None
        return self

    # -- targets ----------------------------------------------------------------------------------

    def add(self, port: int, host: str = "127.0.0.1", token: str | None = None) -> str:
        """Let it reach ``host:port`` (under ``token``, a random one by default); returns the
        WebSocket URL to give a page as its ``proxy``. It works once this returns: the proxy
        has re-read its targets file."""
        token = token or secrets.token_urlsafe(12)
        if self.targets.get(token) != (host, port):
            self.targets[token] = (host, port)
            self._write_targets()
            self.reload()
        return self.url_of(token)

    def reload(self, timeout: float = 10) -> None:
        """SIGHUP, then wait for the proxy's word that it re-read the file."""
        if not self.running:
            return
        before = len(self.events("reloaded")) + len(self.events("reload_failed"))
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while len(self.events("reloaded")) + len(self.events("reload_failed")) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pysmtp-wasm-proxy did not reload in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)

    def url_of(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/?token={token}"

    def url(self, target_port: int) -> str:
        """Add 127.0.0.1:``target_port`` under the token ``t<port>`` and return its URL."""
        return self.add(target_port, token=f"t{target_port}")

    def url_for(self, server: Any) -> str:
        """The URL for a server with ``hostname`` and ``port`` (an :class:`SmtpServer`)."""
        return self.add(server.port, server.hostname)

    # -- what it says -------------------------------------------------------------------------------

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log lines (``event`` ones only, when given), oldest first."""
        lines = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and (event is None or parsed.get("event") == event):
                lines.append(parsed)
        return lines

    def sessions(self) -> list[dict[str, Any]]:
        """One line per session (refused ones too): client, token, target, bytes, end, ..."""
        return self.events("session")

    def get(self, path: str) -> tuple[int, str]:
        """``GET path`` on the proxy's port (``/healthz``, ``/metrics``): status and body."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- the process ----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM (it drains: open sessions get ``drain`` seconds), then SIGKILL to the group."""
        process = self.process
        if process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            process.wait(self.drain + 10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # workers too, if any was left
        process.wait()

    def kill(self) -> None:
        """Die at once, as a crashed proxy does: every connection through it drops."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> PysmtpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
