"""The CPython transport: asyncio TCP, implicit TLS and STARTTLS, with certificate checks.

Without ``ca`` the system's trust store is used; with ``ca`` (PEM text, or a list of them)
trust is pinned to exactly those certificates, and the system store is not consulted. The
host name is checked either way, and TLS 1.2 is the minimum (Python's defaults).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from typing import Any

from ._transport import LoopTransport, TransportOwner
from .errors import SmtpConnectionError, SmtpError, SmtpTlsError

# Bytes queued in asyncio before send() reports a full buffer (asyncio's own default high
# water mark is 64 KiB; one more chunk in flight keeps the socket busy while the page
# produces the next).
WRITE_HIGH_WATER = 128 * 1024
# On close, TLS sends its close_notify and waits for the peer's: at most this long (asyncio's
# default is 30 s). Exim, after an error, never answers it, and onclose must not wait for that.
TLS_SHUTDOWN_TIMEOUT = 1.0


def make_ssl_context(ca: str | list[str] | None) -> ssl.SSLContext:
    """A client context: system roots, or only ``ca`` when given (a pin)."""
    if ca is None:
        return ssl.create_default_context()
    pem = ca if isinstance(ca, str) else "\n".join(ca)
    try:
        context = ssl.create_default_context(cadata=pem)
    except ssl.SSLError as error:
        raise SmtpTlsError(f"option ca holds no usable PEM certificate: {error}", stage="tls") from None
    # A pinned certificate is a trust anchor even when it is not a self-signed root.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _negotiated(transport: asyncio.BaseTransport) -> str | None:
    """What TLS a transport negotiated, for the transcript: "TLSv1.3, TLS_AES_256_GCM_SHA384"."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()}, {cipher[0]}" if cipher else str(ssl_object.version())


def _tls_error(error: BaseException, host: str) -> SmtpTlsError:
    if isinstance(error, ssl.SSLCertVerificationError):
        return SmtpTlsError(
            f"the certificate of {host} is not trusted: {error.verify_message or error}", stage="tls"
        )
    return SmtpTlsError(f"TLS with {host} failed: {error}", stage="tls")


class AsyncioTransport(LoopTransport, asyncio.Protocol):
    """A transport on the running asyncio loop."""

    def __init__(self, owner: TransportOwner) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise SmtpConnectionError(
                "SmtpClient.connect() needs a running asyncio loop (call it from async code)"
            ) from None
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._host = ""
        self._ca: str | list[str] | None = None
        self._paused = False
        self._closed = False

    # -- Transport ---------------------------------------------------------------------------

    def open(
        self, host: str, port: int, *, secure: bool, ca: str | list[str] | None, options: dict[str, Any]
    ) -> None:
        self._host, self._ca = host, ca
        self._task = self._loop.create_task(self._open(host, port, secure))

    def write(self, data: bytes) -> bool:
        if self._transport is None or self._transport.is_closing():
            return True
        self._transport.write(data)
        return not self._paused

    def start_tls(self) -> None:
        if self._transport is None:
            return
        # Read nothing more in plaintext: what follows "220 ready" belongs to the handshake.
        self._transport.pause_reading()
        self._task = self._loop.create_task(self._start_tls())

    def stays_local(self) -> bool:
        """Whether the peer this connection reached is a loopback address (127.0.0.0/8, ::1,
        or ::ffff:127.x): the address connected to, from the socket, not the host as written
        (a name can resolve anywhere; "localhost" too, with a hostile resolver)."""
        if self._transport is None:
            return False
        peer = self._transport.get_extra_info("peername")
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()  # connection_lost follows
        else:
            self._report_closed()

    # -- the work ------------------------------------------------------------------------------

    async def _open(self, host: str, port: int, secure: bool) -> None:
        try:
            context = make_ssl_context(self._ca) if secure else None
            await self._loop.create_connection(
                lambda: self,
                host,
                port,
                ssl=context,
                server_hostname=host if secure else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if secure else None,
            )
        except asyncio.CancelledError:
            return
        except SmtpError as error:
            self._fail(error)
        except (ssl.SSLError, ssl.CertificateError) as error:
            self._fail(_tls_error(error, host))
        except OSError as error:
            self._fail(
                SmtpConnectionError(
                    f"cannot connect to {host}:{port}: {error.strerror or error}", stage="connect"
                )
            )

    async def _start_tls(self) -> None:
        assert self._transport is not None
        try:
            context = make_ssl_context(self._ca)
            transport = await self._loop.start_tls(
                self._transport,
                self,
                context,
                server_hostname=self._host,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        except asyncio.CancelledError:
            return
        except SmtpError as error:
            self._fail(error)
            return
        except (ssl.SSLError, ssl.CertificateError, ConnectionError, OSError) as error:
            self._fail(_tls_error(error, self._host))
            return
        if transport is None:  # the connection closed during the handshake
            self._fail(
                SmtpTlsError(f"the connection to {self._host} closed during the TLS handshake", stage="tls")
            )
            return
        self._transport = transport
        self._owner._transport_tls(_negotiated(transport))

    def _fail(self, error: SmtpError) -> None:
        self._owner._transport_error(error)
        self.close()

    def _report_closed(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._transport_closed()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._owner._transport_open(_negotiated(transport))

    def data_received(self, data: bytes) -> None:
        self._owner._transport_data(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._report_closed()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._owner._transport_drain()
