"""Postfix 3.7, run with `postfix -c DIR` from a private folder."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from ..servers import Certificate, free_port
from ._common import (
    POSTFIX_SIZE_LIMIT,
    _chown_tree,
    _Daemon,
    _mail_ids,
    _private_dir,
    _stop_group,
    missing,
    read_maildir,
    wait_for_messages,
)
from .dovecot import Dovecot

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
