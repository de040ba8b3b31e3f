"""Real mail servers from Debian's packages, for the interop tests: Postfix and Dovecot (SASL for
Postfix, and its LMTP server), each run on free 127.0.0.1 ports from its own configuration in a
private folder, and stopped afterwards with nothing left running.

The machine's own mail system is left alone: the packages are installed by ``./build.sh test``
(Postfix with debconf's "No configuration", so Debian's own instance has no main.cf and never
starts); every server here runs from a folder of its own (``postfix -c DIR``, ``dovecot -c FILE``),
its queue, mailboxes and log inside that folder, and the folder is removed when it stops.

Use::

    chain = make_chain(tmp / "certs")            # tests/servers.py
    leaf = chain.issue("localhost")              # cert_path: leaf + intermediate; key_path
    with Dovecot(users={"alice": "pw"}) as dovecot, Postfix(leaf, dovecot=dovecot) as postfix:
        ... connect to postfix.ports["submission"] (STARTTLS required, then AUTH PLAIN/LOGIN),
        ... postfix.ports["smtps"] (implicit TLS, AUTH) or postfix.ports["smtp"] (STARTTLS offered)
        postfix.mailbox("alice")                 # the messages delivered to alice, as bytes
        postfix.tls_versions()                   # ["TLSv1.3", ...] from Postfix's own log

A test that needs one skips (``require()``) only where its programs are not installed at all.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .servers import Certificate, free_port, wait_for_port

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


# -- Dovecot ---------------------------------------------------------------------------------------


class Dovecot:
    """Dovecot with its own configuration: an LMTP server on ``lmtp_port`` delivering to Maildirs,
    and SASL (PLAIN, LOGIN) for Postfix on the socket ``auth_socket``.

    ``users`` maps user -> password (every user's mailbox is ``mailbox(user)``); ``quota`` maps
    user -> a storage limit such as "1K", so a delivery to them fails after DATA (LMTP's
    per-recipient reply) once the mailbox is over it.
    """

    DOVECOT = "/usr/sbin/dovecot"
    LMTP = "/usr/lib/dovecot/lmtp"

    def __init__(self, users: dict[str, str], quota: dict[str, str] | None = None) -> None:
        self.users = users
        self.quota = quota or {}
        self.root: Path | None = None
        self.lmtp_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def require() -> str | None:
        return missing(Dovecot.DOVECOT, Dovecot.LMTP)

    @property
    def auth_socket(self) -> Path:
        assert self.root is not None
        return self.root / "run" / "auth-postfix"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "dovecot.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def maildir(self, user: str) -> Path:
        assert self.root is not None
        return self.root / "mail" / user / "Maildir"

    def mailbox(self, user: str) -> list[bytes]:
        """What was delivered to ``user``'s INBOX, oldest first (empty when nothing was)."""
        return read_maildir(self.maildir(user))

    def wait_for(self, user: str, count: int) -> list[bytes]:
        return wait_for_messages(self.maildir(user), count)

    def start(self) -> Dovecot:
        root = self.root = _private_dir("pysmtp-dovecot-")
        uid, gid = _mail_ids()
        self.lmtp_port = free_port()
        (root / "mail").mkdir()
        lines = []
        for user, password in self.users.items():
            extra = f"userdb_quota_rule=*:storage={self.quota[user]}" if user in self.quota else ""
            lines.append(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{root}/mail/{user}::{extra}")
            (root / "mail" / user).mkdir()
        (root / "users").write_text("\n".join(lines) + "\n")
        (root / "users").chmod(0o644)
        _chown_tree(root / "mail", uid, gid)
        (root / "dovecot.conf").write_text(
            f"""\
# pysmtp-wasm test instance: loopback only, its files in {root}
protocols = lmtp
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {min(uid, 500)}
mail_location = maildir:~/Maildir
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        )
        self._process = subprocess.Popen(
            [self.DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=(root / "stderr.log").open("wb"), start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_port(self.lmtp_port, START_TIMEOUT, self._process)
            deadline = time.monotonic() + START_TIMEOUT
            while not self.auth_socket.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("Dovecot made no auth socket")
                time.sleep(0.05)
        except RuntimeError as error:
            log = self.log_text() + (root / "stderr.log").read_text(errors="replace")
            self.stop()
            raise RuntimeError(f"Dovecot did not start: {error}\n{log}") from None
        return self

    def stop(self) -> None:
        """Stop Dovecot and all its children; remove its folder."""
        if self._process is not None:
            _stop_group(self._process.pid, self._process)
            self._process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Postfix ---------------------------------------------------------------------------------------

_TLS_ESTABLISHED = re.compile(r"TLS connection established from \S+: (TLSv[\d.]+|SSLv3) with cipher (\S+)")


class Postfix:
    """Postfix 3 with its own ``config_directory``, queue, mailboxes and log (``postfix -c DIR``).

    Its services, all on 127.0.0.1, in ``ports``:

    - ``smtp``: port-25 style; STARTTLS offered, not required; no AUTH; mail for ``domain``
      only (other recipients are refused "Relay access denied").
    - ``submission``: STARTTLS required before MAIL; AUTH PLAIN and LOGIN (through Dovecot's
      SASL when ``dovecot`` is given) after STARTTLS only; authenticated clients may relay.
    - ``smtps``: implicit TLS (``smtpd_tls_wrappermode``) with AUTH as on ``submission``.

    ``cert`` is the TLS certificate: ``cert_path`` a PEM file holding the leaf then its
    intermediates, ``key_path`` its key (``make_chain(...).issue()`` in tests/servers.py makes
    one). Mail to ``user@domain`` for each Dovecot user (or each name in ``mailboxes``) is
    delivered to a Maildir that ``mailbox(user)`` reads back; mail to any other local part of
    ``domain`` is refused "User unknown". ``main`` adds or overrides main.cf parameters (e.g.
    ``{"smtpd_tls_protocols": ">=TLSv1.3"}``).

    ``log_text()`` is Postfix's own log (``maillog_file``, written by postlogd);
    ``tls_versions()`` lists the TLS version of every TLS session smtpd logged, in order.
    """

    POSTFIX = "/usr/sbin/postfix"
    POSTLOGD = "/usr/lib/postfix/sbin/postlogd"

    def __init__(
        self,
        cert: Certificate | None = None,
        *,
        dovecot: Dovecot | None = None,
        mailboxes: tuple[str, ...] = (),
        domain: str = "example.test",
        main: dict[str, str] | None = None,
    ) -> None:
        self.cert = cert
        self.dovecot = dovecot
        self.domain = domain
        self.users = list(dovecot.users) if dovecot else []
        self.users += [name for name in mailboxes if name not in self.users]
        self.main = main or {}
        self.root: Path | None = None
        self.ports: dict[str, int] = {}

    @staticmethod
    def require() -> str | None:
        return missing(Postfix.POSTFIX, Postfix.POSTLOGD)

    @property
    def config_dir(self) -> Path:
        assert self.root is not None
        return self.root / "etc"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "log" / "maillog"

    def log_text(self) -> str:
        """Postfix's own log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tls_versions(self) -> list[str]:
        """The protocol of each TLS session smtpd logged so far ("TLSv1.3", "TLSv1.2", ...), from
        its "... TLS connection established from ...: TLSv1.3 with cipher ..." lines."""
        return [m.group(1) for m in _TLS_ESTABLISHED.finditer(self.log_text())]

    def tls_sessions(self) -> list[tuple[str, str]]:
        """(protocol, cipher) of each TLS session smtpd logged so far."""
        return [(m.group(1), m.group(2)) for m in _TLS_ESTABLISHED.finditer(self.log_text())]

    def maildir(self, user: str) -> Path:
        assert self.root is not None
        return self.root / "mail" / self.domain / user

    def mailbox(self, user: str) -> list[bytes]:
        """What was delivered to ``user@domain``, oldest first (empty when nothing was)."""
        return read_maildir(self.maildir(user))

    def wait_for(self, user: str, count: int) -> list[bytes]:
        """Wait until ``user`` has ``count`` messages (delivery is asynchronous) and return them."""
        return wait_for_messages(self.maildir(user), count)

    def postconf(self, *args: str) -> str:
        return self._run("/usr/sbin/postconf", "-c", str(self.config_dir), *args)

    def _run(self, *command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.returncode}\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def start(self) -> Postfix:
        root = self.root = _private_dir("pysmtp-postfix-")
        uid, gid = _mail_ids()
        etc, queue, data, log = root / "etc", root / "queue", root / "data", root / "log"
        for folder in (etc, queue, data, log, root / "mail"):
            folder.mkdir()
        shutil.chown(data, "postfix")
        for user in self.users:
            (root / "mail" / self.domain / user).mkdir(parents=True)
        _chown_tree(root / "mail", uid, gid)
        (etc / "vmailbox").write_text("".join(f"{u}@{self.domain} {self.domain}/{u}/\n" for u in self.users))
        self.ports = {name: free_port() for name in ("smtp", "submission", "smtps")}
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(queue),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": f"mx.{self.domain}",
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            # Nothing leaves this machine: no DNS, and relayed mail stays in the queue.
            "smtp_dns_support_level": "disabled",
            "default_transport": "error:no delivery off this test machine",
            "relay_transport": "error:no delivery off this test machine",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(root / "mail"),
            "virtual_mailbox_maps": f"texthash:{etc}/vmailbox",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": str(min(uid, 100)),
            "virtual_mailbox_limit": "0",
            "message_size_limit": str(POSTFIX_SIZE_LIMIT),
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            # Postfix's own log, without syslog: postlogd writes it (Postfix >= 3.4).
            "maillog_file": str(log / "maillog"),
            "maillog_file_prefixes": str(log),
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_security_level": "may" if self.cert else "none",
        }
        if self.cert is not None:
            params["smtpd_tls_chain_files"] = f"{self.cert.key_path}, {self.cert.cert_path}"
        if self.dovecot is not None:
            params["smtpd_sasl_type"] = "dovecot"
            params["smtpd_sasl_path"] = str(self.dovecot.auth_socket)
        params.update(self.main)
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        auth = ["-o", "smtpd_sasl_auth_enable=yes"] if self.dovecot else []
        relay = "smtpd_relay_restrictions=permit_sasl_authenticated,reject_unauth_destination"
        submission = ["-o", "smtpd_tls_security_level=encrypt", "-o", "smtpd_tls_auth_only=yes", *auth,
                      "-o", relay]  # fmt: skip
        smtps = ["-o", "smtpd_tls_wrappermode=yes", *auth]
        services = [
            f"127.0.0.1:{self.ports['smtp']} inet n - n - - smtpd",
            f"127.0.0.1:{self.ports['submission']} inet n - n - - smtpd " + " ".join(submission),
        ]
        if self.cert is not None:
            services.append(f"127.0.0.1:{self.ports['smtps']} inet n - n - - smtpd " + " ".join(smtps))
        else:
            del self.ports["smtps"]
        # Debian's master.cf, with nothing chrooted (the queue is not a chroot jail here).
        services += [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (etc / "master.cf").write_text("\n".join(services) + "\n")
        try:
            self._run(self.POSTFIX, "-c", str(etc), "start")
            for port in self.ports.values():
                wait_for_port(port, START_TIMEOUT)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log = self.log_text()
            self.stop()
            raise RuntimeError(f"Postfix did not start: {error}\n{log}") from None
        return self

    def _master_pid(self) -> int | None:
        assert self.root is not None
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop this instance (``postfix stop``, then its process group if need be); remove its folder."""
        if self.root is None:
            return
        pid = self._master_pid()
        if pid is not None:
            subprocess.run(
                [self.POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, timeout=60
            )
            _stop_group(pid, None)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- processes ---------------------------------------------------------------------------------


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
