"""OpenSMTPD 6.8 (unpacked), in a mount namespace of its own (its paths are compiled in)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ..servers import Certificate, free_port
from ._common import (
    MAIL_USER,
    POSTFIX_SIZE_LIMIT,
    _chown_tree,
    _Daemon,
    _mail_ids,
    _private_dir,
    mta_root,
    read_maildir,
    wait_for_messages,
)

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
