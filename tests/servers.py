"""Real servers for the end-to-end tests: aiosmtpd (SMTP, LMTP, STARTTLS, implicit TLS, AUTH)
and a few misbehaving TCP servers. Each runs in its own thread, on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    login: str | None
    tls: bool


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps every message and the commands of interest."""

    users: dict[str, str] = field(default_factory=dict)  # user -> password
    tokens: dict[str, str] = field(default_factory=dict)  # user -> XOAUTH2 token
    reject: set[str] = field(default_factory=set)  # recipients refused at RCPT
    lmtp_fail: set[str] = field(default_factory=set)  # recipients failed after DATA (LMTP)
    pipelining: bool = False
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:  # noqa: N802
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
                server.transport.get_extra_info("ssl_object") is not None,
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
        await server._reader.readline()  # type: ignore[attr-defined]
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
    """Notes AUTH and STARTTLS as the server sees them (to show what the client never sent)."""

    event_handler: Recorder

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802
        self.event_handler.commands.append("AUTH " + arg.split(" ")[0])
        await super().smtp_AUTH(arg)  # type: ignore[misc]

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        self.event_handler.commands.append("STARTTLS")
        await super().smtp_STARTTLS(arg)  # type: ignore[misc]


class RecordingSMTP(_RecordingMixin, SMTP):
    pass


class RecordingLMTP(_RecordingMixin, LMTP):
    pass


class SmtpServer(Controller):
    """aiosmtpd on 127.0.0.1 in a thread.

    Args:
        starttls: an ssl.SSLContext to offer STARTTLS with.
        implicit_tls: an ssl.SSLContext to wrap the whole connection in (port 465 style).
        lmtp: speak LMTP.
        auth_require_tls: advertise AUTH only after TLS (aiosmtpd's default).
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
    ) -> None:
        self.recorder = recorder or Recorder()
        self.lmtp = lmtp
        super().__init__(
            self.recorder,
            hostname="127.0.0.1",
            port=free_port(),
            ssl_context=implicit_tls,
            tls_context=starttls,
            authenticator=self.recorder.authenticate,
            auth_require_tls=auth_require_tls,
            data_size_limit=data_size_limit,
            server_hostname="localhost",
        )

    def factory(self) -> SMTP:
        cls = RecordingLMTP if self.lmtp else RecordingSMTP
        return cls(self.handler, **self.SMTP_kwargs)

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RawServer:
    """A TCP server that says ``greeting`` then reads forever and answers nothing: a stall.

    ``drip`` sends the greeting one byte per ``drip`` seconds instead.
    """

    def __init__(self, greeting: bytes = b"", drip: float | None = None) -> None:
        self.greeting = greeting
        self.drip = drip
        self.port = free_port()
        self.received = bytearray()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            if self.drip:
                for byte in self.greeting:
                    if self._stop.wait(self.drip):
                        return
                    conn.sendall(bytes([byte]))
            elif self.greeting:
                conn.sendall(self.greeting)
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.received += data
