"""aiosmtpd on 127.0.0.1 in a thread, keeping every message it receives."""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import hashlib
import hmac
import secrets
import socket
import ssl
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from ._net import free_port


@dataclass
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # the bytes after DATA, as received (CRLF line ends, dots unstuffed)
    mail_options: list[str]  # MAIL FROM parameters: SIZE=, BODY=, SMTPUTF8, ...
    login: str | None  # the user that authenticated, if any
    tls: bool  # whether the session was encrypted (STARTTLS or implicit TLS)

    @functools.cached_property
    def message(self) -> EmailMessage:
        """``content`` parsed with the ``email`` package's modern policy (line ends made ``\n``,
        as the package expects: ``get_content()`` is then the text as a program wrote it)."""
        parsed = email.message_from_bytes(self.content.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps every message and the commands of interest."""

    users: dict[str, str] = field(default_factory=dict)  # user -> password
    tokens: dict[str, str] = field(default_factory=dict)  # user -> XOAUTH2 token
    reject: set[str] = field(default_factory=set)  # recipients refused at RCPT
    lmtp_fail: set[str] = field(default_factory=set)  # recipients failed after DATA (LMTP)
    pipelining: bool = False
    chunking: bool = False  # offer CHUNKING (RFC 3030): BDAT, which this server then reads
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections_open: int = 0
    connections_total: int = 0

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        if self.chunking:
            responses.insert(-1, "250-CHUNKING")  # before the last line, aiosmtpd's "250 HELP"
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.reject:
            return f"550 5.1.1 <{address}>: recipient rejected"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:  # noqa: N802
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else session.auth_data
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                list(envelope.mail_options),
                login,
                server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        if isinstance(server, LMTP):
            return "\r\n".join(
                f"550 5.2.1 <{r}>: mailbox unavailable"
                if r in self.lmtp_fail
                else f"250 2.1.5 <{r}>: delivered"
                for r in envelope.rcpt_tos
            )
        return "250 2.0.0 OK: queued"

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            user = fields[0].removeprefix("user=")
            token = fields[1].removeprefix("auth=Bearer ")
        except (IndexError, ValueError):
            return AuthResult(success=False, handled=False)
        if self.tokens.get(user) == token:
            return AuthResult(success=True, auth_data=user)
        # As Gmail does: a 334 with a JSON error, the client's empty line, then 535.
        await server.push("334 " + base64.b64encode(b'{"status":"401","schemes":"bearer"}').decode())
        await server._reader.readline()
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        nonce = f"<{secrets.token_hex(8)}@localhost>".encode()
        answer = await server.challenge_auth(nonce)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        user, _, digest = answer.decode().partition(" ")
        password = self.users.get(user)
        if password is not None and hmac.compare_digest(
            digest, hmac.new(password.encode(), nonce, hashlib.md5).hexdigest()
        ):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _RecordingMixin:
    """Notes AUTH, STARTTLS and BDAT as the server sees them (to show what the client sent),
    and counts the connections open now (to show none is left behind)."""

    event_handler: Recorder

    def connection_made(self, transport: Any) -> None:
        self.event_handler.connections_open += 1
        self.event_handler.connections_total += 1
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self.event_handler.connections_open -= 1
        super().connection_lost(exc)  # type: ignore[misc]

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        self.event_handler.commands.append("AUTH " + arg.split(" ")[0])
        await super().smtp_AUTH(arg)  # type: ignore[misc]

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        self.event_handler.commands.append("STARTTLS")
        await super().smtp_STARTTLS(arg)  # type: ignore[misc]

    async def smtp_BDAT(self, arg: str) -> None:  # noqa: N802
        """RFC 3030's BDAT, which aiosmtpd 1.4 lacks: the chunks are kept on the envelope (so
        RSET and a new transaction drop them), and after ``BDAT <size> LAST`` the message goes
        to ``handle_DATA`` as after DATA."""
        server: Any = self  # an aiosmtpd SMTP: this mixin is only used with one
        if not self.event_handler.chunking:
            await server.push('500 Error: command "BDAT" not recognized')
            return
        self.event_handler.commands.append("BDAT " + arg)
        words = arg.split()
        if not 1 <= len(words) <= 2 or not words[0].isdigit() or words[1:] not in ([], ["LAST"]):
            await server.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        # The chunk follows the command at once: read it whatever the answer (RFC 3030 2).
        chunk = await server._reader.readexactly(int(words[0]))
        if await server.check_helo_needed() or await server.check_auth_needed("BDAT"):
            return
        envelope = server.envelope
        if not envelope.rcpt_tos:
            await server.push("503 5.5.1 Error: need RCPT command")
            return
        received: bytearray = envelope.__dict__.setdefault("bdat", bytearray())
        received += chunk
        limit = server.data_size_limit
        if limit and len(received) > limit:
            await server.push("552 5.3.4 Error: Too much mail data")
            server._set_post_data_state()
            return
        if not words[1:]:
            await server.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        envelope.content = envelope.original_content = bytes(received)
        status = await server._call_handler_hook("DATA")
        await server.push(status)
        server._set_post_data_state()


class RecordingSMTP(_RecordingMixin, SMTP):
    pass


class RecordingLMTP(_RecordingMixin, LMTP):
    pass


class SmtpServer(Controller):
    """aiosmtpd on a free port of 127.0.0.1, in a thread; ``with SmtpServer() as server:``.

    Args:
        recorder: the handler (users, tokens, recipients to reject, ...); a new one by default.
        starttls: an ssl.SSLContext to offer STARTTLS with.
        implicit_tls: an ssl.SSLContext to wrap the whole connection in (port 465 style).
        lmtp: speak LMTP (LHLO, one reply per recipient after DATA).
        auth_require_tls: advertise AUTH only after TLS (aiosmtpd's default; not ours).
        data_size_limit: announced as SIZE, and larger messages are refused.
        address: where to listen.
        port: the port (a free one by default).

    ``messages`` is what it received, ``port`` where it listens. With ``Recorder(chunking=True)``
    it offers CHUNKING and reads BDAT (aiosmtpd itself has no BDAT).
    """

    def __init__(
        self,
        recorder: Recorder | None = None,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        lmtp: bool = False,
        auth_require_tls: bool = False,
        data_size_limit: int = 64 * 1024 * 1024,
        address: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()
        self.lmtp = lmtp
        super().__init__(
            self.recorder,
            hostname=address,
            port=port or free_port(address),
            ssl_context=implicit_tls,
            tls_context=starttls,
            authenticator=self.recorder.authenticate,
            auth_require_tls=auth_require_tls,
            data_size_limit=data_size_limit,
            server_hostname="localhost",
        )

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    def wait_for_messages(self, count: int = 1, timeout: float = 10) -> list[Received]:
        """The messages, once there are at least ``count`` (AssertionError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} message(s) received, not {count}, in {timeout} s")
            time.sleep(0.05)
        return self.messages

    def factory(self) -> SMTP:
        cls = RecordingLMTP if self.lmtp else RecordingSMTP
        return cls(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # aiosmtpd's start-up check speaks TLS with a default client context, which would have
        # to trust our certificate (and a legacy TLS 1.1 server refuses it): check with one that
        # accepts anything.
        if not self.ssl_context:
            super()._trigger_server()  # type: ignore[no-untyped-call]
            return
        client = permissive_client_context()
        with socket.create_connection((self.hostname, self.port), 2.0) as sock:
            with client.wrap_socket(sock) as tls:
                tls.recv(1024)

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def permissive_client_context() -> ssl.SSLContext:
    """A client context that accepts any certificate and any protocol version: for checks that a
    TLS server answers, never for mail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context
