"""The high-level send (``SmtpClient.send_message``, and ``sendMail`` in JavaScript): one
``email.message.Message`` on a client, connecting first when needed, as the seed's calls
(``connect``, ``useEnvelope``, ``send``, ``end``) awaited one event at a time.

It drives the client only through the calls and the few hooks that :class:`Session` names, so
it imports nothing of ``_client`` (which imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._events import RecipientResult
from ._state import State
from .errors import SmtpConnectionError, SmtpError, SmtpReplyError, SmtpUsageError

if TYPE_CHECKING:
    from email.message import Message

    from ._message import SendResult

# The states in which a connection has ended or is ending (QUIT said), as ``Session.state``
# names them.
_ENDING = (State.CLOSED.value, State.QUIT.value)
_IN_FLIGHT = (State.ENVELOPE.value, State.DATA.value, State.DATA_END.value)


class Session(Protocol):
    """What :func:`send_message` drives: an ``SmtpClient``."""

    lastResults: list[RecipientResult]  # noqa: N815 - the seed's name
    _operation: Operation | None  # the send under way, told of each event by the client
    _closed: bool  # onclose was called: the connection is over

    @property
    def state(self) -> str: ...

    def connect(self) -> None: ...

    def useEnvelope(self, envelope: Mapping[str, Any]) -> None: ...  # noqa: N802 - the seed's name

    def send(self, chunk: bytes | str) -> bool: ...

    def end(self) -> None: ...

    def _forget_connection(self) -> None: ...


class Operation:
    """A high-level send in progress: it waits for one event at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._expect: str | None = None
        self._future: asyncio.Future[Any] | None = None
        self.error: SmtpError | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._awaiting_close = False

    async def until_closed(self) -> None:
        """Wait for the transport to report the connection closed (``onclose`` was called)."""
        self._awaiting_close = True
        try:
            await self._closed
        finally:
            self._awaiting_close = False

    def connection_closed(self) -> None:
        """The connection closed: an error for a step under way, unless that close was awaited."""
        if not self._awaiting_close:
            self.fail(SmtpConnectionError("the connection closed", stage="closed"))
        if not self._closed.done():
            self._closed.set_result(None)

    def arm(self, what: str) -> asyncio.Future[Any]:
        """Expect ``what`` next ("idle", "ready", "drain", "done"); await the future after acting."""
        self._expect = what
        self._future = self._loop.create_future()
        if self.error is not None:
            self._future.set_exception(self.error)
        return self._future

    def deliver(self, what: str, value: Any = None) -> None:
        if self._expect == what and self._future is not None and not self._future.done():
            self._expect = None
            self._future.set_result(value)

    def fail(self, error: SmtpError) -> None:
        if self.error is None:
            self.error = error
        if self._future is not None and not self._future.done():
            self._future.set_exception(error)


async def send_message(
    client: Session,
    msg: Message,
    *,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    dsn: Mapping[str, Any] | None = None,
) -> SendResult:
    """``SmtpClient.send_message`` (its docstring says what it does)."""
    from ._message import CHUNK_SIZE, SendResult, prepare

    if client._operation is not None:
        raise SmtpUsageError("send_message() is already running on this client")
    prepared = prepare(msg, sender, recipients)
    operation = client._operation = Operation()
    try:
        await _until_idle(client, operation)
        ready = operation.arm("ready")
        envelope: dict[str, Any] = {"from": prepared.sender, "to": prepared.recipients}
        if dsn is not None:
            envelope["dsn"] = dsn
        client.useEnvelope(envelope)
        await ready
        data, total = prepared.data, len(prepared.data)
        for offset in range(0, total, CHUNK_SIZE):
            drained = operation.arm("drain")
            if not client.send(data[offset : offset + CHUNK_SIZE]):
                await drained
            if progress is not None:
                progress(min(offset + CHUNK_SIZE, total), total)
        done = operation.arm("done")
        client.end()
        success = await done
    except SmtpError:
        if client.state in _ENDING:
            # The session ends with this error: raise once onclose(true) has been called, so
            # that the next call finds the client closed and connects anew.
            if not client._closed:
                await operation.until_closed()
        raise
    finally:
        client._operation = None
    results = client.lastResults
    if not success:
        refused = next((r for r in results if not r.accepted), None)
        raise SmtpReplyError(
            "the server refused the message" + (f": {refused.code} {refused.message}" if refused else ""),
            code=refused.code if refused else None,
            enhanced=refused.enhanced if refused else None,
            stage="DATA",
        )
    return SendResult(
        accepted=[r.recipient for r in results if r.accepted],
        rejected=[r.recipient for r in results if not r.accepted],
        results=results,
        message_id=prepared.message_id,
        size=total,
    )


async def _until_idle(client: Session, operation: Operation) -> None:
    state = client.state
    if client._closed or state in _ENDING:
        # A connection that ended (or is ending): wait for its onclose, then a new one.
        if not client._closed:
            await operation.until_closed()
        client._forget_connection()
        state = client.state
    if state == "new":
        idle = operation.arm("idle")
        client.connect()
        await idle
        return
    if state == State.IDLE.value:
        return
    if state in _IN_FLIGHT:
        raise SmtpUsageError(f"a message is already in flight on this client (state: {state})")
    await operation.arm("idle")  # the session is still being set up
