"""Exim 4.96 (exim4-daemon-light, unpacked), run with `-C FILE -bdf` and queue_only."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..servers import Certificate, free_port
from ._common import (
    DELIVERY_TIMEOUT,
    POSTFIX_SIZE_LIMIT,
    _chown_tree,
    _Daemon,
    _private_dir,
    mta_root,
)


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
