"""Real servers for the end-to-end tests: aiosmtpd (SMTP, LMTP, STARTTLS, implicit TLS, AUTH)
and a few misbehaving TCP servers. Each runs in its own thread, on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

INSECURE_HOST = "insecure.pysmtp.test"

# Debian's Chromium, headless, on a closed network. The host resolver rule makes every name but
# localhost unresolvable, so a page that reached for a CDN would fail. Tests and bench use these.
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # INSECURE_HOST is 127.0.0.1 under a name that is not localhost: a page served from it is not
    # a secure context (no WebCrypto), as a page on a plain http:// intranet host is not.
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1, "
    "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--js-flags=--expose-gc",
]


def this_machine() -> tuple[str, str]:
    """This machine's own host name, and the IPv4 address it resolves to (where a test server
    then listens). The client decides "loopback" from the host as written, so this name is
    *not* loopback to it although the connection stays on this machine: it lets the tests show
    what happens with a remote server's name, for real. (Debian's /etc/hosts maps the name to
    127.0.1.1; containers to 127.0.0.1 or their own address: any of them works.)"""
    name = socket.gethostname()
    address = str(socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    assert name.lower() != "localhost" and not name.startswith("127."), name
    return name, address


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
    connections_open: int = 0
    connections_total: int = 0

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
    """Notes AUTH and STARTTLS as the server sees them (to show what the client never sent),
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
        address: where to listen (default 127.0.0.1; see ``this_machine()``).
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
    ) -> None:
        self.recorder = recorder or Recorder()
        self.lmtp = lmtp
        super().__init__(
            self.recorder,
            hostname=address,
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

    def _trigger_server(self) -> None:
        # aiosmtpd's start-up check speaks TLS with a default (TLS 1.2+) context, which a
        # legacy TLS 1.1 server refuses: check with a context that accepts anything.
        if not self.ssl_context:
            super()._trigger_server()  # type: ignore[no-untyped-call]
            return
        client = permissive_client_context()
        with socket.create_connection((self.hostname, self.port), 1.0) as sock:
            with client.wrap_socket(sock) as tls:
                tls.recv(1024)

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


class Conn:
    """One connection to a :class:`ScriptedServer`, as its script sees it."""

    def __init__(self, sock: socket.socket, server: ScriptedServer) -> None:
        self.sock: socket.socket = sock
        self.server = server
        self._pending = b""
        sock.settimeout(10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """The next line the client sent (CRLF removed); None when the client closed."""
        while b"\r\n" not in self._pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.server.received.append(data)
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\r\n")
        return line

    def read(self, count: int) -> bytes:
        """At least ``count`` bytes (fewer if the client closes), counting what was buffered."""
        while len(self._pending) < count:
            data = self.sock.recv(65536)
            if not data:
                break
            self.server.received.append(data)
            self._pending += data
        data, self._pending = self._pending, b""
        return data

    def until(self, marker: bytes) -> bytes:
        while marker not in self._pending:
            data = self.sock.recv(65536)
            if not data:
                return b""
            self.server.received.append(data)
            self._pending += data
        data, _, self._pending = self._pending.partition(marker)
        return data

    @property
    def buffered(self) -> bytes:
        """What the client sent that the script has not read yet."""
        return self._pending

    def start_tls(self, context: ssl.SSLContext) -> None:
        """The server side of the handshake; what is received after it is recorded apart."""
        assert not self._pending, f"the client sent {self._pending!r} before the handshake"
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.server.tls_at = len(self.server.received)

    def serve_smtp(self, ehlo: bytes = b"250-hi\r\n250 AUTH PLAIN LOGIN\r\n") -> None:
        """Answer like a small, well-behaved SMTP server until QUIT (no greeting: the script
        sent it). Messages go to ``server.messages``."""
        while True:
            line = self.line()
            if line is None:
                return
            verb = line.split(b" ", 1)[0].upper()
            self.server.commands.append(line.decode("latin-1"))
            if verb in (b"EHLO", b"LHLO"):
                self.send(ehlo)
            elif verb == b"AUTH":
                self.send(b"235 2.7.0 ok\r\n")
            elif verb == b"DATA":
                self.send(b"354 go\r\n")
                self.server.messages.append(self.until(b"\r\n.\r\n"))
                self.send(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                self.send(b"221 bye\r\n")
                return
            else:
                self.send(b"250 ok\r\n")


class ScriptedServer:
    """A TCP server on 127.0.0.1 that plays ``script(conn)`` for each connection: hostile
    servers (injection, closing mid-reply or mid-handshake, dripping) are a few lines each.

    ``received`` holds every chunk read from clients (``tls_at`` is where TLS began), ``errors``
    what a script raised, ``messages``/``commands`` what ``serve_smtp`` saw.
    """

    def __init__(self, script: Any) -> None:
        self.script = script
        self.port = free_port()
        self.received: list[bytes] = []
        self.tls_at: int | None = None
        self.errors: list[BaseException] = []
        self.messages: list[bytes] = []
        self.commands: list[str] = []
        self.connections = 0
        self.stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []

    @property
    def plaintext(self) -> bytes:
        """What the client sent before TLS (everything, if TLS never started)."""
        return b"".join(self.received[: self.tls_at])

    def __enter__(self) -> ScriptedServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(2)
        self._sock.close()

    def _accept(self) -> None:
        self._sock.settimeout(0.05)  # closing a socket does not wake a thread blocked in accept()
        while not self.stop.is_set():
            try:
                sock, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        conn = Conn(sock, self)
        try:
            self.script(conn)
        except (OSError, ssl.SSLError) as error:
            self.errors.append(error)
        finally:
            conn.sock.close()


# -- certificates and TLS contexts -------------------------------------------------------------


@dataclass
class Certificate:
    cert_pem: str
    cert_path: Path
    key_path: Path


def make_rsa_certificate(directory: Path, name: str = "localhost", days: int = 30) -> Certificate:
    """A self-signed RSA certificate made by ``openssl req -x509`` (node-forge parses RSA only)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return Certificate(cert.read_text(), cert, key)


def make_self_signed_leaf(directory: Path, name: str = "localhost") -> Certificate:
    """A self-signed ECDSA P-256 server certificate that is **not** a CA (basicConstraints
    CA:FALSE): what a small server makes for itself, and what a client pins by itself."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key("ec")
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = _sign(
        _builder(name, subject, key, now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ),
        key,
    )
    cert_path, key_path = directory / f"self-signed-{name}.crt", directory / f"self-signed-{name}.key"
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path.write_text(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(pem, cert_path, key_path)


def legacy_tls_context(cert: Certificate) -> ssl.SSLContext:
    """What node-forge can speak: TLS 1.0/1.1, RSA key exchange, AES-CBC-SHA, at SECLEVEL 0."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that's the point
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("AES128-SHA:AES256-SHA:@SECLEVEL=0")
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


def modern_tls_context(cert: Certificate) -> ssl.SSLContext:
    """Python's default server settings (TLS 1.2 and newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


def permissive_client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


# -- the WebSocket-to-TCP proxy -------------------------------------------------------------------


def wait_for_port(port: int, timeout: float = 10, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on 127.0.0.1:``port``; fail at once if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"it exited with status {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing is listening on port {port} after {timeout} s") from None
            time.sleep(0.05)


class Websockify:
    """websockify in token mode: it reaches only the targets written in its token file.

    ``url(port)`` adds 127.0.0.1:port as a target and returns the WebSocket URL for it.
    """

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.tokens = directory / "tokens.cfg"
        self.tokens.write_text("")
        self.log_path = directory / "websockify.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Websockify:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "websockify", "--token-plugin", "TokenFile",
             "--token-source", str(self.tokens), f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def url(self, target_port: int) -> str:
        with self.tokens.open("a") as tokens:
            tokens.write(f"t{target_port}: 127.0.0.1:{target_port}\n")
        return f"ws://127.0.0.1:{self.port}/?token=t{target_port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop it and every per-connection child it forked (SIGTERM, then SIGKILL)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
        self._process.wait()

    def kill(self) -> None:
        """Die at once, as a crashed proxy does: every connection through it drops."""
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._process.wait()

    def __enter__(self) -> Websockify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- certificate chains (root -> intermediate -> leaf), RSA or ECDSA P-256 -------------------------


@dataclass
class Chain:
    """A private CA: ``root_pem`` is what a client pins (``ca``); ``issue()`` makes server certificates."""

    directory: Path
    kind: str
    root_pem: str
    _root: Any
    _root_key: Any
    _intermediate: Any
    _intermediate_key: Any

    def issue(
        self, name: str = "localhost", *, expired: bool = False, label: str | None = None
    ) -> Certificate:
        """A leaf for ``name`` (and 127.0.0.1 and ::1) signed by the intermediate; ``cert_path`` holds
        the leaf then the intermediate (what a server sends), ``cert_pem`` the leaf alone."""
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - datetime.timedelta(days=60), now - datetime.timedelta(days=30)) if expired else (
            now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))  # fmt: skip
        key = _new_key(self.kind)
        usage = dict.fromkeys(
            ["content_commitment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only"], False)  # fmt: skip
        usage["key_encipherment"] = self.kind == "rsa"
        builder = (
            _builder(name, self._intermediate.subject, key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(name),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._intermediate_key.public_key()),
                critical=False,
            )
        )
        cert = _sign(builder, self._intermediate_key)
        stem = label or f"{self.kind}-{name}{'-expired' if expired else ''}"
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        leaf_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        cert_path.write_text(leaf_pem + self._intermediate.public_bytes(serialization.Encoding.PEM).decode())
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Certificate(leaf_pem, cert_path, key_path)


def _new_key(kind: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(kind)


def _builder(cn: str, issuer: Any, key: Any, start: Any, end: Any) -> Any:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _sign(builder: Any, key: Any) -> Any:
    """SHA-256, or SHA-384 with a P-384 key (as CAs pair them)."""
    from cryptography.hazmat.primitives import hashes

    p384 = getattr(getattr(key, "curve", None), "name", "") == "secp384r1"
    return builder.sign(key, hashes.SHA384() if p384 else hashes.SHA256())


def make_chain(directory: Path, kind: str = "rsa") -> Chain:
    """A root CA and an intermediate CA (``kind``: "rsa" 2048, "ec" P-256 or "ec384" P-384 with
    SHA-384), and ``issue()`` leaves under them."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    ca_usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    root_key = _new_key(kind)
    root_name = x509.Name(
        [x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, f"pysmtp-wasm test root ({kind})")]
    )
    root = _sign(
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_usage, critical=True),
        root_key,
    )
    intermediate_key = _new_key(kind)
    intermediate = _sign(
        _builder(f"pysmtp-wasm test intermediate ({kind})", root_name, intermediate_key, start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        ),
        root_key,
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
    (directory / f"{kind}-root.crt").write_text(root_pem)
    return Chain(directory, kind, root_pem, root, root_key, intermediate, intermediate_key)


# -- TLS alerts from the asyncio test servers ------------------------------------------------------


def _send_handshake_alerts() -> None:
    """Make aiosmtpd's (asyncio's) server side send the TLS alert of a failed handshake.

    OpenSSL writes the alert (e.g. protocol_version to a client offering only versions the server
    does not speak) and real servers send it — Postfix, Exim, ``openssl s_server``; asyncio's
    SSLProtocol closes without sending what OpenSSL wrote. The browser's "auto" TLS engine retries
    with the legacy engine only on that alert, so the test servers must behave like real ones.
    """
    import asyncio.sslproto

    cls = asyncio.sslproto.SSLProtocol
    original = cls._on_handshake_complete
    if getattr(original, "_sends_alerts", False):
        return

    def _on_handshake_complete(self: Any, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None and getattr(self, "_server_side", False):
            try:
                self._process_outgoing()  # the alert OpenSSL wrote into the outgoing BIO
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        original(self, handshake_exc)

    _on_handshake_complete._sends_alerts = True  # type: ignore[attr-defined]
    cls._on_handshake_complete = _on_handshake_complete  # type: ignore[method-assign]


_send_handshake_alerts()
