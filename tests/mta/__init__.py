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

from ._common import (
    DELIVERY_TIMEOUT,
    MAIL_USER,
    missing,
    mta_root,
    read_maildir,
    skip_unless_installed,
    strip_trace,
    wait_for_messages,
)
from .dovecot import Dovecot
from .exim import Exim, Queued, parse_exim_spool
from .opensmtpd import OpenSmtpd
from .postfix import Postfix

__all__ = [
    "DELIVERY_TIMEOUT",
    "MAIL_USER",
    "Dovecot",
    "Exim",
    "OpenSmtpd",
    "Postfix",
    "Queued",
    "missing",
    "mta_root",
    "parse_exim_spool",
    "read_maildir",
    "skip_unless_installed",
    "strip_trace",
    "wait_for_messages",
]
