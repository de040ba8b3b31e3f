"""The interop matrix in CPython: SmtpClient against real servers from Debian's packages
(tests/mta.py), reading back what each server itself stored or logged."""

from __future__ import annotations

from typing import Any

import pytest

from pysmtp_wasm import SmtpClient

from .conftest import MAIL_USERS
from .mta import Dovecot, Postfix, strip_trace
from .servers import Chain, make_chain
from .test_asyncio_e2e import Outcome, deliver

BODY = (
    b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: interop\r\n"
    b"Message-ID: <interop-1@example.test>\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\n"
    b"Hello from pysmtp-wasm.\r\n.leading dot\r\n..two dots\r\n"
)


def crlf(message: bytes) -> bytes:
    """A message as sent on the wire (servers store it with the local line ending, LF)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def session(host_port: tuple[str, int], options: dict[str, Any], envelopes: list[dict[str, Any]],
                  body: bytes = BODY, **kwargs: Any) -> tuple[SmtpClient, Outcome]:  # fmt: skip
    client = SmtpClient(*host_port, options)
    return client, await deliver(client, envelopes, [body], **kwargs)


def alice(ca: str, **more: Any) -> dict[str, Any]:
    return {"auth": {"user": "alice", "pass": MAIL_USERS["alice"]}, "ca": ca, **more}


# -- Postfix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_postfix_submission_starttls_auth(postfix: Postfix, mail_chain: Chain, method: str):
    before = len(postfix.mailbox("bob"))
    sessions = len(postfix.tls_versions())
    client, out = await session(
        ("localhost", postfix.ports["submission"]),
        alice(mail_chain.root_pem, authMethod=method, requireTLS=True),
        [{"from": "alice@example.test", "to": "bob@example.test"}],
    )
    assert out.errors == [] and out.done == [True] and out.closed is False
    delivered = postfix.wait_for("bob", before + 1)[before]
    assert crlf(strip_trace(delivered)) == BODY
    assert b"with ESMTPSA" in delivered  # Postfix's own record: TLS and AUTH
    assert postfix.tls_versions()[sessions:] == ["TLSv1.3"]
    assert f"sasl_method={method}, sasl_username=alice" in postfix.log_text()


async def test_postfix_implicit_tls(postfix: Postfix, mail_chain: Chain):
    before = len(postfix.mailbox("carol"))
    sessions = len(postfix.tls_versions())
    client, out = await session(
        ("localhost", postfix.ports["smtps"]),
        alice(mail_chain.root_pem, useSecureTransport=True),
        [{"from": "alice@example.test", "to": "carol@example.test"}],
    )
    assert out.errors == [] and out.done == [True]
    assert crlf(strip_trace(postfix.wait_for("carol", before + 1)[before])) == BODY
    assert postfix.tls_versions()[sessions:] == ["TLSv1.3"]


async def test_postfix_refuses_an_unpinned_certificate(postfix: Postfix, mail_chain: Chain):
    stranger = make_chain(postfix.config_dir.parent / "stranger", "rsa")
    client, out = await session(
        ("localhost", postfix.ports["smtps"]),
        alice(stranger.root_pem, useSecureTransport=True),
        [{"from": "alice@example.test", "to": "bob@example.test"}],
    )
    assert out.done == [] and out.closed is True
    assert [type(e).__name__ for e in out.errors] == ["SmtpTlsError"]
    assert "not trusted" in str(out.errors[0])


def test_dovecot_fixture_has_its_users(dovecot: Dovecot):
    assert set(dovecot.users) == set(MAIL_USERS) and dovecot.lmtp_port > 0
