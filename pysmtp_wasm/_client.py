"""``SmtpClient``: the seed's API (emailjs-smtp-client) over the sans-IO engine.

The names are the seed's, so the same object can be handed to JavaScript: methods
``connect``, ``useEnvelope``, ``send``, ``end``, ``quit``, ``close`` and callbacks ``onidle``,
``onready``, ``ondone``, ``onerror``, ``onclose``, ``ondrain`` (plus ``onlog`` for the
transcript). The client owns the timers; the transport owns the bytes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._boundary import DEFAULT_PORT, DEFAULT_PORT_IMPLICIT_TLS
from ._engine import SmtpEngine
from ._events import Done, Event, Failed, Finished, Idle, Log, Ready, RecipientResult, StartTls
from ._options import check_host, check_port, parse_options
from ._send_message import Operation, send_message
from ._state import AWAITING, BEFORE_CONNECT, CONNECT_AFTER_CLOSE, CONNECT_AGAIN, State
from ._transport import TimerHandle, Transport, TransportFactory
from .errors import (
    SmtpError,
    SmtpTimeoutError,
    SmtpUsageError,
)

if TYPE_CHECKING:
    from email.message import Message

    from ._message import SendResult

logger = logging.getLogger("pysmtp_wasm")

# The clock of the timeouts (the transports' timers run on the same: asyncio's loop.time() is
# time.monotonic()); a name of this module so that tests/test_timers.py can drive a fake one.
monotonic = time.monotonic

_GREETING_STATES = (State.CONNECTING, State.GREETING)  # the greeting's timeout runs


def _noop(*args: Any) -> None:
    return None


def _default_transport() -> tuple[TransportFactory, frozenset[str]]:
    if sys.platform == "emscripten":
        from ._browser import OPTION_NAMES, BrowserTransport

        return BrowserTransport, OPTION_NAMES
    from ._asyncio import AsyncioTransport

    return AsyncioTransport, frozenset()


class SmtpClient:
    """An SMTP (or LMTP) client connection, driven by callbacks.

    Args:
        host: the server's host name (default "localhost").
        port: the server's port (default 465 with ``useSecureTransport``, else 25).
        options: the seed's options: ``useSecureTransport``, ``name``, ``auth`` ({user,
            pass, xoauth2}), ``authMethod``, ``ca``, ``disableEscaping``, ``disableChunking``, ``ignoreTLS``,
            ``requireTLS``, ``lmtp``; ``allowInsecureAuth`` (AUTH PLAIN, LOGIN or XOAUTH2
            without TLS, unless the address connected to is a loopback one: refused
            with an :class:`SmtpTlsError` unless this is true); and the timeouts in milliseconds
            ``timeoutGreeting``, ``timeoutSocketLowerBound``, ``timeoutSocketMultiplier``.
        transport: a factory taking the client and returning a transport (default: asyncio
            in CPython, the browser socket in Pyodide).

    Set the ``on*`` attributes to callables before ``connect()``.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        transport: TransportFactory | None = None,
    ) -> None:
        if transport is None:
            transport, transport_keys = _default_transport()
        else:
            transport_keys = frozenset(getattr(transport, "OPTION_NAMES", frozenset()))
        self.options = parse_options(options, transport_keys)
        # The seed's defaults for a missing (falsy) host and port; what is given is checked.
        self.host = check_host(host or "localhost")
        implicit = self.options.use_secure_transport
        self.port = check_port(port) if port else (DEFAULT_PORT_IMPLICIT_TLS if implicit else DEFAULT_PORT)
        # What the transport would refuse at connect() (the browser's proxy URL, say), refused now.
        check_options = getattr(transport, "check_options", None)
        if check_options is not None:
            check_options(self.host, self.port, self.options)
        self._transport_factory = transport
        self._transport: Transport | None = None
        self._engine: SmtpEngine | None = None
        self._timer: TimerHandle | None = None
        self._progress_at = 0.0  # monotonic() at the last progress: the timeouts count from it
        self._written_since_reply = 0
        self._writable = True
        self._error: SmtpError | None = None
        self._closed = False
        self._operation: Operation | None = None  # a send_message under way
        self.lastResults: list[RecipientResult] = []
        self.onidle: Callable[[], Any] = _noop
        self.onready: Callable[[list[str]], Any] = _noop
        self.ondone: Callable[[bool], Any] = _noop
        self.onerror: Callable[[SmtpError], Any] = _noop
        self.onclose: Callable[[bool], Any] = _noop
        self.ondrain: Callable[[], Any] = _noop
        self._onlog: Callable[[str, str], Any] = _noop

    @property
    def onlog(self) -> Callable[[str, str], Any]:
        """The transcript callback: ``onlog(direction, text)``, direction "C", "S" or "*"."""
        return self._onlog

    @onlog.setter
    def onlog(self, callback: Callable[[str, str], Any]) -> None:
        self._onlog = callback
        self._update_transcript()

    def _update_transcript(self) -> None:
        # The engine formats transcript lines only for a listener: onlog, or this module's
        # logger at DEBUG level (checked at connect() and whenever onlog is set).
        if self._engine is not None:
            self._engine.transcript = self._onlog is not _noop or logger.isEnabledFor(logging.DEBUG)

    # -- the seed's timeout fields -----------------------------------------------------------

    @property
    def timeoutSocketLowerBound(self) -> float:  # noqa: N802 - the seed's name
        """Milliseconds to wait for any reply, before the per-byte allowance."""
        return self.options.timeout_lower_bound_ms

    @timeoutSocketLowerBound.setter
    def timeoutSocketLowerBound(self, value: float) -> None:  # noqa: N802
        self.options.timeout_lower_bound_ms = value
        self._timeouts_changed()

    @property
    def timeoutSocketMultiplier(self) -> float:  # noqa: N802 - the seed's name
        """Milliseconds of allowance per byte written since the last reply."""
        return self.options.timeout_multiplier_ms

    @timeoutSocketMultiplier.setter
    def timeoutSocketMultiplier(self, value: float) -> None:  # noqa: N802
        self.options.timeout_multiplier_ms = value
        self._timeouts_changed()

    def _timeouts_changed(self) -> None:
        # A running timer may sleep past a deadline the new value brings closer: wake it now,
        # and it works the deadline out again.
        if self._timer is not None:
            self._schedule(monotonic())

    @property
    def state(self) -> str:
        """The session's state name ("connecting", "idle", "data", "closed", ...)."""
        return self._engine.state.value if self._engine else "new"

    # -- the seed's methods -----------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection; ``onidle`` follows when the session is ready."""
        if self._engine is not None:
            raise SmtpUsageError(CONNECT_AGAIN)
        if self._closed:
            raise SmtpUsageError(CONNECT_AFTER_CLOSE)
        self._engine = SmtpEngine(self.options, host=self.host)
        self._update_transcript()
        self._transport = self._transport_factory(self)
        self._log(
            "*",
            f"connecting to {self.host}:{self.port}"
            + (" (TLS)" if self.options.use_secure_transport else ""),
        )
        self._transport.open(
            self.host,
            self.port,
            secure=self.options.use_secure_transport,
            ca=self.options.ca,
            options=self.options.extra,
        )
        self._rearm()

    def useEnvelope(self, envelope: Mapping[str, Any]) -> None:  # noqa: N802 - the seed's name
        """Send MAIL FROM, RCPT TO and DATA (with CHUNKING: no DATA, the message goes in BDAT
        chunks); ``onready(failedRecipients)`` follows.

        ``envelope``: ``from``, ``to`` (a string or a list), ``size`` (bytes, sent as SIZE=),
        ``dsn`` (RFC 3461: ``{"notify": ["SUCCESS", "FAILURE", "DELAY"] or ["NEVER"], "ret":
        "FULL" or "HDRS", "envid": str, "orcpt": address}``; refused when the server does not
        offer DSN), ``binary`` (True: ``BODY=BINARYMIME``, the bytes sent unchanged in BDAT
        chunks; refused unless the server offers BINARYMIME, CHUNKING and PIPELINING).

        An envelope that cannot be sent (no recipients, an unsafe address, ...) is reported
        through ``onerror`` with a :class:`SmtpEnvelopeError`: nothing of it is sent, the
        session ends with QUIT, and ``onclose(true)`` follows, as after every error. Calling it
        outside ``onidle``'s state raises :class:`SmtpUsageError` (and changes nothing).
        """
        self._after(self._require_engine("useEnvelope").use_envelope(envelope))

    def send(self, chunk: bytes | str) -> bool:
        """Stream a chunk of the message. Returns False when the buffer is full: then wait
        for ``ondrain`` before sending more (you may send more, it is only buffered)."""
        self._require_engine("send").send(chunk)
        if self._flush() and not self._writable:
            self._rearm()  # the network now owes us progress
        return self._writable

    def end(self) -> None:
        """End the message; ``ondone(success)`` follows."""
        self._after(self._require_engine("end").end())

    def quit(self) -> None:
        """Say QUIT (after the current step) and close; ``onclose(false)`` follows."""
        self._after(self._require_engine("quit").quit())

    def close(self) -> None:
        """Close the connection at once; ``onclose(false)`` follows (also when never connected)."""
        if self._closed:
            return
        if self._engine is None:
            self._closed = True
            self._call(self.onclose, False)
            return
        self._engine.close()
        self._cancel_timer()
        assert self._transport is not None
        self._transport.close()

    # -- the high-level API --------------------------------------------------------------------

    async def send_message(
        self,
        msg: Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        progress: Callable[[int, int], Any] | None = None,
        dsn: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Send an ``email.message.EmailMessage``; connect first if needed.

        The envelope comes from the message (From or Sender; To, Cc and Bcc) unless given;
        Bcc headers are not sent; SMTPUTF8 is used when an address is not ASCII. ``dsn``
        requests delivery status notifications as ``useEnvelope``'s ``dsn`` does
        (``{"notify": [...], "ret": ..., "envid": ..., "orcpt": ...}``, RFC 3461).
        ``progress(sent, total)`` is called as the message streams (in 64 KiB pieces,
        honouring backpressure). The connection stays open and idle afterwards: send more,
        or ``quit()``.

        While it runs, ``onidle``, ``onready``, ``ondone`` and ``ondrain`` are not called;
        ``onerror``, ``onclose`` and ``onlog`` are. Raises :class:`SmtpError`: an
        :class:`SmtpReplyError` when the server refuses the message at its end (the
        connection stays idle); an :class:`SmtpEnvelopeError` at once when the message has no
        From (and no ``sender`` is given); any other error came through ``onerror`` and is
        raised after ``onclose(true)``. When the connection is closed (after an error,
        ``quit()`` or ``close()``), the next call opens a new one by itself.
        """
        return await send_message(self, msg, sender=sender, recipients=recipients, progress=progress, dsn=dsn)

    def _forget_connection(self) -> None:
        """Back to "new" after a closed connection, so that ``send_message`` can connect again."""
        self._cancel_timer()
        self._engine = None
        self._transport = None
        self._written_since_reply = 0
        self._writable = True
        self._error = None
        self._closed = False

    # -- reports from the transport -------------------------------------------------------

    def _transport_open(self, tls: str | None = None) -> None:
        if self._engine is None or self._engine.state is not State.CONNECTING:
            return
        self._log("*", f"connected with {tls}" if tls else "connected")
        assert self._transport is not None
        self._engine.stays_local = self._transport.stays_local()
        self._after(self._engine.connection_made(), rearm=True)

    def _transport_data(self, data: bytes) -> None:
        engine = self._engine
        if engine is None:
            return
        seen = engine.replies_received
        events = engine.receive_data(data)
        progressed = engine.replies_received != seen
        if progressed:
            self._written_since_reply = 0
        self._after(events, rearm=progressed)

    def _transport_tls(self, tls: str | None = None) -> None:
        if self._engine is None or self._engine.state is not State.TLS:
            return
        if tls:
            self._log("*", tls)
        self._after(self._engine.tls_established(), rearm=True)

    def _transport_drain(self) -> None:
        self._writable = True
        self._rearm()
        if self._engine is not None and self._engine.state is State.DATA:
            self._notify("drain", self.ondrain)

    def _transport_error(self, error: SmtpError) -> None:
        if self._engine is None:
            return
        self._after(self._engine.fail(error))

    def _transport_closed(self) -> None:
        if self._closed:
            return
        if self._engine is not None:
            self._after(self._engine.connection_lost())
        self._closed = True
        self._cancel_timer()
        self._log("*", "connection closed")
        self._call(self.onclose, self._error is not None)
        if self._operation is not None:
            self._operation.connection_closed()

    # -- internals --------------------------------------------------------------------------

    def _require_engine(self, call: str) -> SmtpEngine:
        if self._engine is None:
            raise SmtpUsageError(BEFORE_CONNECT.format(call=call))
        return self._engine

    def _after(self, events: list[Event], rearm: bool = False) -> None:
        """Write what the engine wants written, then act on its events in order."""
        if self._flush() or rearm:
            self._rearm()
        if events:
            on_event = _ON_EVENT
            for event in events:
                on_event[type(event)](self, event)  # (by exact type: the events are final classes)

    def _flush(self) -> bool:
        data = self._engine.data_to_send()  # type: ignore[union-attr] # (every caller has one)
        if not data or self._transport is None or self._closed:
            return False
        self._written_since_reply += len(data)
        if not self._transport.write(data):
            self._writable = False
        return True

    # What each event does (_ON_EVENT, after the class, maps each event type to its method).

    def _on_log_event(self, event: Log) -> None:
        self._log(event.direction, event.text)

    def _on_idle(self, event: Idle) -> None:
        # A quit() or useEnvelope() in ondone means the session is no longer idle.
        if self._engine is not None and self._engine.state is State.IDLE:
            self._notify("idle", self.onidle)

    def _on_ready(self, event: Ready) -> None:
        self._notify("ready", self.onready, event.failed_recipients)

    def _on_done(self, event: Done) -> None:
        self.lastResults = event.results
        self._notify("done", self.ondone, event.success)

    def _on_start_tls(self, event: StartTls) -> None:
        assert self._transport is not None
        self._transport.start_tls()

    def _on_failed(self, event: Failed) -> None:
        assert self._transport is not None
        self._error = event.error
        if not event.quitting:
            self._cancel_timer()  # (with QUIT under way, its timer runs on)
        self._log("*", f"error: {event.error}")
        self._call(self.onerror, event.error)
        if self._operation is not None:
            self._operation.fail(event.error)
        if not event.quitting:
            self._transport.close()  # onclose(true) follows when the transport reports it

    def _on_finished(self, event: Finished) -> None:
        assert self._transport is not None
        self._cancel_timer()
        self._transport.close()

    def _notify(self, what: str, callback: Callable[..., Any], *args: Any) -> None:
        """A step of the session: to a running ``send_message`` if there is one, else to the page."""
        if self._operation is not None:
            self._operation.deliver(what, *args)
        else:
            self._call(callback, *args)

    def _rearm(self) -> None:
        """Progress: restart the timeout for what the server or the network owes us now.

        It restarts when a command is written and when a complete reply arrives, never on a
        partial reply: a server that drips one byte a second still times out.

        Only the time of the progress is noted here (a reply's whole share of the timeouts).
        The deadline is worked out when the one timer fires, from the state then: the lower
        bound (the greeting's timeout while it is owed) plus the allowance per byte written
        since the last reply, counted from the last progress. A timer never sleeps past the
        shortest timeout (:meth:`_longest_sleep`), so a deadline that progress moves earlier
        is still met: the timer wakes, finds it not due, and sleeps again for the rest. (Each
        timer is a setTimeout across the FFI in the browser: a message would otherwise cost a
        dozen; now it costs none.)
        """
        self._progress_at = monotonic()
        if self._timer is None and self._transport is not None and not self._closed:
            self._schedule(self._progress_at + self._longest_sleep())

    def _deadline(self) -> float | None:
        """When the current wait times out (monotonic()), or None when nothing is owed."""
        engine = self._engine
        if engine is None or self._closed or self._transport is None or engine.state is State.CLOSED:
            return None
        state = engine.state
        options = self.options
        if state in _GREETING_STATES:
            base = options.timeout_greeting_ms
        elif state in AWAITING or not self._writable:
            base = options.timeout_lower_bound_ms
        else:
            return None  # (idle, or the page streams into a writable buffer: nothing is owed)
        # The seed's rule: a lower bound plus an allowance per byte written since the last
        # reply (for the end of data, the whole message).
        allowance = options.timeout_multiplier_ms * self._written_since_reply
        return self._progress_at + (base + allowance) / 1000

    def _longest_sleep(self) -> float:
        """The longest a timer may sleep: the shortest timeout, in seconds. Every deadline is
        at least that far after the progress that sets it, so no progress to come can bring a
        deadline before a timer set now."""
        options = self.options
        return min(options.timeout_greeting_ms, options.timeout_lower_bound_ms) / 1000

    def _schedule(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._transport is not None
        self._timer = self._transport.call_later(max(0.0, due - monotonic()), self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        engine = self._engine
        deadline = self._deadline()
        if engine is None or deadline is None:
            return  # nothing is owed now: the next progress sets a timer again
        now = monotonic()
        if deadline > now + 0.001:
            # Progress moved the deadline since this timer was set: sleep for the rest.
            self._schedule(min(deadline, now + self._longest_sleep()))
            return
        waited = {
            State.CONNECTING: "connecting",
            State.GREETING: "the greeting",
            State.TLS: "the TLS handshake",
            State.DATA: "the network to take the message data",
        }.get(engine.state, f"a reply ({engine.state.value})")
        self._after(engine.fail(SmtpTimeoutError(f"timed out waiting for {waited}", stage=engine.stage)))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _log(self, direction: str, text: str) -> None:
        logger.debug("%s: %s", direction, text)
        self._call(self._onlog, direction, text)

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        # A callback that raises must not leave the session half-updated: report and go on,
        # as a browser does with an event handler that throws.
        try:
            callback(*args)
        except Exception:
            logger.exception("an exception escaped from %s", getattr(callback, "__name__", "a callback"))


_ON_EVENT: dict[type[Event], Callable[[SmtpClient, Any], None]] = {
    Log: SmtpClient._on_log_event,
    Idle: SmtpClient._on_idle,
    Ready: SmtpClient._on_ready,
    Done: SmtpClient._on_done,
    StartTls: SmtpClient._on_start_tls,
    Failed: SmtpClient._on_failed,
    Finished: SmtpClient._on_finished,
}
