"""Servers for the end-to-end tests, each in its own thread on 127.0.0.1: the general stack
(aiosmtpd with SMTP, LMTP, STARTTLS, implicit TLS and AUTH; the proxy, and websockify) is the
package's own, ``pysmtp_wasm.testing``, the same that the pytest fixtures of
``pysmtp-wasm[testing]`` use; what only this suite needs is here: misbehaving TCP servers,
legacy TLS, certificate chains."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from pysmtp_wasm.testing import (  # noqa: F401 - the tests import them from here
    PysmtpProxy,
    Received,
    Recorder,
    SmtpServer,
    Websockify,
    free_port,
    permissive_client_context,
    wait_for_port,
)

from .certs import Certificate

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


def skip_missing(reason: str) -> NoReturn:
    """Skip a test whose browser or server is not installed here, saying why; under ``CI=true``
    (.ci/run) fail instead: a CI run must not go green by skipping what it was meant to test."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing browser or mail server fails the run)")
    pytest.skip(reason)


def off_loopback_address() -> str:
    """This machine's own IPv4 address on an interface that is not loopback (where a test server
    then listens): a connection to it stays on this machine, yet its peer address is not a
    loopback one, so it shows what the client does with a remote server, for real. Found by
    asking the kernel which source address a datagram would leave from (nothing is sent).
    Every machine that can reach a network has one; one that has none fails the test."""
    import ipaddress

    import pytest

    for probe in ("192.0.2.1", "198.51.100.1", "10.255.255.254", "172.31.255.254", "8.8.8.8"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((probe, 9))
            except OSError:
                continue
            address = str(sock.getsockname()[0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    pytest.fail("this machine has no IPv4 address off loopback: the remote-server tests need one")


def this_machine() -> tuple[str, str]:
    """This machine's own host name, and the IPv4 address it resolves to. (Debian's /etc/hosts
    maps the name to 127.0.1.1; containers to 127.0.0.1 or their own address.) WebKit serves
    its insecure-context page from it (browsers.insecure_host)."""
    name = socket.gethostname()
    address = str(socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    assert name.lower() != "localhost" and not name.startswith("127."), name
    return name, address


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

    def serve_smtp(
        self,
        ehlo: bytes = b"250-hi\r\n250 AUTH PLAIN LOGIN\r\n",
        read_message: Callable[[], bytes] | None = None,
    ) -> None:
        """Answer like a small, well-behaved SMTP server until QUIT (no greeting: the script
        sent it). Messages go to ``server.messages``: what ``read_message()`` returns, if given
        (a script that watches a message arrive), else the data up to CRLF "." CRLF."""
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
                self.server.messages.append(read_message() if read_message else self.until(b"\r\n.\r\n"))
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


# -- TLS contexts for the test servers --------------------------------------------------------------


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


def tls12_context(cert: Certificate, ciphers: str) -> ssl.SSLContext:
    """TLS 1.2 only, with exactly these (OpenSSL-named) cipher suites: a server that offers, say,
    only RSA key exchange ("AES128-GCM-SHA256") or only CBC ("ECDHE-RSA-AES128-SHA")."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


def weak_key_context(cert: Certificate) -> ssl.SSLContext:
    """Python's default server TLS, but at OpenSSL's security level 0, so that it serves a
    certificate with a key that level 2 refuses (RSA-1024)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


def client_hello_version(sock: socket.socket, timeout: float = 10) -> int | None:
    """The ``legacy_version`` of the ClientHello waiting on ``sock``, read without taking it
    (MSG_PEEK): 0x0303 from a TLS 1.2/1.3 client, 0x0302 from a TLS 1.1 one. None if the client
    closed or sent something else."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = sock.recv(16, socket.MSG_PEEK)
        if not head or head[0] != 0x16:
            return None
        if len(head) >= 11:
            return head[9] << 8 | head[10]
        time.sleep(0.01)
    return None


def modern_tls_context(cert: Certificate) -> ssl.SSLContext:
    """Python's default server settings (TLS 1.2 and newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


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
