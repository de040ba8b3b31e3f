"""One proxy process: the websockets server, admission at the handshake, the sessions, the idle
sweep, SIGHUP (reload) and SIGTERM (drain). ``--workers N`` runs N of these (_workers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from ._admission import REASONS, Admitted, Ledger, Refusal, admit, client_address
from ._admission import Request as AdmissionRequest
from ._config import Config, ConfigError, Target, read_targets, read_ticket_key
from ._operations import Metrics, log
from ._relay import CLOSE_TIMEOUT, Session, close_or_drop, relay

# WebSocket frames from the page wait in websockets' queue up to this many (then it stops reading
# the page's socket until the queue is down to the second figure): with --max-frame, what bounds
# a session's memory on the page's side.
MAX_QUEUE = (4, 1)
# The page's socket: send() waits above this many unsent bytes.
CLIENT_WRITE_LIMIT = 64 * 1024


NO_HEADERS = Headers()


class NotReceiving:
    """Stands for websockets' receive queue (``Assembler``) on a relayed connection, where no
    frame is queued and ``recv()`` is never called; websockets closes it when the connection
    ends."""

    def close(self) -> None:
        pass

    def put(self, frame: Frame) -> None:
        raise AssertionError("a relayed connection queues no frame")


NOT_RECEIVING = NotReceiving()


class LedgerLike(Protocol):
    """Where the session limits are kept: in this process, or shared by the workers."""

    async def acquire(self, address: str) -> Refusal | None: ...
    def release(self, address: str) -> None: ...


class LocalLedger:
    def __init__(self, config: Config) -> None:
        self.ledger = Ledger(config)

    async def acquire(self, address: str) -> Refusal | None:
        return self.ledger.acquire(address)

    def release(self, address: str) -> None:
        self.ledger.release(address)


class ProxyConnection(ServerConnection):
    """websockets' connection, with what admission decided about it, and the relay's hooks: its
    data frames go to the session (not to websockets' receive queue: nobody calls ``recv()``),
    and its transport's flow control pauses and resumes the target."""

    session: Session | None = None
    refusal: Refusal | None = None
    on_lost: Callable[[], None] | None = None  # gives the session's place back to the ledger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A list does what this deque does here (append, remove, iterate) in 56 bytes, not 600:
        # 6 MB at 10,000 sessions.
        self.drain_waiters = []  # type: ignore[assignment]

    def forget_handshake(self) -> None:
        """Once a session is relayed, let go of what websockets keeps for the connection's life
        and nothing uses again: the handshake's headers (about 3 KB) and the receive queue that
        ``recv()`` would read (2.3 KB; the relay takes the frames before it): 50 MB at 10,000
        sessions."""
        if self.request is not None:
            self.request.headers = NO_HEADERS
        self.response = None
        self.recv_messages = NOT_RECEIVING  # type: ignore[assignment]

    def process_event(self, event: Event) -> None:
        session = self.session
        if session is not None and isinstance(event, Frame):
            if event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                session.from_page(event.data)  # type: ignore[arg-type]
                return
            if event.opcode is Opcode.TEXT:
                session.text_from_page()
                return
        super().process_event(event)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.session is not None:
            self.session.page_full()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.session is not None:
            self.session.page_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost()


class JsonLogHandler(logging.Handler):
    """websockets' own warnings and errors, as JSON lines beside ours."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"level": record.levelname.lower(), "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = repr(record.exc_info[1])
        log("library", logger=record.name, **fields)


class Proxy:
    """The state of one process: the configuration, what the files said last, the sessions."""

    def __init__(self, config: Config, ledger: LedgerLike, metrics: Metrics) -> None:
        self.config = config
        self.ledger = ledger
        self.metrics = metrics
        self.targets: dict[str, Target] = read_targets(config.targets_file)
        self.ticket_key = read_ticket_key(config.ticket_key_file) if config.ticket_key_file else None
        self.sessions: set[Session] = set()
        self.draining = False
        self.server: Server | None = None
        self.stopped = asyncio.Event()

    # -- configuration ------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the targets (and the key) again; open sessions keep their target. A file
        that does not parse changes nothing."""
        try:
            targets = read_targets(self.config.targets_file)
            key = read_ticket_key(self.config.ticket_key_file) if self.config.ticket_key_file else None
        except ConfigError as error:
            log("reload_failed", error=str(error))
            return
        self.targets, self.ticket_key = targets, key
        log("reloaded", targets=len(targets))

    # -- the handshake ------------------------------------------------------------------------

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        assert isinstance(ws, ProxyConnection)
        path = urlsplit(request.path).path
        if path == "/healthz":
            return self.health(ws)
        if path == "/metrics":
            body, content_type = self.metrics.render()
            headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return Response(HTTPStatus.OK, "OK", headers, body)
        try:
            origin = request.headers.get("Origin")
        except Exception:  # MultipleValuesError: a browser never sends two
            return self.refuse(ws, request, Refusal("bad_request", "(two Origin headers)"), None, "")
        peer = str(ws.remote_address[0]) if ws.remote_address else ""
        client = client_address(peer, request.headers.get_all("X-Forwarded-For"), self.config.trusted_proxies)
        decision = admit(
            AdmissionRequest(request.path, origin, client), self.config, self.targets, self.ticket_key,
            time.time(), self.draining,
        )  # fmt: skip
        if isinstance(decision, Admitted):
            refusal = await self.ledger.acquire(client)
            if refusal is None:
                if ws.protocol.state is not State.CONNECTING:  # the client left while we asked
                    self.ledger.release(client)
                    return None
                ws.session = Session(ws, client, decision.token, decision.target, decision.subject)
                ws.on_lost = lambda: self.ledger.release(client)
                return None
            decision = refusal
        return self.refuse(ws, request, decision, origin, client)

    def refuse(
        self, ws: ProxyConnection, request: Request, refusal: Refusal, origin: str | None, client: str
    ) -> Response | None:
        """A client without ``Origin`` gets the HTTP status; a browser (which cannot see it) gets
        the WebSocket, closed at once with 4000 + status and the reason (in the handler)."""
        self.metrics.refused.labels(refusal.reason).inc()
        self.metrics.ended.labels("refused").inc()
        log("session", client=client or (str(ws.remote_address[0]) if ws.remote_address else ""),
            token=_token_of(request.path), end="refused", reason=refusal.reason,
            status=refusal.status, origin=origin)  # fmt: skip
        if origin is None:
            return ws.respond(refusal.status, refusal.text + "\n")
        ws.refusal = refusal
        return None

    def health(self, ws: ServerConnection) -> Response:
        if self.draining:
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return ws.respond(HTTPStatus.OK, "ok\n")

    @staticmethod
    def select_subprotocol(ws: ServerConnection, offered: Any) -> Any:
        """``binary`` when the page offers it (the page does, as websockify expects); none else."""
        return "binary" if "binary" in offered else None

    # -- a session ------------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, ProxyConnection)
        if ws.refusal is not None:
            await close_or_drop(ws, ws.refusal.close_code, ws.refusal.text)
            return
        session = ws.session
        if session is None:  # not through process_request: cannot happen
            await ws.close(1011, "internal error")
            return
        ws.forget_handshake()
        self.sessions.add(session)
        self.metrics.open.inc()
        self.metrics.opened.inc()
        try:
            await relay(session, self.config.connect_timeout)
        finally:
            self.sessions.discard(session)
            self.metrics.open.dec()
            self.report_bytes(session)
            end = session.end or "client_closed"
            self.metrics.ended.labels(end).inc()
            log("session", client=session.client, token=session.token, target=str(session.target),
                subject=session.subject or None, started=session.wall_started,
                duration=round(asyncio.get_running_loop().time() - session.started, 3),
                bytes_to_target=session.to_target, bytes_to_client=session.to_client,
                end=end, close_code=session.close_code, detail=session.detail or None)  # fmt: skip

    def report_bytes(self, session: Session) -> None:
        if session.to_target != session.reported_to_target:
            self.metrics.to_target.inc(session.to_target - session.reported_to_target)
            session.reported_to_target = session.to_target
        if session.to_client != session.reported_to_client:
            self.metrics.to_client.inc(session.to_client - session.reported_to_client)
            session.reported_to_client = session.to_client

    async def sweep(self) -> None:
        """Once a second (or more often, for short idle timeouts): the byte counters, and the
        sessions idle for too long. One task for all sessions: no timer per session."""
        period = min(1.0, self.config.idle_timeout / 4)
        loop = asyncio.get_running_loop()
        text = f"idle_timeout: {REASONS['idle_timeout'][1]} for {self.config.idle_timeout:g} s"
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for session in list(self.sessions):
                self.report_bytes(session)
                if now - session.last >= self.config.idle_timeout:
                    session.terminate("idle_timeout", 4000 + REASONS["idle_timeout"][0], text)

    # -- running and stopping -------------------------------------------------------------------

    async def serve(self, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_error)
        logger = logging.getLogger("websockets")
        logger.addHandler(JsonLogHandler(logging.WARNING))
        logger.propagate = False
        self.server = await serve(
            self.handler, self.config.host, self.config.port,
            process_request=self.process_request, select_subprotocol=self.select_subprotocol,
            create_connection=ProxyConnection, compression=None, server_header=None,
            open_timeout=self.config.handshake_timeout, ping_interval=None, close_timeout=CLOSE_TIMEOUT,
            max_size=(None, self.config.max_frame), max_queue=MAX_QUEUE, write_limit=CLIENT_WRITE_LIMIT,
            reuse_port=reuse_port or None, backlog=1024,
        )  # fmt: skip
        port = self.server.sockets[0].getsockname()[1]
        origins = list(self.config.allow_origins) or "loopback"
        log("listening", host=self.config.host, port=port, targets=len(self.targets),
            tickets=self.ticket_key is not None, origins=origins)  # fmt: skip
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        draining: list[asyncio.Task[None]] = []

        def start_draining() -> None:
            if not draining:
                draining.append(loop.create_task(self.drain()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, start_draining)
        sweeper = loop.create_task(self.sweep())
        try:
            await self.stopped.wait()
        finally:
            sweeper.cancel()

    async def drain(self) -> None:
        """SIGTERM: refuse new sessions (``/healthz`` says 503), let the open ones go on for
        ``--drain`` seconds, close what is left (4503), and stop."""
        loop = asyncio.get_running_loop()
        self.draining = True
        self.metrics.draining.set(1)
        log("draining", sessions=len(self.sessions), seconds=self.config.drain)
        deadline = loop.time() + self.config.drain
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = list(self.sessions)
        text = f"draining: {REASONS['draining'][1]}"
        for session in left:
            session.terminate("drained", 4000 + REASONS["draining"][0], text)
        deadline = loop.time() + CLOSE_TIMEOUT + 1
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await self.server.wait_closed()
        log("stopped", closed_at_drain_end=len(left))
        self.stopped.set()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would print (an exception in a callback), as one of our JSON lines."""
    error = context.get("exception")
    log("error", message=str(context.get("message", "")), error=repr(error) if error else None)


def _token_of(path: str) -> str | None:
    from ._admission import query_value

    token = query_value(path, "token")
    return token[:100] if token else None
