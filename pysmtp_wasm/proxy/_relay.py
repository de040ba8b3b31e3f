"""The relay: one WebSocket, one TCP connection, two pumps, and backpressure both ways.

- page -> target: a frame is written to the TCP connection, then ``drain()`` waits while the
  target's socket buffer is over its high-water mark; meanwhile websockets' receive queue fills
  to its own high-water mark (``max_queue`` frames) and then stops reading from the page.
- target -> page: at most ``READ_CHUNK`` bytes are read, then ``send()`` waits while the page's
  socket buffer is over ``write_limit``; meanwhile the StreamReader pauses the target's socket
  once it holds ``2 * READ_CHUNK`` bytes.

So a session holds a bounded amount of memory whatever either end does: a page that sends
faster than the server reads, or a server that writes to a page that does not read, is paused,
never buffered without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from ._admission import FRAME_TOO_BIG, TEXT_FRAME, Refusal, close_reason
from ._config import Target

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

# What one read from the target returns at most, and (twice) what its reader buffers.
READ_CHUNK = 64 * 1024
# The target's socket: drain() waits above this many unsent bytes.
TARGET_WRITE_LIMIT = 64 * 1024
# How long a WebSocket close may take before the connection is simply dropped.
CLOSE_TIMEOUT = 5.0


class Session:
    """One relayed WebSocket: who, where to, how much, since when, and how it ended."""

    __slots__ = ("ws", "client", "token", "target", "subject", "started", "wall_started", "last",
                 "to_target", "to_client", "reported_to_target", "reported_to_client", "end",
                 "close_code", "detail")  # fmt: skip

    def __init__(self, ws: ServerConnection, client: str, token: str, target: Target, subject: str) -> None:
        self.ws = ws
        self.client = client
        self.token = token
        self.target = target
        self.subject = subject
        self.wall_started = time.time()
        self.started = self.last = asyncio.get_running_loop().time()
        self.to_target = self.to_client = 0
        self.reported_to_target = self.reported_to_client = 0  # what the metrics have been told
        self.end: str | None = None
        self.close_code: int | None = None
        self.detail = ""

    def finish(self, end: str, code: int | None = None, detail: str = "") -> bool:
        """Record how the session ended; the first cause wins. True if this one did."""
        if self.end is not None:
            return False
        self.end, self.close_code, self.detail = end, code, detail
        return True

    def terminate(self, end: str, code: int, text: str) -> None:
        """End it from outside (idle timeout, drain): close the WebSocket with ``code``; the
        pumps then stop, and the TCP connection is closed behind them."""
        if self.finish(end, code):
            asyncio.get_running_loop().create_task(self._close(code, text))

    async def _close(self, code: int, text: str) -> None:
        await close_or_drop(self.ws, code, text)


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
    """Connect to the target, then pump both ways until either end closes; then close both."""
    ws, target = session.ws, session.target
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port, limit=READ_CHUNK)
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
    writer.transport.set_write_buffer_limits(TARGET_WRITE_LIMIT)
    downstream = asyncio.get_running_loop().create_task(_target_to_client(session, reader))
    try:
        await _client_to_target(session, writer)
    finally:
        # After what is buffered is written, a FIN; but a target that reads nothing would keep
        # the socket (and its buffer) for ever: that one is reset.
        if writer.transport.get_write_buffer_size():
            writer.transport.abort()
        else:
            writer.transport.close()
        if not downstream.done():
            downstream.cancel()
        with contextlib.suppress(BaseException):
            await downstream


async def _client_to_target(session: Session, writer: asyncio.StreamWriter) -> None:
    ws = session.ws
    loop = asyncio.get_running_loop()
    try:
        async for message in ws:
            if isinstance(message, str):
                session.finish("text_frame", TEXT_FRAME)
                await close_or_drop(ws, TEXT_FRAME, "text_frame: this proxy relays binary frames only")
                return
            writer.write(message)
            session.to_target += len(message)
            session.last = loop.time()
            if writer.transport.get_write_buffer_size() > TARGET_WRITE_LIMIT:
                # Wait for the target to read; but not after the page has gone away.
                drained = asyncio.ensure_future(writer.drain())
                await asyncio.wait((drained, ws.connection_lost_waiter), return_when=asyncio.FIRST_COMPLETED)
                if not drained.done():
                    drained.cancel()
                    break
                drained.result()
    except ConnectionClosed:
        pass
    except OSError as error:  # the target's side failed while we wrote to it
        if session.finish("target_error", 1011, error.strerror or str(error)):
            await close_or_drop(ws, 1011, f"target_error: {error.strerror or error}")
        return
    # The WebSocket is closed: by the page, by websockets (a protocol error, a frame too big),
    # or by us (the target closed; idle timeout; drain), in which case the end is already set.
    sent, received = ws.protocol.close_sent, ws.protocol.close_rcvd
    code = sent.code if sent is not None else received.code if received is not None else 1006
    if sent is not None and sent.code == FRAME_TOO_BIG:
        session.finish("frame_too_big", FRAME_TOO_BIG, sent.reason)
    elif sent is not None and sent.code in (1002, 1007, 1008) and received is None:
        session.finish("client_error", sent.code, sent.reason)
    else:
        session.finish("client_closed", code)


async def _target_to_client(session: Session, reader: asyncio.StreamReader) -> None:
    ws = session.ws
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(READ_CHUNK):
            session.to_client += len(data)
            session.last = loop.time()
            await ws.send(data)
    except ConnectionClosed:
        return  # the page's side ended first: _client_to_target records how
    except OSError as error:
        if session.finish("target_error", 1011, error.strerror or str(error)):
            await close_or_drop(ws, 1011, f"target_error: {error.strerror or error}")
        return
    if session.finish("target_closed", 1000):
        await close_or_drop(ws, 1000, "")
