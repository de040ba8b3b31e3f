"""The interop matrix in CPython: SmtpClient against real servers from Debian's packages
(tests/mta/) — Postfix, Exim 4, OpenSMTPD and Dovecot's LMTP — reading back what each
server itself stored (its Maildir, or Exim's queue) or logged.

Each test marks its message with a token of its own, so the session-wide servers can be
shared by every test, and finds its message by that token.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pysmtp_wasm import SmtpClient, SmtpEnvelopeError, SmtpTlsError

from .certs import Chain, make_chain
from .conftest import MAIL_USERS, UTF8_USER
from .mta import DELIVERY_TIMEOUT, Dovecot, Exim, OpenSmtpd, Postfix, skip_unless_installed, strip_trace
from .test_asyncio_e2e import Outcome, deliver

HOST = "127.0.0.1"  # the servers' certificates name 127.0.0.1 and localhost


def crlf(message: bytes) -> bytes:
    """A stored message as it was on the wire (servers store lines with LF)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def message(token: str, body: bytes = b"Hello from pysmtp-wasm.\r\n.leading dot\r\n..two dots\r\n") -> bytes:
    return (
        b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: interop " + token.encode() + b"\r\n"
        b"Message-ID: <" + token.encode() + b"@example.test>\r\n"
        b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\n" + body
    )


@dataclass
class Target:
    """One server as the matrix sees it."""

    name: str
    starttls_port: int  # STARTTLS offered; AUTH after it
    smtps_port: int  # implicit TLS
    stored: Callable[[str], list[bytes]]  # user -> what the server stored for them
    tls_works: bool = True
    lmtp: bool = False

    def wait_for(self, user: str, token: str) -> bytes:
        """The stored message of ``user`` that carries ``token`` (delivery may lag)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        needle = f"<{token}@example.test>".encode()
        while True:
            found = [m for m in self.stored(user) if needle in m]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no message {token} for {user}")
            time.sleep(0.05)

    def wait_for_text(self, user: str, text: str) -> bytes:
        """The stored message of ``user`` that contains ``text`` (a report, say)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while not (found := [m for m in self.stored(user) if text.encode() in m]):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no message with {text!r} for {user}")
            time.sleep(0.05)
        return found[-1]

    def has(self, user: str, token: str) -> bool:
        needle = f"<{token}@example.test>".encode()
        return any(needle in m for m in self.stored(user))


def _exim_stored(exim: Exim) -> Callable[[str], list[bytes]]:
    return lambda user: [q.message for q in exim.queued() if f"{user}@{exim.domain}" in q.recipients]


SERVERS = ["postfix", "exim", "opensmtpd"]


@pytest.fixture(params=SERVERS)
def target(request: pytest.FixtureRequest) -> Target:
    return make_target(request, request.param)


# What the TLS tests expect of OpenSMTPD here: the test runs in full and must fail (strict: a
# pass would be news, and fails the run), instead of passing on whatever TLS error it meets.
OPENSMTPD_TLS = (
    "Debian 12's OpenSMTPD 6.8.0p2 cannot do TLS with OpenSSL 3: every handshake fails "
    "('SSL routines::EVP lib', upstream issues 1171 and 1239; tests/mta/)"
)
TLS_SERVERS = [
    "postfix",
    "exim",
    pytest.param(
        "opensmtpd", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=OPENSMTPD_TLS)
    ),
]


@pytest.fixture(params=TLS_SERVERS)
def tls_target(request: pytest.FixtureRequest) -> Target:
    """A server for a test of TLS: OpenSMTPD's runs are strict xfails (OPENSMTPD_TLS)."""
    return make_target(request, request.param)


def make_target(request: pytest.FixtureRequest, name: str) -> Target:
    server = request.getfixturevalue(name)
    if isinstance(server, Postfix):
        return Target(name, server.ports["submission"], server.ports["smtps"], server.mailbox)
    if isinstance(server, Exim):
        return Target(name, server.ports["smtp"], server.ports["smtps"], _exim_stored(server))
    assert isinstance(server, OpenSmtpd)
    return Target(name, server.ports["smtp"], server.ports["smtps"], server.mailbox, tls_works=False)


def plain_port(request: pytest.FixtureRequest, target: Target) -> tuple[int, dict[str, Any]]:
    """A port and options for a session whose point is not TLS: Postfix's port 25 service,
    Exim's STARTTLS port (pinned), OpenSMTPD without TLS (it cannot do TLS here)."""
    chain: Chain = request.getfixturevalue("mail_chain")
    if target.name == "postfix":
        return request.getfixturevalue("postfix").ports["smtp"], {"ca": chain.root_pem}
    if not target.tls_works:
        return target.starttls_port, {"ignoreTLS": True}
    return target.starttls_port, {"ca": chain.root_pem}


async def run(
    port: int,
    options: dict[str, Any],
    envelopes: list[dict[str, Any]],
    body: bytes | list[bytes],
    **kwargs: Any,
) -> tuple[SmtpClient, Outcome]:
    client = SmtpClient(HOST, port, options)
    chunks = body if isinstance(body, list) else [body]
    return client, await deliver(client, envelopes, chunks, **kwargs)


def ehlo_keywords(client: SmtpClient) -> set[str]:
    """The keywords of the server's last EHLO/LHLO reply, as the engine parsed them."""
    assert client._engine is not None
    return set(client._engine.extensions.keywords)


# -- greeting, EHLO ------------------------------------------------------------------------------

# What each server offers in its EHLO on the port the matrix uses for plain sessions (after
# STARTTLS where it works), as Debian's packages ship them with tests/mta/'s configuration.
OFFERS = {
    "postfix": {"PIPELINING", "SIZE", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "ENHANCEDSTATUSCODES"},
    "exim": {"PIPELINING", "SIZE", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "AUTH"},
    "opensmtpd": {"SIZE", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES", "STARTTLS"},
}


async def test_greeting_and_ehlo(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    client, out = await run(
        port, options, [{"from": "alice@example.test", "to": "bob@example.test"}], message(token)
    )
    assert out.errors == [] and out.done == [True] and out.closed is False
    offered = ehlo_keywords(client)
    assert OFFERS[target.name] <= offered, offered
    if target.name == "opensmtpd":
        assert "PIPELINING" not in offered and "CHUNKING" not in offered and "SMTPUTF8" not in offered
    assert crlf(strip_trace(target.wait_for("bob", token))) == message(token)


# -- TLS and AUTH ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_starttls_then_auth(mail_chain: Chain, tls_target: Target, method: str):
    target = tls_target
    token = uuid.uuid4().hex
    options = {
        "auth": {"user": "alice", "pass": MAIL_USERS["alice"]},
        "authMethod": method,
        "ca": mail_chain.root_pem,
        "requireTLS": True,
    }
    client, out = await run(
        target.starttls_port,
        options,
        [{"from": "alice@example.test", "to": "bob@example.test"}],
        message(token),
    )
    assert out.errors == [] and out.done == [True], out.errors
    stored = target.wait_for("bob", token)
    assert crlf(strip_trace(stored)) == message(token)
    assert b"esmtpsa" in stored.lower()  # the server's own Received line: TLS and AUTH


async def test_postfix_logs_the_tls_version_and_the_sasl_login(postfix: Postfix, mail_chain: Chain):
    sessions = len(postfix.tls_versions())
    options = {"auth": {"user": "carol", "pass": MAIL_USERS["carol"]}, "ca": mail_chain.root_pem}
    token = uuid.uuid4().hex
    envelope = {"from": "carol@example.test", "to": "alice@example.test"}
    client, out = await run(postfix.ports["submission"], options, [envelope], message(token))
    assert out.errors == [] and out.closed is False and out.done == [True]
    assert postfix.tls_versions(at_least=sessions + 1)[sessions:] == ["TLSv1.3"]
    assert "sasl_username=carol" in postfix.log_text()


async def test_wrong_password_is_refused(mail_chain: Chain, tls_target: Target):
    # After the 535, Exim never answers the client's TLS close_notify: onclose must still come
    # at once (within run()'s 5 s; asyncio would wait 30 s by default: TLS_SHUTDOWN_TIMEOUT).
    options = {"auth": {"user": "alice", "pass": "wrong"}, "ca": mail_chain.root_pem}
    client, out = await run(tls_target.starttls_port, options, [], b"", timeout=5)
    assert [type(e).__name__ for e in out.errors] == ["SmtpAuthError"], out.errors
    assert out.errors[0].code == 535 and out.closed is True


async def test_implicit_tls(mail_chain: Chain, tls_target: Target):
    target = tls_target
    token = uuid.uuid4().hex
    options = {
        "auth": {"user": "alice", "pass": MAIL_USERS["alice"]},
        "ca": mail_chain.root_pem,
        "useSecureTransport": True,
    }
    client, out = await run(
        target.smtps_port,
        options,
        [{"from": "alice@example.test", "to": "carol@example.test"}],
        message(token),
    )
    assert out.errors == [] and out.done == [True], out.errors
    assert crlf(strip_trace(target.wait_for("carol", token))) == message(token)


async def test_a_certificate_from_another_ca_is_refused(tmp_path: Any, target: Target):
    # (OpenSMTPD too: its handshake gets as far as its certificate, which the client refuses.)
    stranger = make_chain(tmp_path, "rsa")
    options = {"ca": stranger.root_pem, "useSecureTransport": True}
    client, out = await run(target.smtps_port, options, [], b"")
    assert [type(e) for e in out.errors] == [SmtpTlsError] and out.closed is True
    assert "not trusted" in str(out.errors[0]), out.errors


async def test_opensmtpd_broken_tls_is_a_clear_tls_error_before_auth(opensmtpd: OpenSmtpd, mail_chain: Chain):
    """What a client sees of OpenSMTPD's failing TLS (OPENSMTPD_TLS): an SmtpTlsError at stage
    "tls" from the handshake (not a certificate verdict), and no AUTH line, in STARTTLS and
    implicit TLS alike."""
    auth = {"auth": {"user": "alice", "pass": MAIL_USERS["alice"]}, "ca": mail_chain.root_pem}
    for port, extra in (
        (opensmtpd.ports["smtp"], {"requireTLS": True}),
        (opensmtpd.ports["smtps"], {"useSecureTransport": True}),
    ):
        client, out = await run(port, {**auth, **extra}, [], b"")
        (error,) = out.errors
        assert isinstance(error, SmtpTlsError) and error.stage == "tls" and out.closed is True, repr(error)
        assert "TLS with" in str(error) and "not trusted" not in str(error), str(error)
        assert not any(t.startswith("AUTH") for d, t in out.log if d == "C")


# -- the envelope -------------------------------------------------------------------------------


async def test_pipelining_and_a_refused_recipient(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    to = ["bob@example.test", "nobody-here@example.test", "carol@example.test"]
    client, out = await run(port, options, [{"from": "alice@example.test", "to": to}], message(token))
    assert out.errors == [] and out.done == [True]
    assert out.failed_recipients == ["nobody-here@example.test"]
    results = {r.recipient: (r.accepted, r.code) for r in client.lastResults}
    assert results["bob@example.test"] == (True, 250) and results["carol@example.test"] == (True, 250)
    assert results["nobody-here@example.test"][0] is False
    assert 500 <= results["nobody-here@example.test"][1] < 600
    for user in ("bob", "carol"):
        assert crlf(strip_trace(target.wait_for(user, token))) == message(token)
    envelope_writes = [w for w in out.writes if w.startswith((b"MAIL", b"RCPT", b"DATA"))]
    pipelined = "PIPELINING" in ehlo_keywords(client)
    assert pipelined == (target.name != "opensmtpd")
    assert len(envelope_writes) == (1 if pipelined else 5)


async def test_size_over_the_limit_is_refused_before_data(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    envelopes = [
        {"from": "alice@example.test", "to": "bob@example.test", "size": 40 * 1024 * 1024},
        {"from": "alice@example.test", "to": "bob@example.test", "size": len(message(token))},
    ]
    # Over the limit: nothing of the envelope is sent, the session ends (onerror, onclose(true)).
    client, out = await run(port, options, envelopes[:1], message(token))
    assert isinstance(out.errors[0], SmtpEnvelopeError) and "exceeds the server's limit" in str(out.errors[0])
    assert out.done == [] and out.closed is True
    assert not any(w.startswith(b"MAIL") for w in out.writes)
    # Within it: SIZE= is sent and accepted.
    client, out = await run(port, options, envelopes[1:], message(token))
    assert out.errors == [] and out.done == [True]
    assert any(w.startswith(b"MAIL FROM:<alice@example.test> SIZE=") for w in out.writes)
    assert crlf(strip_trace(target.wait_for("bob", token))) == message(token)


async def test_8bitmime_body_arrives_unchanged(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    body = message(token, "Grüße, naïve café — 日本語\r\n".encode())
    client, out = await run(port, options, [{"from": "alice@example.test", "to": "bob@example.test"}], body)
    assert out.errors == [] and out.done == [True]
    assert any(b"BODY=8BITMIME" in w for w in out.writes)
    assert crlf(strip_trace(target.wait_for("bob", token))) == body


async def test_smtputf8_address(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    envelope = {"from": "jörg@example.test", "to": ["bob@example.test", f"{UTF8_USER}@example.test"]}
    client, out = await run(port, options, [envelope], message(token))
    if target.name == "opensmtpd":  # no SMTPUTF8: said before anything is sent
        assert isinstance(out.errors[0], SmtpEnvelopeError) and "SMTPUTF8" in str(out.errors[0])
        assert not any(w.startswith(b"MAIL") for w in out.writes)
        return
    assert out.errors == [] and out.done == [True]
    assert any(
        w.startswith("MAIL FROM:<jörg@example.test>".encode()) and b"SMTPUTF8" in w for w in out.writes
    )
    stored = target.wait_for("bob", token)
    assert crlf(strip_trace(stored)) == message(token)
    assert crlf(strip_trace(target.wait_for(UTF8_USER, token))) == message(token)  # the non-ASCII mailbox
    if target.name == "postfix":
        assert "Return-Path: <jörg@example.test>".encode() in stored


async def test_twenty_megabytes(request: pytest.FixtureRequest, target: Target):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    line = b".starts with a dot " + b"x" * 55 + b"\r\n"
    body = message(
        token, b"".join(line if i % 3 == 0 else b"y" * 74 + b"\r\n" for i in range(20 * 1024 * 1024 // 76))
    )
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    client, out = await run(
        port,
        options,
        [{"from": "alice@example.test", "to": "bob@example.test"}],
        chunks,
        honour_drain=True,
        timeout=180,
    )
    assert out.errors == [] and out.done == [True]
    stored = crlf(strip_trace(target.wait_for("bob", token)))
    assert len(stored) == len(body) and hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()


# -- Dovecot's LMTP ------------------------------------------------------------------------------


async def test_lmtp_per_recipient_results(dovecot: Dovecot):
    token = uuid.uuid4().hex
    # carol's quota is 1 KB: this message is larger, so her delivery fails after DATA.
    body = message(token, b"z" * 2000 + b"\r\n")
    to = ["alice@example.test", "nobody-here@example.test", "carol@example.test", "bob@example.test"]
    client, out = await run(
        dovecot.lmtp_port, {"lmtp": True}, [{"from": "sender@example.test", "to": to}], body
    )
    assert out.errors == [] and out.done == [True] and out.failed_recipients == ["nobody-here@example.test"]
    results = {r.recipient: (r.accepted, r.code, r.enhanced) for r in client.lastResults}
    alice, bob, carol = (results[f"{u}@example.test"] for u in ("alice", "bob", "carol"))
    assert alice[:2] == (True, 250) and bob[:2] == (True, 250)
    assert carol == (False, 552, "5.2.2")
    assert results["nobody-here@example.test"][:2] == (False, 550)
    stored = Target("dovecot", 0, 0, dovecot.mailbox)
    for user in ("alice", "bob"):
        assert crlf(strip_trace(stored.wait_for(user, token))) == body
    assert not stored.has("carol", token)


async def test_lmtp_twenty_megabytes(dovecot: Dovecot):
    token = uuid.uuid4().hex
    body = message(token, b"".join(b"." + b"w" * 73 + b"\r\n" for _ in range(20 * 1024 * 1024 // 76)))
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    client, out = await run(
        dovecot.lmtp_port,
        {"lmtp": True},
        [{"from": "s@example.test", "to": "alice@example.test"}],
        chunks,
        honour_drain=True,
        timeout=180,
    )
    assert out.errors == [] and out.done == [True]
    stored = crlf(strip_trace(Target("dovecot", 0, 0, dovecot.mailbox).wait_for("alice", token)))
    assert hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()


async def test_lmtp_smtputf8_is_refused_clearly(dovecot: Dovecot):
    client, out = await run(
        dovecot.lmtp_port, {"lmtp": True}, [{"from": "jörg@example.test", "to": "alice@example.test"}], b"x"
    )
    assert isinstance(out.errors[0], SmtpEnvelopeError) and "SMTPUTF8" in str(out.errors[0])


# -- CHUNKING (BDAT) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_chunking_or_data(request: pytest.FixtureRequest, target: Target, chunking: bool):
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    lines = b"".join((b"." if i % 2 else b"") + b"line %d\r\n" % i for i in range(20000))
    body = message(token, lines + b"bare\nline feeds\rand a last line without one")
    chunks = [body[i : i + 10000] for i in range(0, len(body), 10000)]
    options = {**options, "disableChunking": not chunking}
    client, out = await run(port, options, [{"from": "alice@example.test", "to": "bob@example.test"}], chunks)
    assert out.errors == [] and out.done == [True]
    offered = "CHUNKING" in ehlo_keywords(client)
    assert offered == (target.name != "opensmtpd")
    sent = [t for d, t in out.log if d == "C"]
    bdat = [t for t in sent if t.startswith("BDAT")]
    if chunking and offered:
        assert "DATA" not in sent and len(bdat) == len(chunks)
        assert bdat[-1].endswith(" LAST") and not any(t.endswith("LAST") for t in bdat[:-1])
        wire = b"".join(out.writes)
        assert b"\r\n..line 1\r\n" not in wire  # no dot-stuffing
    else:
        assert bdat == [] and "DATA" in sent
    # Line endings made CRLF (a bare CR too), and the last line ended.
    expected = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    assert crlf(strip_trace(target.wait_for("bob", token))) == expected


async def test_lmtp_chunking_gives_per_recipient_replies(dovecot: Dovecot):
    token = uuid.uuid4().hex
    body = message(token, b"q" * 3000 + b"\r\n")  # over carol's 1 KB quota
    to = ["alice@example.test", "carol@example.test"]
    client, out = await run(
        dovecot.lmtp_port, {"lmtp": True}, [{"from": "s@example.test", "to": to}], [body[:1000], body[1000:]]
    )
    assert out.errors == [] and out.done == [True]
    assert [t for d, t in out.log if d == "C" and t.startswith("BDAT")] == [
        "BDAT 1000",
        f"BDAT {len(body) - 1000} LAST",
    ]
    results = {r.recipient: (r.accepted, r.code) for r in client.lastResults}
    assert results == {"alice@example.test": (True, 250), "carol@example.test": (False, 552)}
    assert crlf(strip_trace(Target("dovecot", 0, 0, dovecot.mailbox).wait_for("alice", token))) == body


# -- DSN --------------------------------------------------------------------------------------------


async def test_dsn_success_notification(request: pytest.FixtureRequest, target: Target):
    """NOTIFY=SUCCESS: the server reports the delivery to the sender (alice, a local user)."""
    port, options = plain_port(request, target)
    token = uuid.uuid4().hex
    envid = f"env {token}+x"  # a space and a "+": both must be xtext-encoded
    dsn = {"notify": ["SUCCESS", "FAILURE"], "ret": "HDRS", "envid": envid, "orcpt": "orig@example.test"}
    envelope = {"from": "alice@example.test", "to": "bob@example.test", "dsn": dsn}
    client, out = await run(port, options, [envelope], message(token))
    assert out.errors == [] and out.done == [True]
    sent = [t for d, t in out.log if d == "C"]
    assert f"MAIL FROM:<alice@example.test> BODY=8BITMIME RET=HDRS ENVID=env+20{token}+2Bx" in sent
    assert "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.test" in sent
    assert crlf(strip_trace(target.wait_for("bob", token))) == message(token)
    if target.name == "exim":
        # Exim keeps it queued (tests/mta/): its spool holds the request as it took it (the
        # ENVID as the xtext it received, RET=HDRS as 2, the ORCPT beside the recipient).
        (queued,) = [q for q in request.getfixturevalue("exim").queued() if token.encode() in q.message]
        assert f"-dsn_envid env+20{token}+2Bx" in queued.envelope and "-dsn_ret 2" in queued.envelope
        assert any(line.startswith("bob@example.test rfc822;orig@example.test ") for line in queued.envelope)
        return
    # Postfix and OpenSMTPD deliver, then send alice (the sender, a local user) the report.
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not (
        reports := [m for m in target.stored("alice") if token.encode() in m and b"delivery-status" in m]
    ):
        assert time.monotonic() < deadline, (
            f"{target.name}: no delivery report for {token} in alice's mailbox"
        )
        time.sleep(0.05)
    (report,) = reports
    assert b"Action: delivered" in report and b"Final-Recipient: rfc822; bob@example.test" in report
    assert b"\n\nHello from pysmtp-wasm." not in report  # RET=HDRS: the headers only
    if target.name == "postfix":
        assert b"Original-Envelope-Id: " + envid.encode() in report
        assert b"Original-Recipient: rfc822;orig@example.test" in report
    else:  # OpenSMTPD 6.8's report carries neither (as the tests see it)
        assert b"Original-Envelope-Id" not in report and b"Original-Recipient" not in report


async def test_dsn_where_not_offered_is_refused_clearly(dovecot: Dovecot):
    envelope = {"from": "s@example.test", "to": "alice@example.test", "dsn": {"notify": ["NEVER"]}}
    client, out = await run(dovecot.lmtp_port, {"lmtp": True}, [envelope], b"x")
    assert isinstance(out.errors[0], SmtpEnvelopeError) and "does not offer DSN" in str(out.errors[0])
    # Nothing of the envelope is sent; the session ends (onclose(true) follows every onerror).
    assert out.errors[0].fatal is True and not any(w.startswith(b"MAIL") for w in out.writes)


async def test_send_message_with_dsn(postfix: Postfix, mail_chain: Chain):
    from email.message import EmailMessage

    token = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.test", "carol@example.test", f"dsn {token}"
    msg.set_content("Hello.\n")
    client = SmtpClient(HOST, postfix.ports["smtp"], {"ca": mail_chain.root_pem})
    result = await client.send_message(msg, dsn={"notify": ["SUCCESS"], "envid": token})
    with pytest.raises(SmtpEnvelopeError, match="dsn: ret must be"):
        await client.send_message(msg, dsn={"ret": "ALL"})
    client.close()
    assert result.accepted == ["carol@example.test"]
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not [m for m in postfix.mailbox("alice") if f"Original-Envelope-Id: {token}".encode() in m]:
        assert time.monotonic() < deadline, "no success report for send_message's dsn"
        time.sleep(0.05)


async def test_postfix_with_its_own_chain_and_tls_settings(tmp_path: Any):
    """The fixture's knobs, as a TLS test uses them: a chain of the test's own (ECDSA here), a
    main.cf override (TLS 1.2 at most), and the version read back from Postfix's log."""
    skip_unless_installed(Postfix)
    chain = make_chain(tmp_path, "ec")
    with Postfix(
        chain.issue("localhost"), mailboxes=("bob",), main={"smtpd_tls_mandatory_protocols": "<=TLSv1.2"}
    ) as server:
        token = uuid.uuid4().hex
        client, out = await run(
            server.ports["smtps"],
            {"ca": chain.root_pem, "useSecureTransport": True},
            [{"from": "alice@example.test", "to": "bob@example.test"}],
            message(token),
        )
        assert out.errors == [] and out.done == [True]
        assert crlf(strip_trace(Target("postfix", 0, 0, server.mailbox).wait_for("bob", token))) == message(
            token
        )
        assert server.tls_versions(at_least=1) == ["TLSv1.2"]
        assert server.tls_sessions()[0][1].startswith("ECDHE-ECDSA-")
        root = server.root
    assert root is not None and not root.exists()  # stopped and removed
