"""What a transport is: the TCPSocket shape of the seed's world, seen from Python.

A transport moves bytes and nothing else. It reports to its owner (the client) through the
:class:`TransportOwner` methods, and the client drives it through :class:`Transport`. The
asyncio transport (CPython) and the browser transport (Pyodide, over the JS socket) both fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .errors import SmtpError


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class TransportOwner(Protocol):
    """The calls a transport makes, each at most once per happening, on the event loop."""

    def _transport_open(self, tls: str | None = None) -> None:
        """Connected (for implicit TLS: after the handshake and the certificate check; ``tls``
        then says what was negotiated, for the transcript)."""

    def _transport_data(self, data: bytes) -> None:
        """Bytes arrived (plaintext; after STARTTLS, decrypted)."""

    def _transport_tls(self, tls: str | None = None) -> None:
        """The STARTTLS handshake succeeded and the certificate is trusted (``tls``: what was
        negotiated, for the transcript)."""

    def _transport_drain(self) -> None:
        """The write buffer, full before, has room again."""

    def _transport_error(self, error: SmtpError) -> None:
        """Connecting, TLS or the network failed; a close follows."""

    def _transport_closed(self) -> None:
        """The connection is closed (by either side); nothing more will be reported."""


class Transport(Protocol):
    def open(
        self, host: str, port: int, *, secure: bool, ca: str | list[str] | None, options: dict[str, Any]
    ) -> None:
        """Start connecting; report with ``_transport_open`` or ``_transport_error``."""

    def write(self, data: bytes) -> bool:
        """Queue bytes; False when the buffer is full (wait for ``_transport_drain``)."""

    def start_tls(self) -> None:
        """Upgrade to TLS now; nothing already received in plaintext may be kept."""

    def close(self) -> None:
        """Close; ``_transport_closed`` follows (at once if nothing is open)."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``seconds`` on the same loop as the reports."""

    def stays_local(self) -> bool:
        """Whether what is written in cleartext never leaves this machine (then AUTH may send a
        password without TLS): decided from the address actually connected to, never from a
        host name as written. Asked when the connection is made (``_transport_open``)."""


# A transport class (the factory) may also have a static ``check_options(host, port, options)``,
# which the client calls when it is made: it raises SmtpUsageError for what the transport would
# refuse at connect() (the browser's proxy URL, say), so that a configuration error shows at once.
TransportFactory = Callable[[TransportOwner], Transport]


class LoopTransport:
    """What both transports do the same way: timers on their asyncio loop."""

    _loop: Any
    _owner: Any

    def close(self) -> None:
        raise NotImplementedError

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_later(seconds, callback)  # type: ignore[no-any-return]
