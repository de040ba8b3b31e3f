"""Hardening in CPython: hostile servers, a STARTTLS-stripping man in the middle, broken
connections, bad input and load. Each failure must end in ``onerror`` then ``onclose(true)``,
never with ``ondone(true)`` for a message the server did not accept; nothing may hang."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from pysmtp_wasm import (
    SmtpClient,
    SmtpConnectionError,
    SmtpEnvelopeError,
    SmtpError,
    SmtpProtocolError,
    SmtpTimeoutError,
    SmtpTlsError,
    SmtpUsageError,
)
from pysmtp_wasm._reply import MAX_REPLY_LINE

from .conftest import ca_pem
from .servers import Conn, Recorder, ScriptedServer, SmtpServer, off_loopback_address
from .test_asyncio_e2e import Outcome, deliver

USER, PASSWORD = "alice", "s3cret-pass"


def pinned(ca: trustme.CA, **options: Any) -> dict[str, Any]:
    return {"ca": ca_pem(ca), **options}


def assert_failed(out: Outcome, error_class: type[SmtpError]) -> SmtpError:
    """One error of that class, then onclose(true), and no ondone(true) at any time."""
    assert len(out.errors) == 1, out.errors
    assert isinstance(out.errors[0], error_class), repr(out.errors[0])
    assert out.order[-2:] == [f"error:{type(out.errors[0]).__name__}", "close:True"], out.order
    assert "done:True" not in out.order and out.closed is True
    return out.errors[0]


def server_lines(out: Outcome) -> list[str]:
    return [text for direction, text in out.log if direction == "S"]


# -- STARTTLS injection (CVE-2011-0411) -------------------------------------------------------------


def starttls_script(tls: ssl.SSLContext, injected: bytes, later: bytes = b"") -> Any:
    """A server that offers STARTTLS with PIPELINING, then sends ``injected`` in the same write
    as "220 ready" (and ``later`` in a write of its own) before the handshake."""

    def script(conn: Conn) -> None:
        conn.send(b"220 hostile ESMTP\r\n")
        assert conn.line() == b"EHLO localhost"
        conn.send(b"250-hostile\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n")
        assert conn.line() == b"STARTTLS"
        conn.sock.settimeout(0.3)  # anything pipelined behind STARTTLS would arrive now
        try:
            conn.read(1)
        except TimeoutError:
            pass
        conn.sock.settimeout(10)
        conn.send(b"220 2.0.0 ready to start TLS\r\n" + injected)
        if later:
            # Wait for the client's first handshake byte (peeked, left for the handshake): it
            # has read "220 ready" and is in TLS now, so ``later`` is a read of its own.
            conn.sock.recv(1, socket.MSG_PEEK)
            conn.send(later)
        conn.start_tls(tls)
        conn.serve_smtp(b"250-hostile over TLS\r\n250 AUTH PLAIN\r\n")

    return script


INJECTED = b"250-evil\r\n250 AUTH PLAIN\r\n235 2.7.0 fake: authenticated\r\n"
# An unfinished line: kept by the reply parser, it would merge into the EHLO reply after TLS.
PARTIAL = b"250-SIZE 10"


@pytest.mark.parametrize(
    "injected", [INJECTED, PARTIAL, INJECTED + PARTIAL], ids=["lines", "partial", "both"]
)
async def test_starttls_injection_in_the_same_read_is_discarded(
    ca: trustme.CA, server_tls: ssl.SSLContext, injected: bytes
) -> None:
    with ScriptedServer(starttls_script(server_tls, injected)) as server:
        client = SmtpClient("localhost", server.port, pinned(ca, auth={"user": USER, "pass": PASSWORD}))
        out = await deliver(client)
    assert out.errors == [] and out.done == [True] and out.closed is False
    # Nothing was pipelined behind STARTTLS, and no AUTH went out in plaintext.
    assert server.plaintext == b"EHLO localhost\r\nSTARTTLS\r\n"
    # After the handshake the client said EHLO again: the injected replies were never read.
    assert server.commands[0] == "EHLO localhost" and server.commands[1].startswith("AUTH PLAIN ")
    assert not any("evil" in line or "fake" in line or "SIZE" in line for line in server_lines(out))
    assert ("*", "discarded data received after the STARTTLS reply") in out.log
    assert ("S", "250-hostile over TLS") in out.log  # the EHLO reply after TLS, whole and alone
    assert len(server.messages) == 1


async def test_starttls_injection_in_a_later_read_fails_the_handshake(
    ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    with ScriptedServer(starttls_script(server_tls, b"", later=INJECTED)) as server:
        client = SmtpClient("localhost", server.port, pinned(ca, auth={"user": USER, "pass": PASSWORD}))
        out = await deliver(client, timeout=10)
    error = assert_failed(out, SmtpTlsError)
    assert "TLS with localhost failed" in str(error)
    # The bytes went to the TLS layer (and broke it), never to the reply parser.
    assert not any("evil" in line or "fake" in line for line in server_lines(out))
    assert server.plaintext == b"EHLO localhost\r\nSTARTTLS\r\n" and server.messages == []


# -- a man in the middle who strips STARTTLS ---------------------------------------------------------


class StrippingMitm:
    """A real TCP man in the middle between the client and the server: it deletes STARTTLS from
    EHLO replies and answers a STARTTLS command itself with 454, so the session stays in
    plaintext where it reads everything (``from_client``)."""

    def __init__(self, upstream_port: int, address: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.address = address  # where it listens
        self.from_client = bytearray()
        self.stripped = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StrippingMitm:
        if self.address == "::":
            # Dual stack (asyncio would make it IPv6 only): a client reaching it at an
            # IPv4-mapped address ("::ffff:127.0.0.1") has that as its peer address.
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def client_to_server() -> None:
            while line := await reader.readline():
                self.from_client += line
                if line.strip().upper() == b"STARTTLS":
                    writer.write(b"454 4.7.0 TLS not available due to temporary reason\r\n")
                    continue
                up_writer.write(line)
            up_writer.close()

        async def server_to_client() -> None:
            reply: list[bytes] = []
            while line := await up_reader.readline():
                reply.append(line)
                if line[3:4] == b"-":
                    continue  # a multi-line reply: rewrite it whole
                kept = [item for item in reply if item[4:].strip().upper() != b"STARTTLS"]
                self.stripped += len(reply) - len(kept)
                reply = []
                lines = [item[:3] + b"-" + item[4:] for item in kept[:-1]] + [
                    kept[-1][:3] + b" " + kept[-1][4:]
                ]
                writer.write(b"".join(lines))
            writer.close()

        await asyncio.gather(client_to_server(), server_to_client(), return_exceptions=True)


async def test_starttls_stripped_with_require_tls_stops_before_auth(server_tls: ssl.SSLContext) -> None:
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server:
        async with StrippingMitm(server.port) as mitm:
            client = SmtpClient(
                "127.0.0.1", mitm.port, {"requireTLS": True, "auth": {"user": USER, "pass": PASSWORD}}
            )
            out = await deliver(client)
    error = assert_failed(out, SmtpTlsError)
    assert "requireTLS" in str(error) and error.code == 454
    assert mitm.stripped == 1  # the server did offer STARTTLS
    assert bytes(mitm.from_client) == b"EHLO localhost\r\nSTARTTLS\r\n"  # no AUTH, no password
    assert not any(c.startswith("AUTH") for c in recorder.commands) and recorder.messages == []


TOKEN = "ya29.token-xyz"


@pytest.mark.parametrize(
    ("auth", "method", "secret"),
    [
        ({"user": USER, "pass": PASSWORD}, "PLAIN", "password"),
        ({"user": USER, "pass": PASSWORD}, "LOGIN", "password"),
        ({"user": USER, "xoauth2": TOKEN}, None, "token"),
    ],
)
async def test_starttls_stripped_without_require_tls_sends_no_credentials(
    server_tls: ssl.SSLContext, auth: dict[str, str], method: str | None, secret: str
) -> None:
    """Opportunistic TLS: without requireTLS the client uses TLS when the server *appears* to
    offer it. A man in the middle who removes the offer gets a plaintext session, but no
    password or token: AUTH is refused before any of it is written (the host is not loopback),
    QUIT follows, and nothing else."""
    address = off_loopback_address()
    recorder = Recorder(users={USER: PASSWORD}, tokens={USER: TOKEN})
    with SmtpServer(recorder, starttls=server_tls) as server:
        async with StrippingMitm(server.port, address) as mitm:
            options = {"auth": auth, **({"authMethod": method} if method else {})}
            out = await deliver(SmtpClient(address, mitm.port, options))
            for _ in range(50):
                if recorder.connections_open == 0:
                    break
                await asyncio.sleep(0.05)
    error = assert_failed(out, SmtpTlsError)
    assert error.stage == "AUTH" and f"not sending the {secret} in cleartext" in str(error)
    assert "allowInsecureAuth" in str(error) and address in str(error)
    assert mitm.stripped == 1  # the server did offer STARTTLS
    assert bytes(mitm.from_client) == b"EHLO localhost\r\nQUIT\r\n"  # no AUTH, no message
    assert recorder.commands == [] and recorder.messages == [] and recorder.connections_open == 0


async def test_starttls_stripped_without_require_tls_may_use_cram_md5(server_tls: ssl.SSLContext) -> None:
    """CRAM-MD5 puts only an HMAC on the wire: it stays allowed without TLS (and is preferred)."""
    address = off_loopback_address()
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server:
        async with StrippingMitm(server.port, address) as mitm:
            out = await deliver(SmtpClient(address, mitm.port, {"auth": {"user": USER, "pass": PASSWORD}}))
    assert out.errors == [] and out.done == [True] and recorder.commands == ["AUTH CRAM-MD5"]
    seen = bytes(mitm.from_client)
    assert PASSWORD.encode() not in seen and base64.b64encode(PASSWORD.encode()) not in seen


async def test_starttls_stripped_with_allow_insecure_auth_is_plaintext_and_the_mitm_reads_it(
    server_tls: ssl.SSLContext,
) -> None:
    """What allowInsecureAuth gives away, as docs/api.md says: the password and the message."""
    address = off_loopback_address()
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server:
        async with StrippingMitm(server.port, address) as mitm:
            options = {
                "auth": {"user": USER, "pass": PASSWORD},
                "authMethod": "PLAIN",
                "allowInsecureAuth": True,
            }
            out = await deliver(SmtpClient(address, mitm.port, options))
    assert out.errors == [] and out.done == [True]
    assert recorder.messages[0].tls is False and recorder.commands == ["AUTH PLAIN"]
    seen = bytes(mitm.from_client)
    assert base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) in seen  # the credentials
    assert b"Subject: hi\r\n\r\nhello\r\n" in seen  # the message


# Names for 127.0.0.1 that no rule on the string would call loopback: the resolver's
# inet_aton forms. Only the address connected to tells.
LOOPBACK_IN_DISGUISE = ["127.0.0.1", "127.1", "2130706433"]


@pytest.mark.parametrize("host", [*LOOPBACK_IN_DISGUISE, "::ffff:127.0.0.1"])
async def test_starttls_stripped_on_loopback_authenticates_in_plaintext(
    server_tls: ssl.SSLContext, host: str
) -> None:
    """A connection to a loopback address (the server is this machine) may take the password
    without TLS: decided from the peer address, whatever the host looks like as written (an
    IPv4-mapped IPv6 address of 127.0.0.1 included)."""
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server:
        async with StrippingMitm(server.port, "::" if ":" in host else "127.0.0.1") as mitm:
            options = {"auth": {"user": USER, "pass": PASSWORD}, "authMethod": "LOGIN"}
            out = await deliver(SmtpClient(host, mitm.port, options))
    assert out.errors == [] and out.done == [True] and recorder.commands == ["AUTH LOGIN"]
    assert recorder.messages[0].login == USER and recorder.messages[0].tls is False


# -- the connection breaks -----------------------------------------------------------------------------


def greet_and_accept_envelope(conn: Conn) -> None:
    conn.send(b"220 hi\r\n")
    for reply in (b"250 hi\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        assert conn.line() is not None
        conn.send(reply)


async def test_server_closes_mid_reply_at_the_greeting() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220-mx.example.com\r\n220-still gree")

    with ScriptedServer(script) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port), timeout=5)
    error = assert_failed(out, SmtpConnectionError)
    assert "before it greeted" in str(error)


async def test_server_closes_mid_reply_after_the_data_is_not_done() -> None:
    def script(conn: Conn) -> None:
        greet_and_accept_envelope(conn)
        conn.until(b"\r\n.\r\n")
        conn.send(b"250-2.0.0 queued as")  # and no more: was it accepted? we cannot know

    with ScriptedServer(script) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port), timeout=5)
    error = assert_failed(out, SmtpConnectionError)
    assert "before it answered the message" in str(error) and out.done == []


async def test_server_closes_mid_data_while_the_client_streams() -> None:
    def script(conn: Conn) -> None:
        greet_and_accept_envelope(conn)
        conn.read(300_000)  # a part of the message, then it goes

    body = [b"x" * 76 + b"\r\n"] * 100_000  # 7.8 MB
    with ScriptedServer(script) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port), body=body, honour_drain=True, timeout=10)
    error = assert_failed(out, SmtpConnectionError)
    assert "during the message data" in str(error) or "before it answered" in str(error)


def closes_mid_tls_handshake(mode: str) -> Callable[[Conn], None]:
    """A server that hangs up as the ClientHello begins: after "220 go ahead" to STARTTLS
    (``mode`` "starttls"), or at once (implicit TLS)."""

    def script(conn: Conn) -> None:
        if mode == "starttls":
            conn.send(b"220 hi\r\n")
            conn.line()
            conn.send(b"250-hi\r\n250 STARTTLS\r\n")
            conn.line()
            conn.send(b"220 go ahead\r\n")
        conn.read(1)  # the ClientHello begins: hang up

    return script


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_server_closes_mid_tls_handshake(ca: trustme.CA, mode: str) -> None:
    with ScriptedServer(closes_mid_tls_handshake(mode)) as server:
        options = pinned(ca, auth={"user": USER, "pass": PASSWORD}, useSecureTransport=mode == "implicit")
        out = await deliver(SmtpClient("localhost", server.port, options), timeout=5)
    assert out.errors and isinstance(out.errors[0], (SmtpTlsError, SmtpConnectionError))
    assert_failed(out, type(out.errors[0]))
    assert out.idles == 0 and b"AUTH" not in server.plaintext


async def test_one_byte_a_second_times_out_and_memory_stays_bounded() -> None:
    """A greeting dripped a byte a second never completes: the greeting's timer fires while
    bytes still arrive (they do not restart it; tests/test_timers.py has the rule on a fake
    clock). Shown by order, not by the clock: the client gave up while the server still had
    most of its 60 bytes to send."""
    dripped: list[int] = []

    def script(conn: Conn) -> None:
        for byte in b"220 " + b"x" * 60:
            if conn.server.stop.wait(1.0):
                return
            try:
                conn.send(bytes([byte]))
            except OSError:
                return  # the client closed
            dripped.append(byte)

    with ScriptedServer(script) as server:
        client = SmtpClient("127.0.0.1", server.port, {"timeoutGreeting": 2500})
        task = asyncio.ensure_future(deliver(client, timeout=60))
        buffered = []
        while not task.done():
            await asyncio.sleep(0.1)
            if client._engine is not None:
                buffered.append(client._engine._parser.buffered)
        out = task.result()
        at_close = len(dripped)
    error = assert_failed(out, SmtpTimeoutError)
    assert error.stage == "greeting" and "the greeting" in str(error)
    assert 1 <= at_close < 64, at_close  # bytes were arriving, and the greeting never completed
    assert max(buffered) <= 4 and buffered[-1] == 0


async def test_continuation_lines_forever_time_out() -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 hi\r\n")
        conn.line()
        while not conn.server.stop.wait(0.05):
            conn.send(b"250-still thinking\r\n")  # complete lines, never a complete reply

    with ScriptedServer(script) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port, {"timeoutSocketLowerBound": 600}), timeout=5)
    error = assert_failed(out, SmtpTimeoutError)
    assert "ehlo" in str(error) and error.stage == "EHLO"
    assert error.code is None and error.enhanced is None


@pytest.mark.parametrize(
    ("answer", "stage", "code", "enhanced"),
    [
        (None, "AUTH", None, None),  # no answer: a timeout while AUTH's reply is awaited
        (b"421 4.3.2 going down\r\n", "AUTH", 421, "4.3.2"),
        (b"454 try later\r\n", "AUTH", 454, None),  # a code without an enhanced one
    ],
)
async def test_stage_is_spelt_one_way_and_absent_evidence_is_none(
    answer: bytes | None, stage: str, code: int | None, enhanced: str | None
) -> None:
    def script(conn: Conn) -> None:
        conn.send(b"220 hi\r\n")
        conn.line()
        conn.send(b"250-hi\r\n250 AUTH PLAIN\r\n")
        conn.line()  # AUTH PLAIN ...
        if answer is None:
            conn.server.stop.wait(10)
        else:
            conn.send(answer)
            conn.line()

    options = {"auth": {"user": USER, "pass": PASSWORD}, "timeoutSocketLowerBound": 300}
    with ScriptedServer(script) as server:
        out = await deliver(SmtpClient("127.0.0.1", server.port, options), timeout=10)
    (error,) = out.errors
    assert (error.stage, error.code, error.enhanced) == (stage, code, enhanced), repr(error)


async def test_a_flood_without_line_ends_is_stopped_with_bounded_memory() -> None:
    sent = []

    def script(conn: Conn) -> None:
        conn.send(b"220 ")
        chunk = b"x" * 65536
        for _ in range(160):  # up to 10 MB
            conn.send(chunk)
            sent.append(len(chunk))

    tracemalloc.start()
    try:
        with ScriptedServer(script) as server:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            out = await deliver(SmtpClient("127.0.0.1", server.port), timeout=5)
            peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    error = assert_failed(out, SmtpProtocolError)
    assert f"longer than {MAX_REPLY_LINE} bytes" in str(error)
    assert peak < 2 * 1024 * 1024, f"{peak} bytes at the peak"


# -- bad input: clear errors, nothing of it sent -----------------------------------------------------


def refused(call: Any, *args: Any) -> str:
    try:
        call(*args)
    except SmtpUsageError as error:
        return type(error).__name__
    return "accepted"


# (envelope, words the reason must contain)
BAD_ENVELOPES: list[tuple[dict[str, Any], str]] = [
    ({"from": "a@example.com", "to": "b@example.com\r\nRCPT TO:<victim@example.com>"}, "contains"),
    ({"from": "a@exa\0mple.com", "to": "b@example.com"}, "contains NUL"),
    ({"from": "a@example.com", "to": "b@example.com> NOTIFY=NEVER"}, "contains '>'"),
    ({"from": "a@example.com", "to": "b@example.com>"}, "contains '>'"),  # '>' alone
    ({"from": "<a@example.com", "to": "b@example.com"}, "contains '<'"),
    ({"from": '"a" NOTIFY=NEVER"@example.com', "to": "b@example.com"}, "not a proper quoted string"),
    ({"from": "a@example.com", "to": 'b" NOTIFY=NEVER@example.com'}, "quote outside a quoted local part"),
    ({"from": "a@example.com", "to": "x" * 243 + "@example.com"}, "255 octets, longer than the 254"),
    ({"from": "a\ud800@example.com", "to": "b@example.com"}, "not valid Unicode"),
    ({"from": "a@example.com", "to": "jörg@example.com"}, "SMTPUTF8"),  # the server has no SMTPUTF8
    ({"from": "a@example.com", "to": []}, "no recipients"),
]


async def test_calls_in_the_wrong_state_are_refused_and_the_connection_stays_usable() -> None:
    """SmtpUsageError: raised at once, no onerror, nothing changes; the messages go through."""
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        client = SmtpClient("127.0.0.1", server.port)
        calls: list[tuple[str, str]] = []
        errors: list[SmtpError] = []
        idles = 0
        closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def onidle() -> None:
            nonlocal idles
            idles += 1
            if idles == 1:
                client.useEnvelope({"from": "a@example.com", "to": "one@example.com"})
                calls.append(("useEnvelope in flight", refused(client.useEnvelope, {"to": "x@example.com"})))
                calls.append(("connect twice", refused(client.connect)))
                calls.append(("send before onready", refused(client.send, "early")))
                calls.append(("quit mid-message", refused(client.quit)))
            elif idles == 2:
                client.useEnvelope({"from": "a@example.com", "to": "two@example.com"})
            else:
                client.quit()

        def onready(failed: list[str]) -> None:
            client.send(f"Subject: {idles}\r\n\r\nbody {idles}\r\n")
            client.end()
            calls.append(("send after end", refused(client.send, "late bytes")))
            calls.append(("end twice", refused(client.end)))

        client.onidle = onidle
        client.onready = onready
        client.onerror = errors.append
        client.onclose = closed.set_result
        client.connect()
        assert await asyncio.wait_for(closed, 10) is False
    assert errors == []
    assert (
        calls
        == [
            ("useEnvelope in flight", "SmtpUsageError"),
            ("connect twice", "SmtpUsageError"),
            ("send before onready", "SmtpUsageError"),
            ("quit mid-message", "SmtpUsageError"),
        ]
        + [("send after end", "SmtpUsageError"), ("end twice", "SmtpUsageError")] * 2
    )
    assert [(m.rcpt_tos, m.content) for m in recorder.messages] == [
        (["one@example.com"], b"Subject: 1\r\n\r\nbody 1\r\n"),
        (["two@example.com"], b"Subject: 2\r\n\r\nbody 2\r\n"),
    ]


@pytest.mark.parametrize(("envelope", "reason"), BAD_ENVELOPES, ids=range(len(BAD_ENVELOPES)))
async def test_a_bad_envelope_is_an_error_then_quit_then_close_and_nothing_is_sent(
    envelope: dict[str, Any], reason: str
) -> None:
    """After a first message on the same connection, a bad envelope: onerror, nothing of it on
    the wire, QUIT, onclose(true); the server stored only the first message."""
    recorder = Recorder(pipelining=True)
    server = SmtpServer(recorder)
    server.SMTP_kwargs["enable_SMTPUTF8"] = False
    with server:
        good = {"from": "a@example.com", "to": "one@example.com"}
        out = await deliver(SmtpClient("127.0.0.1", server.port), [good, envelope], timeout=10)
        for _ in range(50):
            if recorder.connections_open == 0:
                break
            await asyncio.sleep(0.05)
    assert out.order == ["done:True", "error:SmtpEnvelopeError", "close:True"] and out.idles == 2
    (error,) = out.errors
    assert isinstance(error, SmtpEnvelopeError) and error.fatal is True and out.closed is True
    assert [m.rcpt_tos for m in recorder.messages] == [["one@example.com"]]
    client_lines = [text for direction, text in out.log if direction == "C"]
    assert client_lines[-1] == "QUIT" and sum(line.startswith("MAIL") for line in client_lines) == 1
    assert ("S", "221 Bye") in out.log  # the server answered the QUIT: a clean end
    assert not any(b"victim" in w or b"NOTIFY" in w or b"xxxx" in w for w in out.writes)
    assert recorder.connections_open == 0
    assert reason in str(error), error


async def test_a_bad_envelope_and_no_answer_to_quit_still_closes_with_one_error() -> None:
    """The QUIT after an envelope error has the usual timer: a server that never answers it
    gets the connection closed, and the page hears one onerror and one onclose(true)."""
    quits = []

    def script(conn: Conn) -> None:
        conn.send(b"220 hi\r\n")
        conn.line()
        conn.send(b"250 hi\r\n")
        quits.append(conn.line())
        conn.server.stop.wait(10)  # and never a reply

    with ScriptedServer(script) as server:
        client = SmtpClient("127.0.0.1", server.port, {"timeoutSocketLowerBound": 500})
        out = await deliver(client, [{"from": "a@example.com", "to": []}], timeout=30)
    assert out.order == ["error:SmtpEnvelopeError", "close:True"] and quits == [b"QUIT"]
    assert any(text.startswith("after the error: timed out") for _, text in out.log), out.log


# -- load --------------------------------------------------------------------------------------------------


async def test_fifty_connections_at_once() -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        before = recorder.connections_total  # aiosmtpd's own start-up check counts too
        outs = await asyncio.gather(
            *(
                deliver(
                    SmtpClient("127.0.0.1", server.port),
                    [{"from": "a@example.com", "to": f"c{i}@example.com"}],
                    timeout=30,
                )
                for i in range(50)
            )
        )
        for _ in range(50):
            if recorder.connections_open == 0:
                break
            await asyncio.sleep(0.05)
    assert all(o.errors == [] and o.done == [True] and o.closed is False for o in outs)
    assert sorted(m.rcpt_tos[0] for m in recorder.messages) == sorted(f"c{i}@example.com" for i in range(50))
    assert recorder.connections_total - before == 50 and recorder.connections_open == 0


async def test_a_thousand_messages_on_one_connection() -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        before = recorder.connections_total
        envelopes = [{"from": "a@example.com", "to": f"m{i}@example.com"} for i in range(1000)]
        out = await deliver(SmtpClient("127.0.0.1", server.port), envelopes, timeout=120)
        for _ in range(50):
            if recorder.connections_open == 0:
                break
            await asyncio.sleep(0.05)
    assert out.errors == [] and out.done == [True] * 1000 and out.closed is False
    assert [m.rcpt_tos for m in recorder.messages] == [[f"m{i}@example.com"] for i in range(1000)]
    assert recorder.connections_total - before == 1 and recorder.connections_open == 0


# -- a failed STARTTLS handshake is the end: never a second connection ------------------------------


class RefusingTlsTransport:
    """A scripted transport whose STARTTLS handshake fails for its version, as the browser socket
    reports a server (or a man in the middle) that refuses TLS 1.2/1.3. Each connection is counted."""

    OPTION_NAMES = frozenset({"tlsEngine"})
    opened: list[dict[str, Any]] = []
    connections: list[bytearray] = []

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.written = bytearray()
        RefusingTlsTransport.connections.append(self.written)

    def open(self, host: str, port: int, *, secure: bool, ca: Any, options: dict[str, Any]) -> None:
        RefusingTlsTransport.opened.append(dict(options))
        self.loop.call_soon(self.owner._transport_open)
        self.loop.call_soon(self.owner._transport_data, b"220 hi\r\n")

    def write(self, data: bytes) -> bool:
        self.written += data
        if data == b"EHLO localhost\r\n":
            self.loop.call_soon(self.owner._transport_data, b"250-hi\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
        elif data == b"STARTTLS\r\n":
            self.loop.call_soon(self.owner._transport_data, b"220 go ahead\r\n")
        return True

    def start_tls(self) -> None:
        error = SmtpTlsError("TLS handshake with localhost:25 failed: the server refused TLS 1.2 and 1.3")
        self.loop.call_soon(self.owner._transport_error, error)

    def close(self) -> None:
        self.loop.call_soon(self.owner._transport_closed)

    def call_later(self, seconds: float, callback: Any) -> Any:
        return self.loop.call_later(seconds, callback)

    def stays_local(self) -> bool:
        return False


async def test_a_refused_tls_version_is_the_end_and_never_a_second_connection() -> None:
    # The browser's "auto" engine once retried STARTTLS with node-forge (TLS 1.0/1.1) on a new
    # connection after such a refusal: a downgrade anyone on the path could force. No more.
    RefusingTlsTransport.opened, RefusingTlsTransport.connections = [], []
    client = SmtpClient("localhost", 25, {"auth": {"user": USER, "pass": PASSWORD}, "tlsEngine": "auto"},
                        transport=RefusingTlsTransport)  # fmt: skip
    out = await deliver(client)
    (error,) = out.errors
    assert isinstance(error, SmtpTlsError) and "refused TLS 1.2 and 1.3" in str(error)
    assert out.closed is True and out.idles == 0
    assert [o.get("tlsEngine") for o in RefusingTlsTransport.opened] == ["auto"]  # one connection
    assert RefusingTlsTransport.connections == [bytearray(b"EHLO localhost\r\nSTARTTLS\r\n")]  # no AUTH
