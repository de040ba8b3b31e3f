"""Real mail servers from Debian's packages, for the interop tests: Postfix, Dovecot (SASL for
Postfix, and its LMTP server), Exim 4 and OpenSMTPD, each run on free 127.0.0.1 ports from its
own configuration in a private folder, and stopped afterwards with nothing left running (its
whole process group; ``ps`` shows none after a run).

The machine's own mail system is left alone: the packages are installed by ``./build.sh test``
(Postfix with debconf's "No configuration", so Debian's own instance has no main.cf and never
starts; Exim and OpenSMTPD unpacked from their .deb into a cache folder, ``mta_root()``); every
server here runs from a folder of its own (``postfix -c DIR``, ``dovecot -c FILE``, ``exim4 -C
FILE``, OpenSMTPD in a mount namespace), its queue, mailboxes and log inside that folder, and
the folder is removed when it stops. The session fixtures are in tests/conftest.py
(``postfix``, ``dovecot``, ``exim``, ``opensmtpd``, and ``mail_chain``, the CA they share).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

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


def skip_unless_installed(server: type[_Daemon]) -> None:
    """Skip the test, saying why, when ``server`` cannot be had at all (under CI=true: fail)."""
    reason = server.require()
    if reason:
        from .servers import skip_missing

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


# -- Dovecot ---------------------------------------------------------------------------------------


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


class Dovecot(_Daemon):
    """Dovecot with its own configuration: an LMTP server on ``lmtp_port`` delivering to Maildirs,
    and SASL (PLAIN, LOGIN) for Postfix on the socket ``auth_socket``.

    ``users`` maps user -> password (every user's mailbox is ``mailbox(user)``); ``quota`` maps
    user -> a storage limit such as "1K", so a delivery to them fails after DATA (LMTP's
    per-recipient reply) once the mailbox is over it.
    """

    NAME = "Dovecot"

    DOVECOT = "/usr/sbin/dovecot"
    LMTP = "/usr/lib/dovecot/lmtp"

    def __init__(self, users: dict[str, str], quota: dict[str, str] | None = None) -> None:
        self.users = users
        self.quota = quota or {}
        super().__init__()
        self.lmtp_port = 0

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
# LMTP's RCPT TO:<alice@example.test> and SASL's "alice" are the same user.
auth_username_format = %Ln
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

        def wait() -> None:
            self._wait_for_ports([self.lmtp_port])
            deadline = time.monotonic() + START_TIMEOUT
            while not self.auth_socket.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("Dovecot made no auth socket")
                time.sleep(0.05)

        return self._started(wait, root / "stderr.log")


# -- Postfix ---------------------------------------------------------------------------------------

_TLS_ESTABLISHED = re.compile(r"TLS connection established from \S+: (TLSv[\d.]+|SSLv3) with cipher (\S+)")


class Postfix(_Daemon):
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
    ``domain`` is refused "User unknown". ``main`` adds or overrides main.cf parameters: e.g.
    ``{"smtpd_tls_mandatory_protocols": "<=TLSv1.2"}`` caps TLS on ``submission`` and ``smtps``
    (TLS is mandatory there), ``smtpd_tls_protocols`` does so on ``smtp``.

    ``log_text()`` is Postfix's own log (``maillog_file``, written by postlogd);
    ``tls_versions()`` lists the TLS version of every TLS session smtpd logged, in order.
    """

    NAME = "Postfix"

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
        super().__init__()
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

    def tls_versions(self, at_least: int = 0) -> list[str]:
        """The protocol of each TLS session smtpd logged so far ("TLSv1.3", "TLSv1.2", ...), from
        its "... TLS connection established from ...: TLSv1.3 with cipher ..." lines, oldest
        first. With ``at_least``, wait (a few seconds at most) until that many are logged:
        postlogd writes the log a moment after smtpd sends it."""
        return [version for version, _ in self.tls_sessions(at_least)]

    def tls_sessions(self, at_least: int = 0) -> list[tuple[str, str]]:
        """(protocol, cipher) of each TLS session smtpd logged so far; ``at_least`` as above."""
        deadline = time.monotonic() + 5
        while True:
            found = [(m.group(1), m.group(2)) for m in _TLS_ESTABLISHED.finditer(self.log_text())]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

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

        def wait() -> None:
            self._run(self.POSTFIX, "-c", str(etc), "start")
            self._wait_for_ports(self.ports.values())

        return self._started(wait)

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


# -- Exim ------------------------------------------------------------------------------------------


def mta_root() -> Path:
    """Where tests/provision.sh unpacked Exim and OpenSMTPD from their .deb: ``PYSMTP_MTA_ROOT``,
    else ``root`` in its cache (``PYSMTP_MTA_CACHE``, by default ~/.cache/pysmtp-wasm/mta)."""
    cache = os.environ.get("PYSMTP_MTA_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pysmtp-wasm" / "mta"
    )
    return Path(os.environ.get("PYSMTP_MTA_ROOT") or Path(cache) / "root")


@dataclass
class Queued:
    """A message as a server keeps it in its queue: the envelope and the message's bytes."""

    sender: str
    recipients: list[str]
    envelope: list[str]  # the spool's envelope lines as stored (options, DSN fields, recipients)
    message: bytes


def parse_exim_spool(header_file: Path) -> Queued:
    """Read an Exim ``-H`` spool file and its ``-D`` body (Exim's spec, "Format of spool files")."""
    data = header_file.read_bytes()
    head, _, rest = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").split("\n")
    sender = lines[2].strip("<>")
    # After the -options come the non-recipients tree ("XX"), the count, then the recipients.
    at = next(i for i, line in enumerate(lines) if i > 3 and not line.startswith("-"))
    while not lines[at].isdigit():
        at += 1
    count = int(lines[at])
    recipients = [line.split(" ")[0] for line in lines[at + 1 : at + 1 + count]]
    headers = b""
    while rest:
        match = re.match(rb"(\d{3,})(.) ", rest)
        if match is None:
            break
        length = int(match.group(1))
        start = match.end()
        text, rest = rest[start : start + length], rest[start + length :]
        if match.group(2) != b"*":  # "*": a header Exim deleted
            headers += text
    body = header_file.with_name(header_file.name[:-2] + "-D").read_bytes().partition(b"\n")[2]
    return Queued(sender, recipients, lines[3:], headers + b"\n" + body)


# Exim's configuration; @NAME@ is filled in by Exim.start().
EXIM_CONFIG = """\\
# pysmtp-wasm test instance: loopback only, its files in @ROOT@
primary_hostname = exim.@DOMAIN@
domainlist local_domains = @DOMAIN@
spool_directory = @ROOT@/spool
log_file_path = @ROOT@/log/%slog
pid_file_path = @ROOT@/exim.pid
local_interfaces = 127.0.0.1
daemon_smtp_ports = @SMTP@ : @SMTPS@
tls_on_connect_ports = @SMTPS@
tls_advertise_hosts = *
tls_certificate = @CERT@
tls_privatekey = @KEY@
# AUTH only once TLS is on, as on a submission port.
auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}
pipelining_advertise_hosts = *
chunking_advertise_hosts = *
dsn_advertise_hosts = *
smtputf8_advertise_hosts = *
message_size_limit = @SIZE@
host_lookup =
rfc1413_hosts =
keep_environment =
queue_only
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept domains = +local_domains
         local_parts = lsearch;@ROOT@/passwd
  deny   message = unknown user

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and{{!eq{$auth3}{}}{eq{$auth3}{${lookup{$auth2}lsearch{@ROOT@/passwd}}}}}}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = ${if and{{!eq{$auth2}{}}{eq{$auth2}{${lookup{$auth1}lsearch{@ROOT@/passwd}}}}}}
  server_set_id = $auth1
"""


class Exim(_Daemon):
    """Exim 4 (Debian's exim4-daemon-light, unpacked by build.sh) from its own configuration
    (``exim4 -C FILE -bdf``), on 127.0.0.1: ``ports["smtp"]`` (STARTTLS, then AUTH PLAIN and
    LOGIN) and ``ports["smtps"]`` (implicit TLS). It offers PIPELINING, SIZE, 8BITMIME,
    SMTPUTF8, CHUNKING and DSN, and accepts mail for ``users`` at ``domain`` (others:
    "550 unknown user"). Mail is kept in its queue (``queue_only``: Exim's delivery would
    re-execute the system's /usr/sbin/exim4): ``queued()`` reads it back from the spool.
    """

    NAME = "Exim"

    def __init__(self, cert: Certificate, users: dict[str, str], domain: str = "example.test") -> None:
        self.cert = cert
        self.users = users
        self.domain = domain
        self.binary = mta_root() / "usr" / "sbin" / "exim4"
        super().__init__()
        self.ports: dict[str, int] = {}

    @staticmethod
    def require() -> str | None:
        binary = mta_root() / "usr" / "sbin" / "exim4"
        if not binary.exists():
            return f"Exim is not unpacked at {binary} (./build.sh test does it)"
        try:
            pwd.getpwnam("Debian-exim")
        except KeyError:
            return "no Debian-exim user (./build.sh test makes it)"
        return None

    def log_text(self) -> str:
        assert self.root is not None
        path = self.root / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def queued(self) -> list[Queued]:
        """Every message in the queue, oldest first."""
        assert self.root is not None
        folder = self.root / "spool" / "input"
        files = (
            sorted(folder.glob("*-H"), key=lambda p: (p.stat().st_mtime, p.name)) if folder.exists() else []
        )
        return [parse_exim_spool(p) for p in files]

    def wait_for(self, count: int) -> list[Queued]:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while len(queued := self.queued()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"Exim queued {len(queued)} messages, wanted {count}")
            time.sleep(0.05)
        return queued

    def start(self) -> Exim:
        root = self.root = _private_dir("pysmtp-exim-")
        entry = pwd.getpwnam("Debian-exim")
        for name in ("spool", "log"):
            (root / name).mkdir()
            os.chown(root / name, entry.pw_uid, entry.pw_gid)
        (root / "passwd").write_text("".join(f"{u}: {p}\n" for u, p in self.users.items()))
        # Exim reads the certificate as Debian-exim: a copy it can read.
        (root / "tls").mkdir(mode=0o700)
        cert, key = root / "tls" / "chain.pem", root / "tls" / "key.pem"
        shutil.copyfile(self.cert.cert_path, cert)
        shutil.copyfile(self.cert.key_path, key)
        _chown_tree(root / "tls", entry.pw_uid, entry.pw_gid)
        self.ports = {"smtp": free_port(), "smtps": free_port()}
        values = {
            "ROOT": str(root), "DOMAIN": self.domain, "SMTP": str(self.ports["smtp"]),
            "SMTPS": str(self.ports["smtps"]), "CERT": str(cert), "KEY": str(key),
            "SIZE": str(POSTFIX_SIZE_LIMIT),
        }  # fmt: skip
        config = EXIM_CONFIG
        for name, value in values.items():
            config = config.replace(f"@{name}@", value)
        (root / "exim.conf").write_text(config)
        self._process = subprocess.Popen(
            [str(self.binary), "-C", str(root / "exim.conf"), "-bdf"],
            stdout=subprocess.DEVNULL, stderr=(root / "stderr.log").open("wb"), start_new_session=True,
        )  # fmt: skip
        return self._started(lambda: self._wait_for_ports(self.ports.values()), root / "stderr.log")


# -- OpenSMTPD ------------------------------------------------------------------------------------

# OpenSMTPD's paths are compiled in (its queue /var/spool/smtpd, its control socket in /var/run,
# its chroot /var/lib/opensmtpd/empty, its delivery agents in /usr/libexec/opensmtpd): it runs in
# a mount namespace of its own where those are private folders, so the machine's own are never
# touched and several instances can run at once. The rest of the file system is shared, so its
# Maildirs are read from outside.
_OPENSMTPD_NAMESPACE = """\
set -e
mount -t tmpfs tmpfs /var/spool
mkdir /var/spool/smtpd
mount --bind "$PRIV/spool" /var/spool/smtpd
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib
mkdir -p /var/lib/opensmtpd/empty
mkdir -p /usr/libexec
mount -t tmpfs tmpfs /usr/libexec
mkdir /usr/libexec/opensmtpd
mount --bind "$MTA/usr/libexec/opensmtpd" /usr/libexec/opensmtpd
exec "$MTA/usr/sbin/smtpd" -d -f "$PRIV/smtpd.conf"
"""


class OpenSmtpd(_Daemon):
    """OpenSMTPD (Debian's opensmtpd, unpacked by build.sh) from its own configuration, on
    127.0.0.1: ``ports["smtp"]`` (STARTTLS, then AUTH) and ``ports["smtps"]`` (implicit TLS).
    Mail for ``users`` at ``domain`` is delivered to Maildirs (``mailbox(user)``); other
    recipients are refused at RCPT.

    Debian 12's OpenSMTPD 6.8.0p2 fails every TLS handshake with OpenSSL 3 ("SSL routines::EVP
    lib" in its log; upstream OpenSMTPD issues 1171 and 1239): its listeners are configured
    for STARTTLS and implicit TLS all the same, so the tests show what a client then sees.
    """

    NAME = "OpenSMTPD"

    def __init__(self, cert: Certificate, users: dict[str, str], domain: str = "example.test") -> None:
        self.cert = cert
        self.users = users
        self.domain = domain
        super().__init__()
        self.ports: dict[str, int] = {}

    @staticmethod
    def require() -> str | None:
        binary = mta_root() / "usr" / "sbin" / "smtpd"
        if not binary.exists():
            return f"OpenSMTPD is not unpacked at {binary} (./build.sh test does it)"
        for user in ("opensmtpd", "opensmtpq"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"no {user} user (./build.sh test makes it)"
        if shutil.which("unshare") is None:
            return "no unshare (util-linux)"
        return None

    def log_text(self) -> str:
        assert self.root is not None
        path = self.root / "smtpd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def maildir(self, user: str) -> Path:
        assert self.root is not None
        return self.root / "mail" / user

    def mailbox(self, user: str) -> list[bytes]:
        return read_maildir(self.maildir(user))

    def wait_for(self, user: str, count: int) -> list[bytes]:
        return wait_for_messages(self.maildir(user), count)

    def start(self) -> OpenSmtpd:
        root = self.root = _private_dir("pysmtp-opensmtpd-")
        uid, gid = _mail_ids()
        (root / "spool").mkdir(mode=0o711)
        (root / "tls").mkdir(mode=0o700)
        shutil.copyfile(self.cert.cert_path, root / "tls" / "chain.pem")
        shutil.copyfile(self.cert.key_path, root / "tls" / "key.pem")
        (root / "tls" / "key.pem").chmod(0o600)
        (root / "mail").mkdir()
        for user in self.users:
            (root / "mail" / user).mkdir()
        _chown_tree(root / "mail", uid, gid)
        hashes = {
            user: subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, text=True,
                                 capture_output=True, check=True).stdout.strip()
            for user, password in self.users.items()
        }  # fmt: skip
        (root / "passwd").write_text("".join(f"{u} {h}\n" for u, h in hashes.items()))
        (root / "vusers").write_text("".join(f"{u}@{self.domain} {MAIL_USER}\n" for u in self.users))
        (root / "rcpts").write_text("".join(f"{u}@{self.domain}\n" for u in self.users))
        for name in ("passwd", "vusers", "rcpts"):
            (root / name).chmod(0o640)
        self.ports = {"smtp": free_port(), "smtps": free_port()}
        name = f"opensmtpd.{self.domain}"
        (root / "smtpd.conf").write_text(
            f"""\
# pysmtp-wasm test instance: loopback only, its files in {root}
smtp max-message-size {POSTFIX_SIZE_LIMIT}
pki localhost cert "{root}/tls/chain.pem"
pki localhost key "{root}/tls/key.pem"
table passwd file:{root}/passwd
table vusers file:{root}/vusers
table rcpts file:{root}/rcpts
listen on 127.0.0.1 port {self.ports["smtp"]} tls pki localhost auth-optional <passwd> hostname {name}
listen on 127.0.0.1 port {self.ports["smtps"]} smtps pki localhost auth <passwd> hostname {name}
action "deliver" maildir "{root}/mail/%{{dest.user:lowercase}}" virtual <vusers>
match from any for domain "{self.domain}" rcpt-to <rcpts> action "deliver"
"""
        )
        env = {**os.environ, "PRIV": str(root), "MTA": str(mta_root())}
        self._process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _OPENSMTPD_NAMESPACE],
            env=env, stdout=subprocess.DEVNULL, stderr=(root / "smtpd.log").open("wb"),
            start_new_session=True,
        )  # fmt: skip
        return self._started(lambda: self._wait_for_ports(self.ports.values()))


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
