"""What the real mail servers of tests/mta/ share: the base of a server run as a process group
from a private folder, Maildirs, trace headers, and where the unpacked packages are."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from ..servers import wait_for_port

# Mail is stored as this user: it exists on every Debian system, and no test server runs as root.
MAIL_USER = "nobody"

# How long a server may take to start, and a message to reach a mailbox (Postfix's queue
# manager delivers within a second here; generous for a loaded CI machine).
START_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 30.0

# Postfix's default message_size_limit is 10,240,000; the matrix sends 20 MB messages.
POSTFIX_SIZE_LIMIT = 30 * 1024 * 1024


def missing(*programs: str) -> str | None:
    """The reason a server cannot be had (a program not installed), or None."""
    absent = [p for p in programs if not Path(p).exists() and shutil.which(p) is None]
    return f"not installed: {', '.join(absent)} (./build.sh test installs them)" if absent else None


def skip_unless_installed(server: type[_Daemon]) -> None:
    """Skip the test, saying why, when ``server`` cannot be had at all (under CI=true: fail)."""
    reason = server.require()
    if reason:
        from ..servers import skip_missing

        skip_missing(f"{server.NAME}: {reason}")


def _private_dir(prefix: str) -> Path:
    # Not under pytest's tmp_path: that is mode 0700, and the servers' own users (postfix,
    # dovecot, nobody) must reach their files. Postfix also wants its queue's parents root-owned.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for parent, dirs, files in os.walk(path):
        os.chown(parent, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


def read_maildir(folder: Path) -> list[bytes]:
    """The messages in a Maildir (``new`` and ``cur``), oldest first."""
    paths = [p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
    return [p.read_bytes() for p in sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))]


def wait_for_messages(folder: Path, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[bytes]:
    """Poll a Maildir until it holds at least ``count`` messages; fail with what it holds."""
    deadline = time.monotonic() + timeout
    while True:
        messages = read_maildir(folder)
        if len(messages) >= count or time.monotonic() > deadline:
            if len(messages) < count:
                raise AssertionError(f"{folder}: {len(messages)} messages after {timeout} s, wanted {count}")
            return messages
        time.sleep(0.05)


def strip_trace(message: bytes) -> bytes:
    """The message without the headers a server prepends on delivery (Return-Path, Delivered-To,
    Received, X-Original-To), which come before the client's first header."""
    prepended = (b"return-path:", b"delivered-to:", b"received:", b"x-original-to:")
    lines = message.split(b"\n")
    at = 0
    while at < len(lines):
        line = lines[at]
        if line[:1] in (b" ", b"\t") and at > 0:  # a folded continuation of a prepended header
            at += 1
            continue
        if line.lower().startswith(prepended):
            at += 1
            continue
        break
    return b"\n".join(lines[at:])


class _Daemon:
    """A server run from a private folder (``root``) as a process group of its own: ``start()``
    makes the folder and starts it, ``stop()`` kills the group and removes the folder."""

    NAME = "server"

    def __init__(self) -> None:
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def require() -> str | None:
        """Why it cannot be had here (a program not installed), or None."""
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def log_text(self) -> str:
        raise NotImplementedError

    def _started(self, wait: Callable[[], None], stderr: Path | None = None) -> Self:
        """Wait until it serves; if it does not, stop it and say why, with its logs."""
        try:
            wait()
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log = self.log_text() + (stderr.read_text(errors="replace") if stderr and stderr.exists() else "")
            self.stop()
            raise RuntimeError(f"{self.NAME} did not start: {error}\n{log}") from None
        return self

    def _wait_for_ports(self, ports: Iterable[int]) -> None:
        for port in ports:
            wait_for_port(port, START_TIMEOUT, self._process)

    def stop(self) -> None:
        """Stop it and all its children; remove its folder."""
        if self._process is not None:
            _stop_group(self._process.pid, self._process)
            self._process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mta_root() -> Path:
    """Where tests/provision.sh unpacked Exim and OpenSMTPD from their .deb: ``PYSMTP_MTA_ROOT``,
    else ``root`` in its cache (``PYSMTP_MTA_CACHE``, by default ~/.cache/pysmtp-wasm/mta)."""
    cache = os.environ.get("PYSMTP_MTA_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pysmtp-wasm" / "mta"
    )
    return Path(os.environ.get("PYSMTP_MTA_ROOT") or Path(cache) / "root")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is dead for this purpose.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_group(pgid: int, process: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """SIGTERM to the process group ``pgid`` (a daemon and the children it forked), then SIGKILL
    to whatever is left after ``grace`` seconds; reap ``process`` if it is our child."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        if not _group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process is not None:
        process.wait(10)
