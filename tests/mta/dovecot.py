"""Dovecot 2.3: LMTP to Maildirs, and SASL for Postfix."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ..servers import free_port
from ._common import (
    START_TIMEOUT,
    _chown_tree,
    _Daemon,
    _mail_ids,
    _private_dir,
    missing,
    read_maildir,
    wait_for_messages,
)


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
