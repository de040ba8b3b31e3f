"""End to end in CPython: SmtpClient on asyncio against a real aiosmtpd."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from pysmtp_wasm import (
    SmtpAuthError,
    SmtpClient,
    SmtpConnectionError,
    SmtpEnvelopeError,
    SmtpError,
    SmtpRecipientsError,
    SmtpTimeoutError,
    SmtpTlsError,
    SmtpUsageError,
)

from .conftest import ca_pem
from .servers import RawServer, Recorder, SmtpServer, free_port, off_loopback_address

USER, PASSWORD, TOKEN = "alice", "s3cret-pass", "ya29.token-xyz"


@dataclass
class Outcome:
    idles: int = 0
    failed_recipients: list[str] | None = None
    done: list[bool] = field(default_factory=list)
    errors: list[SmtpError] = field(default_factory=list)
    closed: bool | None = None
    log: list[tuple[str, str]] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)
    drains: int = 0
    order: list[str] = field(default_factory=list)  # "done:True", "error:SmtpTlsError", "close:True"


async def deliver(
    client: SmtpClient,
    envelopes: list[dict[str, Any]] | None = None,
    body: Iterable[bytes | str] = (b"Subject: hi\r\n\r\nhello\r\n",),
    honour_drain: bool = False,
    timeout: float = 20,
    before_stream: Callable[[], Any] | None = None,
) -> Outcome:
    """Connect, send one message per envelope (the same body each time), quit; wait for close.
    ``before_stream`` is called at each onready, before the message is streamed."""
    out = Outcome()
    queue = list(envelopes or [{"from": "sender@example.com", "to": "rcpt@example.com"}])
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    chunks = list(body)
    drained: asyncio.Event = asyncio.Event()

    def onidle() -> None:
        if queue:
            client.useEnvelope(queue.pop(0))
        else:
            client.quit()

    async def stream() -> None:
        for chunk in chunks:
            if not client.send(chunk) and honour_drain:
                drained.clear()
                await drained.wait()
        client.end()

    def onready(failed: list[str]) -> None:
        out.failed_recipients = failed
        if before_stream is not None:
            before_stream()
        loop.create_task(stream())

    def ondrain() -> None:
        out.drains += 1
        drained.set()

    def count_idle() -> None:
        out.idles += 1
        onidle()

    client.onidle = count_idle
    client.onready = onready

    def ondone(success: bool) -> None:
        out.done.append(success)
        out.order.append(f"done:{success}")

    client.ondone = ondone

    def onerror(error: SmtpError) -> None:
        out.errors.append(error)
        out.order.append(f"error:{type(error).__name__}")

    client.onerror = onerror
    client.ondrain = ondrain

    def onclose(is_error: bool) -> None:
        out.order.append(f"close:{is_error}")
        if not closed.done():
            closed.set_result(is_error)

    client.onclose = onclose
    client.onlog = lambda d, t: out.log.append((d, t))
    client.connect()
    transport = client._transport
    original_write = transport.write  # type: ignore[union-attr]

    def counting_write(data: bytes) -> bool:
        out.writes.append(data)
        return original_write(data)

    transport.write = counting_write  # type: ignore[method-assign,union-attr]
    out.closed = await asyncio.wait_for(closed, timeout)
    return out


# -- plain -------------------------------------------------------------------------------------


async def test_transcript_lines_are_made_only_while_someone_listens(caplog: pytest.LogCaptureFixture):
    with SmtpServer() as server:
        loop = asyncio.get_running_loop()
        idle, closed = loop.create_future(), loop.create_future()
        client = SmtpClient("127.0.0.1", server.port)
        client.onidle = lambda: idle.done() or idle.set_result(None)
        client.onclose = lambda is_error: closed.set_result(is_error)
        client.connect()
        await asyncio.wait_for(idle, 10)
        engine = client._engine
        assert engine is not None and engine.transcript is False  # no onlog, no DEBUG logging
        lines: list[tuple[str, str]] = []
        client.onlog = lambda direction, text: lines.append((direction, text))
        assert engine.transcript is True
        client.quit()
        assert await asyncio.wait_for(closed, 10) is False
        assert lines[0] == ("C", "QUIT") and ("S", "221 Bye") in lines

        # DEBUG logging on this package's logger is a listener too.
        with caplog.at_level(logging.DEBUG, logger="pysmtp_wasm"):
            idle = loop.create_future()
            logged = SmtpClient("127.0.0.1", server.port)
            logged.onidle = lambda: idle.done() or idle.set_result(None)
            logged.connect()
            await asyncio.wait_for(idle, 10)
            assert logged._engine is not None and logged._engine.transcript is True
            logged.close()
        assert any(r.getMessage().startswith("C: EHLO") for r in caplog.records)


async def test_plain_send_and_quit():
    with SmtpServer() as server:
        client = SmtpClient("127.0.0.1", server.port)
        out = await deliver(client, [{"from": "a@example.com", "to": ["b@example.com", "c@example.com"]}])
    assert out.errors == [] and out.closed is False
    assert out.done == [True] and out.idles == 2 and out.failed_recipients == []
    (message,) = server.recorder.messages
    assert (message.mail_from, message.rcpt_tos) == ("a@example.com", ["b@example.com", "c@example.com"])
    assert message.content == b"Subject: hi\r\n\r\nhello\r\n"
    assert [r.recipient for r in client.lastResults] == ["b@example.com", "c@example.com"]


async def test_several_messages_on_one_connection():
    with SmtpServer() as server:
        client = SmtpClient("127.0.0.1", server.port)
        envelopes = [{"from": "a@example.com", "to": f"r{i}@example.com"} for i in range(5)]
        out = await deliver(client, envelopes)
    assert out.done == [True] * 5 and out.closed is False
    assert [m.rcpt_tos for m in server.recorder.messages] == [[f"r{i}@example.com"] for i in range(5)]


@pytest.mark.parametrize("pipelining", [False, True])
async def test_pipelining_on_and_off(pipelining: bool):
    with SmtpServer(Recorder(pipelining=pipelining)) as server:
        client = SmtpClient("127.0.0.1", server.port)
        out = await deliver(client, [{"from": "a@example.com", "to": ["b@example.com", "c@example.com"]}])
    assert out.done == [True]
    envelope_writes = [w for w in out.writes if w.startswith((b"MAIL", b"RCPT", b"DATA"))]
    if pipelining:
        assert envelope_writes == [
            b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\n"
            b"RCPT TO:<c@example.com>\r\nDATA\r\n"
        ]
    else:
        assert len(envelope_writes) == 4
    assert server.recorder.messages[0].rcpt_tos == ["b@example.com", "c@example.com"]


async def test_partial_recipient_rejection():
    with SmtpServer(Recorder(reject={"bad@example.com"}, pipelining=True)) as server:
        client = SmtpClient("127.0.0.1", server.port)
        out = await deliver(
            client, [{"from": "a@example.com", "to": ["bad@example.com", "good@example.com"]}]
        )
    assert out.failed_recipients == ["bad@example.com"] and out.done == [True]
    assert server.recorder.messages[0].rcpt_tos == ["good@example.com"]
    results = {r.recipient: (r.accepted, r.code) for r in client.lastResults}
    assert results == {"good@example.com": (True, 250), "bad@example.com": (False, 550)}


@pytest.mark.parametrize("pipelining", [False, True])
async def test_total_recipient_rejection(pipelining: bool):
    with SmtpServer(Recorder(reject={"x@example.com", "y@example.com"}, pipelining=pipelining)) as server:
        client = SmtpClient("127.0.0.1", server.port)
        out = await deliver(client, [{"from": "a@example.com", "to": ["x@example.com", "y@example.com"]}])
    (error,) = out.errors
    assert isinstance(error, SmtpRecipientsError)
    assert str(error) == "Can't send mail - all recipients were rejected"
    assert (
        error.code == 550
        and error.enhanced == "5.1.1"
        and set(error.rejected) == {"x@example.com", "y@example.com"}
    )
    assert out.closed is True and out.done == [] and server.recorder.messages == []


async def test_twenty_megabytes_with_leading_dots_arrive_byte_identical():
    line = b".starts with a dot " + b"x" * 55 + b"\r\n"  # 76 bytes with CRLF
    body = b"Subject: big\r\n\r\n" + b"".join(
        (line if i % 3 == 0 else b"plain line " + b"y" * 63 + b"\r\n") for i in range(20 * 1024 * 1024 // 76)
    )
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    with SmtpServer(Recorder(pipelining=True)) as server:
        client = SmtpClient("127.0.0.1", server.port)
        # The server reads nothing for a second as the message starts: the kernel's buffers
        # fill, so backpressure comes whatever the machine's speed (without the pause it came
        # only when the server fell behind by itself, and a loaded machine could keep it up).
        out = await deliver(
            client,
            body=chunks,
            honour_drain=True,
            timeout=120,
            before_stream=lambda: server.loop.call_soon_threadsafe(time.sleep, 1.0),
        )
    assert out.errors == [] and out.done == [True]
    received = server.recorder.messages[0].content
    assert len(received) == len(body)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(body).hexdigest()
    assert out.drains > 0  # backpressure was seen and honoured


async def test_size_hint_is_sent_and_checked():
    with SmtpServer(data_size_limit=1000) as server:
        envelopes = [
            {"from": "a@example.com", "to": "b@example.com", "size": 30},
            {"from": "a@example.com", "to": "b@example.com", "size": 5000},
        ]
        out = await deliver(SmtpClient("127.0.0.1", server.port), envelopes)
    (error,) = out.errors
    assert isinstance(error, SmtpEnvelopeError) and "limit of 1000" in str(error) and error.fatal is True
    # The first message went; the second envelope was refused before MAIL, then QUIT and close.
    assert out.order == ["done:True", "error:SmtpEnvelopeError", "close:True"]
    (message,) = server.recorder.messages
    assert "SIZE=30" in message.mail_options
    assert out.writes[-1] == b"QUIT\r\n" and sum(w.startswith(b"MAIL") for w in out.writes) == 1


async def test_smtputf8_address():
    with SmtpServer() as server:
        client = SmtpClient("127.0.0.1", server.port)
        out = await deliver(client, [{"from": "jörg@exämple.com", "to": "ünïcode@example.com"}])
    assert out.done == [True]
    assert server.recorder.messages[0].mail_from == "jörg@exämple.com"
    assert "SMTPUTF8" in server.recorder.messages[0].mail_options


async def test_injection_attempt_is_refused_and_nothing_reaches_the_server():
    with SmtpServer() as server:
        client = SmtpClient("127.0.0.1", server.port)
        evil = "b@example.com>\r\nRCPT TO:<victim@example.com"
        out = await deliver(
            client, [{"from": "a@example.com", "to": evil}, {"from": "a@example.com", "to": "ok@example.com"}]
        )
    (error,) = out.errors
    assert isinstance(error, SmtpEnvelopeError) and "invalid to address" in str(error)
    assert out.order == ["error:SmtpEnvelopeError", "close:True"] and out.idles == 1
    assert out.writes[-1] == b"QUIT\r\n" and not any(b"victim" in w or b"MAIL" in w for w in out.writes)
    assert server.recorder.messages == []


# emailjs-smtp-client's integration tests "should fail with invalid MAIL FROM", "... with empty
# recipients" and "... with invalid recipients", ported: onerror, and in it the test sets onclose
# and waits for it. (The seed's server refused "invalid" itself; this client refuses it first.)
SEED_FAILURES = [
    ({"from": "invalid", "to": ["receiver@localhost"]}, SmtpEnvelopeError, "invalid from address"),
    ({"from": "sender@example.com", "to": []}, SmtpEnvelopeError, "Can't send mail - no recipients defined"),
    (
        {"from": "sender@example.com", "to": ["receiver@example.com"]},
        SmtpRecipientsError,
        "Can't send mail - all recipients were rejected",
    ),
]


@pytest.mark.parametrize(
    ("envelope", "error_class", "message"), SEED_FAILURES, ids=["from", "empty", "rejected"]
)
async def test_the_seeds_should_fail_tests_get_onclose_after_onerror(
    envelope: dict[str, Any], error_class: type[SmtpError], message: str
) -> None:
    with SmtpServer(Recorder(reject={"receiver@example.com"})) as server:
        loop = asyncio.get_running_loop()
        idle, closed = loop.create_future(), loop.create_future()
        client = SmtpClient("127.0.0.1", server.port)
        client.onidle = lambda: idle.set_result(None)
        client.connect()
        await asyncio.wait_for(idle, 10)
        errors: list[SmtpError] = []

        def onerror(error: SmtpError) -> None:
            errors.append(error)
            client.onclose = closed.set_result

        client.onerror = onerror
        client.useEnvelope(envelope)
        assert await asyncio.wait_for(closed, 10) is True
    (error,) = errors
    assert isinstance(error, error_class) and message in str(error) and error.fatal is True
    assert client.state == "closed" and server.recorder.messages == []


# -- AUTH --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "method", "expected_command"),
    [
        # Without TLS, CRAM-MD5 is preferred when offered: it keeps the password off the wire.
        ({"user": USER, "pass": PASSWORD}, None, "AUTH CRAM-MD5"),
        ({"user": USER, "pass": PASSWORD}, "PLAIN", "AUTH PLAIN"),
        ({"user": USER, "pass": PASSWORD}, "LOGIN", "AUTH LOGIN"),
        ({"user": USER, "pass": PASSWORD}, "CRAM-MD5", "AUTH CRAM-MD5"),
        ({"user": USER, "xoauth2": TOKEN}, None, "AUTH XOAUTH2"),
    ],
)
async def test_auth_mechanisms(auth: dict[str, str], method: str | None, expected_command: str):
    recorder = Recorder(users={USER: PASSWORD}, tokens={USER: TOKEN})
    with SmtpServer(recorder) as server:
        options: dict[str, Any] = {"auth": auth}
        if method:
            options["authMethod"] = method
        client = SmtpClient("127.0.0.1", server.port, options)
        out = await deliver(client)
    assert out.errors == [] and out.done == [True]
    assert recorder.commands == [expected_command]
    assert recorder.messages[0].login == USER
    transcript = "\n".join(t for _, t in out.log)
    assert PASSWORD not in transcript and TOKEN not in transcript
    assert expected_command in transcript


async def test_auth_to_a_host_that_is_not_loopback_needs_tls_or_allow_insecure_auth(ca: trustme.CA):
    """The same server, reached at this machine's address off loopback (the peer address is
    not a loopback one): without TLS PLAIN is refused before AUTH and the session ends with
    QUIT; allowInsecureAuth sends it; after STARTTLS it goes as usual."""
    name = address = off_loopback_address()
    recorder = Recorder(users={USER: PASSWORD})
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(tls)
    auth = {"auth": {"user": USER, "pass": PASSWORD}, "authMethod": "PLAIN"}
    with (
        SmtpServer(recorder, address=address) as plain,
        SmtpServer(recorder, starttls=tls, address=address) as secure,
    ):
        refused = await deliver(SmtpClient(name, plain.port, auth))
        assert recorder.commands == [] and recorder.messages == []
        allowed = await deliver(SmtpClient(name, plain.port, {**auth, "allowInsecureAuth": True}))
        assert recorder.commands == ["AUTH PLAIN"]
        over_tls = await deliver(SmtpClient(name, secure.port, {**auth, "ca": ca_pem(ca)}))
    (error,) = refused.errors
    assert isinstance(error, SmtpTlsError) and "not sending the password in cleartext" in str(error)
    assert refused.order == ["error:SmtpTlsError", "close:True"] and refused.idles == 0
    assert refused.writes == [b"EHLO localhost\r\n", b"QUIT\r\n"]
    assert (
        allowed.errors == [] and allowed.done == [True] and over_tls.errors == [] and over_tls.done == [True]
    )
    assert recorder.commands == ["AUTH PLAIN", "STARTTLS", "AUTH PLAIN"]
    assert [(m.login, m.tls) for m in recorder.messages] == [(USER, False), (USER, True)]


@pytest.mark.parametrize(
    ("auth", "method", "expected"),
    [
        ({"user": USER, "pass": "wrong"}, "PLAIN", "AUTH PLAIN failed: 5.7.8"),
        ({"user": USER, "pass": "wrong"}, "LOGIN", "AUTH LOGIN failed: 5.7.8"),
        ({"user": USER, "pass": "wrong"}, "CRAM-MD5", "AUTH CRAM-MD5 failed: 5.7.8"),
        ({"user": USER, "xoauth2": "expired"}, None, "Username and Password not accepted"),
    ],
)
async def test_auth_failure_is_an_error_with_the_servers_text(
    auth: dict[str, str], method: str | None, expected: str
):
    with SmtpServer(Recorder(users={USER: PASSWORD}, tokens={USER: TOKEN})) as server:
        options: dict[str, Any] = {"auth": auth}
        if method:
            options["authMethod"] = method
        out = await deliver(SmtpClient("127.0.0.1", server.port, options))
    (error,) = out.errors
    assert isinstance(error, SmtpAuthError) and error.code == 535 and expected in str(error)
    assert out.closed is True and server.recorder.messages == []


# -- TLS ---------------------------------------------------------------------------------------


async def test_starttls_with_pinned_ca_then_auth(ca: trustme.CA, server_tls: ssl.SSLContext):
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls, auth_require_tls=True) as server:
        client = SmtpClient(
            "localhost", server.port, {"ca": ca_pem(ca), "auth": {"user": USER, "pass": PASSWORD}}
        )
        out = await deliver(client)
    assert out.errors == [] and out.done == [True]
    assert recorder.commands == ["STARTTLS", "AUTH PLAIN"]
    assert recorder.messages[0].tls is True and recorder.messages[0].login == USER


async def test_implicit_tls_with_pinned_ca(ca: trustme.CA, server_tls: ssl.SSLContext):
    with SmtpServer(implicit_tls=server_tls) as server:
        client = SmtpClient("localhost", server.port, {"useSecureTransport": True, "ca": ca_pem(ca)})
        out = await deliver(client)
    assert out.errors == [] and out.done == [True]
    assert server.recorder.messages[0].tls is True


async def test_implicit_tls_untrusted_certificate_is_refused(server_tls: ssl.SSLContext):
    other = trustme.CA()
    with SmtpServer(implicit_tls=server_tls) as server:
        for options in ({"useSecureTransport": True, "ca": ca_pem(other)}, {"useSecureTransport": True}):
            out = await deliver(SmtpClient("localhost", server.port, options))
            (error,) = out.errors
            assert isinstance(error, SmtpTlsError) and "not trusted" in str(error)
            assert out.closed is True and out.idles == 0
    assert server.recorder.messages == []


async def test_starttls_untrusted_certificate_stops_before_auth(server_tls: ssl.SSLContext):
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls, auth_require_tls=False) as server:
        client = SmtpClient(
            "localhost", server.port, {"ca": ca_pem(trustme.CA()), "auth": {"user": USER, "pass": PASSWORD}}
        )
        out = await deliver(client)
    assert isinstance(out.errors[0], SmtpTlsError) and out.closed is True
    assert recorder.commands == ["STARTTLS"]  # no AUTH, not even after the failure


def server_context(issuer: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server's TLS with a certificate for exactly ``names`` from ``issuer`` (its chain sent)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issuer.issue_cert(*names).configure_cert(context)
    return context


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize(
    ("host", "names"),
    [
        ("localhost", ["mail.other.example"]),  # a pinned CA's certificate for another name
        ("127.0.0.1", ["localhost"]),  # implicit TLS checked against the host given, not "localhost"
        ("localhost", ["127.0.0.1"]),
    ],
)
async def test_a_certificate_from_the_pinned_ca_for_another_name_is_refused(
    ca: trustme.CA, mode: str, host: str, names: list[str]
):
    """Pinning trust (``ca``) does not turn off the host-name check: the certificate must name
    the host the client was given, in implicit TLS as after STARTTLS; nothing is sent."""
    recorder = Recorder(users={USER: PASSWORD})
    tls = server_context(ca, *names)
    kind = {"implicit_tls": tls} if mode == "implicit" else {"starttls": tls}
    options = {
        "ca": ca_pem(ca),
        "auth": {"user": USER, "pass": PASSWORD},
        "useSecureTransport": mode == "implicit",
    }
    with SmtpServer(recorder, auth_require_tls=False, **kind) as server:  # type: ignore[arg-type]
        out = await deliver(SmtpClient(host, server.port, options))
    (error,) = out.errors
    assert isinstance(error, SmtpTlsError) and error.stage == "tls", repr(error)
    assert "not trusted" in str(error) and "match" in str(error).lower(), str(error)
    assert out.closed is True and out.idles == 0 and recorder.messages == []
    assert not any(c.startswith("AUTH") for c in recorder.commands)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_a_pinned_intermediate_is_a_trust_anchor(mode: str):
    """``ca`` may be an intermediate CA, not a self-signed root (VERIFY_X509_PARTIAL_CHAIN):
    trusted alone, the root unknown to the client. A sibling intermediate is not trusted."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    tls = server_context(intermediate, "localhost")
    kind = {"implicit_tls": tls} if mode == "implicit" else {"starttls": tls}
    with SmtpServer(**kind) as server:  # type: ignore[arg-type]
        good = await deliver(
            SmtpClient(
                "localhost",
                server.port,
                {"ca": ca_pem(intermediate), "useSecureTransport": mode == "implicit"},
            )
        )
        sibling = await deliver(
            SmtpClient(
                "localhost",
                server.port,
                {"ca": ca_pem(root.create_child_ca()), "useSecureTransport": mode == "implicit"},
            )
        )
    assert good.errors == [] and good.done == [True]
    assert server.recorder.messages[0].tls is True and len(server.recorder.messages) == 1
    (error,) = sibling.errors
    assert isinstance(error, SmtpTlsError) and "not trusted" in str(error)


async def test_require_tls_against_a_server_without_starttls_sends_no_auth():
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder) as server:
        client = SmtpClient(
            "127.0.0.1", server.port, {"requireTLS": True, "auth": {"user": USER, "pass": PASSWORD}}
        )
        out = await deliver(client)
    (error,) = out.errors
    assert isinstance(error, SmtpTlsError) and "requireTLS" in str(error)
    assert out.closed is True
    assert not any(c.startswith("AUTH") for c in recorder.commands)
    assert not any(w.startswith(b"AUTH") for w in out.writes)


async def test_ignore_tls_stays_in_plaintext(server_tls: ssl.SSLContext):
    with SmtpServer(starttls=server_tls) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port, {"ignoreTLS": True}))
    assert out.done == [True] and server.recorder.commands == []
    assert server.recorder.messages[0].tls is False


# -- LMTP --------------------------------------------------------------------------------------


async def test_lmtp_one_recipient_delivered_one_failed_after_data():
    recorder = Recorder(lmtp_fail={"full@example.com"})
    with SmtpServer(recorder, lmtp=True) as server:
        client = SmtpClient("127.0.0.1", server.port, {"lmtp": True})
        out = await deliver(client, [{"from": "a@example.com", "to": ["ok@example.com", "full@example.com"]}])
    assert out.errors == [] and out.done == [True]
    results = {r.recipient: (r.accepted, r.code, r.enhanced) for r in client.lastResults}
    assert results == {"ok@example.com": (True, 250, "2.1.5"), "full@example.com": (False, 550, "5.2.1")}
    assert any(t.startswith("LHLO") for d, t in out.log if d == "C")


# -- stalls and failures --------------------------------------------------------------------------


async def test_server_that_never_greets_times_out_then_closes():
    with RawServer() as server:
        client = SmtpClient("127.0.0.1", server.port, {"timeoutGreeting": 300})
        out = await deliver(client, timeout=5)
    (error,) = out.errors
    assert isinstance(error, SmtpTimeoutError) and "greeting" in str(error)
    assert out.closed is True


async def test_server_that_stalls_after_ehlo_times_out_then_closes():
    with RawServer(b"220 hi\r\n") as server:
        client = SmtpClient("127.0.0.1", server.port, {"timeoutSocketLowerBound": 300})
        out = await deliver(client, timeout=5)
    (error,) = out.errors
    assert isinstance(error, SmtpTimeoutError) and "ehlo" in str(error)
    assert out.closed is True
    assert server.received == b"EHLO localhost\r\n"


async def test_server_that_drips_one_byte_at_a_time_still_times_out():
    # The greeting arrives a byte every 50 ms: partial replies are no progress.
    with RawServer(b"220 " + b"x" * 100 + b"\r\n", drip=0.05) as server:
        client = SmtpClient("127.0.0.1", server.port, {"timeoutGreeting": 500})
        out = await deliver(client, timeout=5)
    assert isinstance(out.errors[0], SmtpTimeoutError) and out.closed is True


async def test_connection_refused_is_a_clear_error():
    port = free_port()
    out = await deliver(SmtpClient("127.0.0.1", port), timeout=5)
    (error,) = out.errors
    assert isinstance(error, SmtpConnectionError) and f"127.0.0.1:{port}" in str(error)
    assert out.closed is True


async def test_server_closing_mid_message_is_an_error_and_not_done():
    class Closer(Recorder):
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            server.transport.close()
            return "250 never seen"

    with SmtpServer(Closer()) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port))
    assert out.done == [] and len(out.errors) == 1 and out.closed is True
    assert isinstance(out.errors[0], SmtpConnectionError)


async def test_close_at_once():
    with SmtpServer() as server:
        client = SmtpClient("127.0.0.1", server.port)
        closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        client.onidle = client.close
        client.onclose = closed.set_result
        client.connect()
        assert await asyncio.wait_for(closed, 5) is False


async def test_connect_needs_a_running_loop_and_only_once():
    client = SmtpClient("127.0.0.1", 1)
    client.onerror = lambda e: None
    client.connect()
    with pytest.raises(SmtpError, match="already"):
        client.connect()
    client.close()


def test_connect_without_a_loop_is_a_clear_error():
    with pytest.raises(SmtpConnectionError, match="running asyncio loop"):
        SmtpClient("127.0.0.1", 25).connect()


async def test_server_that_stalls_after_the_data_times_out_and_is_not_done():
    class Sleeper(Recorder):
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            await asyncio.sleep(3)
            return "250 too late"

    with SmtpServer(Sleeper()) as server:
        client = SmtpClient(
            "127.0.0.1", server.port, {"timeoutSocketLowerBound": 300, "timeoutSocketMultiplier": 0}
        )
        out = await deliver(client, timeout=5)
    (error,) = out.errors
    assert isinstance(error, SmtpTimeoutError) and "data_end" in str(error)
    assert out.done == [] and out.closed is True


async def test_close_before_connect_fires_onclose_and_forbids_connect():
    """close() on a client never connected: onclose(false) once; then connect() is refused at
    once (SmtpUsageError), no connection is opened (the server sees none), no second onclose."""
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        before = recorder.connections_total  # (the server's own readiness probe)
        client = SmtpClient("127.0.0.1", server.port)
        closed: list[bool] = []
        errors: list[Exception] = []
        client.onclose = closed.append
        client.onerror = errors.append
        client.close()
        client.close()
        assert closed == [False]
        with pytest.raises(SmtpUsageError, match=r"connect\(\) after close\(\)"):
            client.connect()
        assert client.state == "new"
        # A connect that had gone through would have a session by now: EHLO is the first thing
        # the client says after the greeting. Wait for a real session on another client instead
        # of a clock: it goes through the same server after any connection of the first.
        other = await deliver(SmtpClient("127.0.0.1", server.port))
        assert other.done == [True] and other.errors == []
    assert closed == [False] and errors == []
    assert recorder.connections_total == before + 1  # the other client's only
