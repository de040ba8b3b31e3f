"""The relay: one WebSocket, one TCP connection, and backpressure both ways.

It works at the level of the two asyncio protocols, with no task and no queue of its own: each
binary frame websockets parses from the page is written to the target's transport as it comes
(``ProxyConnection.process_event`` hands it over), and each chunk the target sends becomes one
binary frame written to the page's transport. Backpressure is the transports' own flow control:

- page -> target: when the target's socket buffer goes over TARGET_WRITE_LIMIT, its transport
  calls ``pause_writing`` and we stop reading the page's socket; ``resume_writing`` resumes it.
- target -> page: when the page's socket buffer goes over the WebSocket write limit, we stop
  reading the target's socket until the page's transport says it has drained.

So a session holds a bounded amount of memory whatever either end does (a page that sends
faster than the server reads, a server that writes to a page that does not read): the other
side is paused, never buffered without limit. Frames from the page that come before the target
is connected (a TLS ClientHello, sent as soon as the WebSocket opens) wait in ``pending``, which
pauses the page's socket too once it holds TARGET_WRITE_LIMIT bytes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from websockets.protocol import State

from ._admission import FRAME_TOO_BIG, TEXT_FRAME, Refusal, close_reason
from ._config import Target

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

# The target's socket: we stop reading the page above this many unsent bytes to the target.
TARGET_WRITE_LIMIT = 64 * 1024
# How long a WebSocket close may take before the connection is simply dropped.
CLOSE_TIMEOUT = 5.0


class Session:
    """One relayed WebSocket: who, where to, how much, since when, how it ended, and the two
    ends' transports."""

    __slots__ = ("ws", "client", "token", "target", "subject", "started", "wall_started", "last",
                 "to_target", "to_client", "reported_to_target", "reported_to_client", "end",
                 "close_code", "detail", "target_transport", "pending", "pending_size", "held_by_target",
                 "held_by_pending", "paused_target", "loop")  # fmt: skip

    def __init__(self, ws: ServerConnection, client: str, token: str, target: Target, subject: str) -> None:
        self.ws = ws
        self.client = client
        self.token = token
        self.target = target
        self.subject = subject
        self.loop = asyncio.get_running_loop()
        self.wall_started = time.time()
        self.started = self.last = self.loop.time()
        self.to_target = self.to_client = 0
        self.reported_to_target = self.reported_to_client = 0  # what the metrics have been told
        self.end: str | None = None
        self.close_code: int | None = None
        self.detail = ""
        self.target_transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # from the page, before the target is connected
        self.pending_size = 0
        # Why the page's socket is not read: the target's buffer is full; frames wait for the target.
        self.held_by_target = self.held_by_pending = False
        self.paused_target = False  # the target's socket is not read: the page's buffer is full

    def finish(self, end: str, code: int | None = None, detail: str = "") -> bool:
        """Record how the session ended; the first cause wins. True if this one did."""
        if self.end is not None:
            return False
        self.end, self.close_code, self.detail = end, code, detail
        return True

    def terminate(self, end: str, code: int, text: str, detail: str = "") -> None:
        """End it (idle timeout, drain, the target's end, a text frame): close the WebSocket
        with ``code``; the handler then closes the TCP connection behind it."""
        if self.finish(end, code, detail):
            self.loop.create_task(close_or_drop(self.ws, code, text))

    # -- page -> target --------------------------------------------------------------------------

    def from_page(self, data: bytes) -> None:
        """A binary frame (or a fragment of one) from the page."""
        if self.end is not None:
            return  # closing: nothing more goes to the target
        self.to_target += len(data)
        self.last = self.loop.time()
        if self.target_transport is None:
            self.pending.append(bytes(data))
            self.pending_size += len(data)
            if self.pending_size > TARGET_WRITE_LIMIT:
                self.pause_page(pending=True)
            return
        self.target_transport.write(data)

    def text_from_page(self) -> None:
        self.terminate("text_frame", TEXT_FRAME, "text_frame: this proxy relays binary frames only")

    def pause_page(self, pending: bool = False) -> None:
        if not (self.held_by_target or self.held_by_pending):
            self.ws.transport.pause_reading()
        if pending:
            self.held_by_pending = True
        else:
            self.held_by_target = True

    def resume_page(self, pending: bool = False) -> None:
        held = self.held_by_target or self.held_by_pending
        if pending:
            self.held_by_pending = False
        else:
            self.held_by_target = False
        if held and not (self.held_by_target or self.held_by_pending) and not self.ws.transport.is_closing():
            self.ws.transport.resume_reading()

    def connected(self, transport: asyncio.Transport) -> None:
        self.target_transport = transport
        for data in self.pending:
            transport.write(data)
        self.pending.clear()
        self.pending_size = 0
        self.resume_page(pending=True)

    # -- target -> page --------------------------------------------------------------------------

    def from_target(self, data: bytes) -> None:
        ws = self.ws
        if self.end is not None or ws.protocol.state is not State.OPEN:
            return
        self.to_client += len(data)
        self.last = self.loop.time()
        ws.protocol.send_binary(data)
        for chunk in ws.protocol.data_to_send():
            ws.transport.write(chunk)  # may call ProxyConnection.pause_writing: see page_full

    def page_full(self) -> None:
        """The page's socket buffer is over the limit: stop reading the target."""
        if self.target_transport is not None and not self.paused_target:
            self.paused_target = True
            self.target_transport.pause_reading()

    def page_drained(self) -> None:
        if self.target_transport is not None and self.paused_target:
            self.paused_target = False
            if not self.target_transport.is_closing():
                self.target_transport.resume_reading()

    def close_target(self) -> None:
        """The page's side is over: close the TCP connection (after what is buffered is written:
        a FIN; but a target that reads nothing would keep it for ever, so that one is reset)."""
        transport = self.target_transport
        if transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()


class TargetProtocol(asyncio.Protocol):
    """The TCP connection to the target, relaying into its session."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_write_buffer_limits(TARGET_WRITE_LIMIT)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.session.from_target(data)

    def eof_received(self) -> bool:
        self.session.terminate("target_closed", 1000, "")
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if exc is not None:
            why = str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.strerror:
                why = exc.strerror
            session.terminate("target_error", 1011, f"target_error: {why}", why)
        else:
            session.terminate("target_closed", 1000, "")
        session.resume_page()

    def pause_writing(self) -> None:
        self.session.pause_page()

    def resume_writing(self) -> None:
        self.session.resume_page()


async def close_or_drop(ws: ServerConnection, code: int, text: str) -> None:
    """Close the WebSocket with ``code``; drop the connection if that takes longer than
    CLOSE_TIMEOUT (a page that reads nothing never lets the close frame out)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code, close_reason(text))
    except TimeoutError:
        ws.transport.abort()
    except Exception:
        pass


async def relay(session: Session, connect_timeout: float) -> None:
    """Connect to the target, relay until either end closes, then close both."""
    ws, target = session.ws, session.target
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            transport, _ = await loop.create_connection(
                lambda: TargetProtocol(session), target.host, target.port
            )
    except TimeoutError:
        refusal = Refusal("target_timeout", f"to {target}")
        session.finish("target_timeout", refusal.close_code)
        await close_or_drop(ws, refusal.close_code, refusal.text)
        return
    except OSError as error:
        # asyncio words a refused connection "Connect call failed ('127.0.0.1', 25)": the
        # system's own words say it better, and the address is ours to write.
        why = os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
        refusal = Refusal("target_unreachable", f"to {target}: {why}")
        session.finish("target_unreachable", refusal.close_code, why)
        await close_or_drop(ws, refusal.close_code, refusal.text)
        return
    session.connected(transport)
    try:
        await ws.wait_closed()
    finally:
        session.close_target()
    # How the WebSocket ended, when nothing on our side ended it first (the target, idle, drain).
    sent, received = ws.protocol.close_sent, ws.protocol.close_rcvd
    code = sent.code if sent is not None else received.code if received is not None else 1006
    if sent is not None and sent.code == FRAME_TOO_BIG:
        session.finish("frame_too_big", FRAME_TOO_BIG, sent.reason)
    elif sent is not None and sent.code in (1002, 1007, 1008) and received is None:
        session.finish("client_error", sent.code, sent.reason)
    else:
        session.finish("client_closed", code)
