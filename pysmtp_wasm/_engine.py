"""The sans-IO SMTP/LMTP engine: bytes in, events and bytes out.

It knows SMTP and nothing of sockets, asyncio or JavaScript. The caller (a transport and the
client facade) feeds it what the server sent (:meth:`SmtpEngine.receive_data`), tells it about
the connection (:meth:`connection_made`, :meth:`tls_established`, :meth:`connection_lost`),
passes on the user's calls (:meth:`use_envelope`, :meth:`send`, :meth:`end`, :meth:`quit`),
writes out :meth:`data_to_send` and acts on the returned events.

The session runs through named states (:class:`State`). What each state allows is data, in
``_state.py``: the method that handles a reply arriving in it, and which of the user's calls
it takes; a call that the state does not allow raises :class:`SmtpUsageError` before
anything changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from . import _sasl
from ._address import check_address
from ._dotstuff import DotStuffer
from ._dsn import DsnRequest, parse_dsn
from ._events import Done, Event, Failed, Finished, Idle, Log, Ready, RecipientResult, StartTls
from ._extensions import Extensions
from ._options import Options
from ._reply import Reply, ReplyParser
from ._state import AWAITING, CALLS, REPLY_HANDLERS, STAGES, TRANSPORT_CALLS, Pending, State
from .errors import (
    SmtpAuthError,
    SmtpConnectionError,
    SmtpEnvelopeError,
    SmtpError,
    SmtpProtocolError,
    SmtpRecipientsError,
    SmtpReplyError,
    SmtpTlsError,
    SmtpUsageError,
)

_USE_ENVELOPE, _SEND, _END, _QUIT = (CALLS[name] for name in ("useEnvelope", "send", "end", "quit"))
_CONNECTION_MADE, _TLS_ESTABLISHED = TRANSPORT_CALLS.values()
# The states a call allows, for the check on the way in (the rule itself raises the refusal).
_USE_ENVELOPE_STATES, _SEND_STATES, _END_STATES = _USE_ENVELOPE.states, _SEND.states, _END.states
_ENVELOPE_FIELDS = frozenset({"from", "to", "size", "dsn", "binary"})
_accepted_of = attrgetter("accepted")
_IDLE = Idle()  # (immutable and without fields: one serves every time)
_TLS, _CLOSED = State.TLS, State.CLOSED  # (a global's lookup, not a class attribute's too)
# RecipientResult(*fields) without its __new__, a Python function (as _reply.py makes a Reply)
_new_tuple = tuple.__new__


def _reply_error(
    reply: Reply, stage: str, cls: type[SmtpReplyError] = SmtpReplyError, prefix: str = ""
) -> SmtpReplyError:
    return cls(prefix + reply.text, code=reply.code, enhanced=reply.enhanced, stage=stage)


class SmtpEngine:
    """One SMTP (or LMTP) session's protocol state."""

    def __init__(self, options: Options, *, host: str | None = None) -> None:
        """``host`` is the server's name or address as the user gave it, for messages. Whether
        AUTH may send a password without TLS is not decided from it: the client sets
        :attr:`stays_local` from what the transport says of the address it connected to."""
        self.options = options
        self.host = host
        # Whether cleartext written to the server stays on this machine (no password otherwise):
        # False until the transport says so of the peer it reached.
        self.stays_local = False
        self.state = State.CONNECTING
        self.extensions = Extensions()
        self.tls_active = options.use_secure_transport
        self.replies_received = 0
        # Whether to report transcript lines (Log events). The client turns them off while
        # nobody listens: a line formatted and dispatched for nobody is most of the work of
        # a reply in WebAssembly.
        self.transcript = True
        self._parser = ReplyParser()
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._quit_requested = False
        self._failed = False  # an error was reported (Failed): the session only ends now
        self._rset_needed = False
        self._mechanism: _sasl.Mechanism | None = None
        # The current transaction.
        self._pipelining = False
        # commands not yet written: (kind, argument, the command's bytes with its CRLF)
        self._queue: deque[tuple[Pending, str, bytes]] = deque()
        self._pending: deque[tuple[Pending, str]] = deque()  # written, reply due (kind, argument)
        self._accepted: list[str] = []
        self._rejected: dict[str, Reply] = {}
        self._stuffer: DotStuffer | None = None
        self._results: list[RecipientResult] = []
        # CHUNKING (RFC 3030): the message goes as BDAT chunks; the newest is held back so that
        # end() can send it as "BDAT n LAST". A refused chunk ends the message: what the
        # user sends after it is dropped, and end() reports it.
        self._chunking = False
        self._binary = False  # BODY=BINARYMIME: the bytes go as they are (RFC 3030 §3)
        self._held: bytes | None = None
        self._bdat_refused: Reply | None = None
        self._rcpt_params = ""
        # REPLY_HANDLERS, bound once (a reply's dispatch is one dict lookup)
        self._handlers = {state: getattr(self, name) for state, name in REPLY_HANDLERS.items()}

    # -- what the caller reads ------------------------------------------------------------

    @property
    def stage(self) -> str:
        """The ``stage`` of an error met now (``_state.STAGES``): in a transaction, the command
        whose reply is awaited."""
        if self.state is State.ENVELOPE and self._pending:
            kind = self._pending[0][0]
            return "DATA" if kind is Pending.END else kind.value
        if self.state is State.EHLO and self.options.lmtp:
            return "LHLO"
        return STAGES[self.state]

    @property
    def awaiting_reply(self) -> bool:
        """True while the server owes a reply or the TLS handshake (a timer should run)."""
        return self.state in AWAITING

    def data_to_send(self) -> bytes:
        """The bytes to write now (and forget)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)  # (of one bytes object: that object, not a copy)
        out.clear()
        return data

    # -- the connection ------------------------------------------------------------------

    def connection_made(self) -> list[Event]:
        """The transport is connected (after the TLS handshake for implicit TLS)."""
        _CONNECTION_MADE.check(self.state)
        self.state = State.GREETING
        return self._take_events()

    def tls_established(self) -> list[Event]:
        """The STARTTLS handshake succeeded: say hello again (RFC 3207 §4.2)."""
        _TLS_ESTABLISHED.check(self.state)
        self.tls_active = True
        self.extensions = Extensions()
        self._log("*", "TLS established")
        self._hello()
        return self._take_events()

    def connection_lost(self) -> list[Event]:
        """The transport closed. Anything but a finished QUIT or a close() is an error."""
        if self.state is not State.CLOSED:
            where = {
                State.DATA: " during the message data",
                State.DATA_END: " before it answered the message",
                State.TLS: " during the TLS handshake",
                State.CONNECTING: " before the connection was made",
                State.GREETING: " before it greeted",
            }.get(self.state, f" (state: {self.state.value})")
            self._fail(SmtpConnectionError("the server closed the connection" + where, stage=self.stage))
        return self._take_events()

    def fail(self, error: SmtpError) -> list[Event]:
        """End the session with an error from outside the protocol (timeout, TLS, network)."""
        if self.state is not State.CLOSED:
            self._fail(error)
        return self._take_events()

    def close(self) -> None:
        """The user closes at once; no more events."""
        self._end()

    # -- bytes from the server -------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes the server sent; return what happened."""
        state = self.state
        if state is _CLOSED:
            return []
        if state is _TLS:
            # RFC 3207 §5, CVE-2011-0411: nothing received between "220 ready" and the
            # handshake may be read as a reply. The transport should not hand us any; if it
            # does, it is dropped.
            self._log("*", f"discarded {len(data)} bytes received before the TLS handshake")
            return self._take_events()
        try:
            replies = self._parser.feed(data)
        except SmtpProtocolError as error:
            self._fail(error)
            return self._take_events()
        handlers = self._handlers
        for reply in replies:
            self.replies_received += 1
            if self.transcript:
                self._log_reply(reply)
            # (The handler of the state's replies, looked up here: a call less per reply.)
            handler = handlers.get(self.state)
            try:
                if handler is None:
                    self._unexpected(reply)
                else:
                    handler(reply)
            except SmtpError as error:
                self._fail(error)
            state = self.state
            if state is _TLS or state is _CLOSED:
                # After "220 ready to start TLS" the rest of this chunk is not trusted.
                if state is _TLS and (reply is not replies[-1] or self._parser.buffered):
                    self._log("*", "discarded data received after the STARTTLS reply")
                self._parser.reset()
                break
        events = self._events
        self._events = []
        return events

    def _log_reply(self, reply: Reply) -> None:
        last = len(reply.lines) - 1
        for index, line in enumerate(reply.lines):
            self._log("S", f"{reply.code}{'-' if index < last else ' '}{line}")

    # -- the user's calls --------------------------------------------------------------------

    def use_envelope(self, envelope: Mapping[str, Any]) -> list[Event]:
        """Start a message: MAIL FROM, one RCPT TO per recipient, DATA.

        Raises :class:`SmtpUsageError` outside the idle state (nothing changes). An envelope
        that cannot be sent ends the session: nothing of it is sent, the events hold
        ``Failed(SmtpEnvelopeError, quitting=True)`` and QUIT is written.
        """
        if self.state not in _USE_ENVELOPE_STATES:
            _USE_ENVELOPE.check(self.state)
        try:
            sender, recipients, size, dsn, binary, utf8 = self._check_envelope(envelope)
        except SmtpEnvelopeError as error:
            self._fail_and_quit(error)
            return self._take_events()
        keywords = self.extensions.keywords  # (upper-case, as the names below)
        params = ""
        if size is not None and "SIZE" in keywords:
            params += f" SIZE={size}"
        if binary:
            params += " BODY=BINARYMIME"
        elif "8BITMIME" in keywords:
            params += " BODY=8BITMIME"
        if utf8:
            params += " SMTPUTF8"
        if dsn is not None:
            params += dsn.mail_params()
        self._rcpt_params = dsn.rcpt_params() if dsn is not None else ""
        self._chunking = self._chunking_usable()
        self._binary = binary
        self._held = None
        self._bdat_refused = None
        self._accepted = []
        self._rejected = {}
        queue = self._queue
        queue.clear()
        self._pending.clear()
        if self._rset_needed:
            queue.append((Pending.RSET, "", b"RSET\r\n"))
        queue.append((Pending.MAIL, sender, f"MAIL FROM:<{sender}>{params}\r\n".encode()))
        rcpt, rcpt_params = Pending.RCPT, self._rcpt_params
        for r in recipients:
            queue.append((rcpt, r, f"RCPT TO:<{r}>{rcpt_params}\r\n".encode()))
        if not self._chunking:
            queue.append((Pending.DATA, "", b"DATA\r\n"))
        self._pipelining = "PIPELINING" in keywords
        self.state = State.ENVELOPE
        self._write_queue()
        return self._take_events()

    def send(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Add a chunk of the message (dot-stuffed unless ``disableEscaping``; with CHUNKING, a
        ``BDAT`` chunk, not dot-stuffed)."""
        if self.state not in _SEND_STATES:
            _SEND.check(self.state)
        if isinstance(chunk, str):
            data = chunk.encode("utf-8")
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            data = bytes(chunk)
        else:
            raise SmtpUsageError(f"send() takes str or bytes, not {type(chunk).__name__}")
        assert self._stuffer is not None
        encoded = self._stuffer.encode(data)
        if not encoded:
            return
        if not self._chunking:
            self._out.append(encoded)
        elif self._bdat_refused is None:
            if self._held is not None:
                self._write_chunk(self._held, last=False)
            self._held = encoded

    def end(self) -> list[Event]:
        """End the message; the server's answer comes as :class:`Done`."""
        if self.state not in _END_STATES:
            _END.check(self.state)
        assert self._stuffer is not None
        if self._chunking:
            self._log("C", f"<{self._stuffer.bytes_in} bytes of message data in BDAT chunks>")
            tail = (self._held or b"") + (b"" if self._binary else self._stuffer.finish_line())
            self._held = None
            self._stuffer = None
            self.state = State.DATA_END
            if self._bdat_refused is None:
                self._write_chunk(tail, last=True)
                self._expect_data_end()
            elif not self._pending:
                self._bdat_done()
            return self._take_events()
        self._out.append(self._stuffer.finish())
        if self.transcript:  # (the line is not even formatted for nobody)
            self._log("C", f"<{self._stuffer.bytes_in} bytes of message data>")
            self._log("C", ".")
        self._stuffer = None
        self._pending.clear()
        self._expect_data_end()
        self.state = State.DATA_END
        return self._take_events()

    def _expect_data_end(self) -> None:
        """The replies the end of the message gets: one, or with LMTP one per accepted recipient."""
        if self.options.lmtp:
            self._pending.extend([(Pending.END, r) for r in self._accepted])
        else:
            self._pending.append((Pending.END, ""))

    def _write_chunk(self, data: bytes, last: bool) -> None:
        # RFC 3030 §2: "BDAT size [LAST]" CRLF, then exactly size octets. Each chunk has its
        # own reply, and chunks are written without waiting for it (so BDAT is used only where
        # PIPELINING is offered too: _chunking_usable); the length prefix leaves the server
        # nothing to misread.
        command = f"BDAT {len(data)}{' LAST' if last else ''}"
        self._out.append(command.encode("ascii") + b"\r\n")
        if data:
            self._out.append(data)
        self._log("C", command)
        if not last:
            self._pending.append((Pending.BDAT, ""))

    def quit(self) -> list[Event]:
        """Say QUIT now when idle, or as soon as the current step is done."""
        _QUIT.check(self.state)
        if self.state is State.IDLE:
            self._send_command("QUIT")
            self.state = State.QUIT
        elif self.state not in (State.QUIT, State.CLOSED):
            self._quit_requested = True
        return self._take_events()

    # -- the protocol ------------------------------------------------------------------------

    def _unexpected(self, reply: Reply) -> None:
        # RFC 5321 §3.8: a server may send 421 at any time before it closes.
        if reply.code == 421:
            raise _reply_error(reply, self.stage, prefix="the server is closing the connection: ")
        raise SmtpProtocolError(
            f"unexpected reply from the server in state {self.state.value}: {reply}",
            code=reply.code,
            enhanced=reply.enhanced,
            stage=self.stage,
        )

    def _on_greeting(self, reply: Reply) -> None:
        if reply.code != 220:
            raise _reply_error(reply, "greeting", prefix="the server refused the connection: ")
        if not self._quit_if_requested():
            self._hello()

    def _hello(self) -> None:
        self._send_command(f"{'LHLO' if self.options.lmtp else 'EHLO'} {self.options.name}")
        self.state = State.EHLO

    def _on_ehlo(self, reply: Reply) -> None:
        if not reply.ok:
            if self.options.lmtp:
                raise _reply_error(reply, "LHLO")
            # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
            self._send_command(f"HELO {self.options.name}")
            self.state = State.HELO
            return
        self.extensions = Extensions.from_ehlo(reply)
        self._after_hello()

    def _on_helo(self, reply: Reply) -> None:
        if not reply.ok:
            raise _reply_error(reply, "HELO")
        self.extensions = Extensions()
        self._after_hello()

    def _after_hello(self) -> None:
        if self._quit_if_requested():
            return
        opts = self.options
        if (
            not self.tls_active
            and not opts.ignore_tls
            and (opts.require_tls or "STARTTLS" in self.extensions)
        ):
            self._send_command("STARTTLS")
            self.state = State.STARTTLS
        elif opts.auth is not None:
            self._start_auth()
        else:
            self._become_idle()

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code != 220:
            detail = f"{reply.code} {reply.text}"
            if self.options.require_tls:
                message = f"requireTLS is set but STARTTLS failed ({detail}); not authenticating"
            else:
                message = f"STARTTLS failed ({detail})"
            raise SmtpTlsError(message, code=reply.code, enhanced=reply.enhanced, stage="STARTTLS")
        self.state = State.TLS
        self._events.append(StartTls())

    def _start_auth(self) -> None:
        assert self.options.auth is not None
        mechanism = _sasl.choose(
            self.extensions.auth_mechanisms, self.options.auth, self.options.auth_method, self.tls_active
        )
        if (
            mechanism.sends_secret
            and not self.tls_active
            and not self.options.allow_insecure_auth
            and not self.stays_local
        ):
            # RFC 8314 (cleartext considered obsolete): no password or token in the clear
            # unless the user said so, or the server is this machine. Nothing of them is sent.
            secret = "token" if mechanism.name == "XOAUTH2" else "password"
            why = "ignoreTLS is set" if self.options.ignore_tls else "the server offered no STARTTLS"
            self._fail_and_quit(
                SmtpTlsError(
                    f"not sending the {secret} in cleartext: the connection to {self.host or 'the server'} "
                    f"is not encrypted ({why}) "
                    f"and AUTH {mechanism.name} would put the {secret} on the wire as it is; "
                    "use TLS (useSecureTransport, or requireTLS for STARTTLS), or set "
                    "allowInsecureAuth: true to send it anyway",
                    stage="AUTH",
                )
            )
            return
        self._mechanism = mechanism
        line, shown = mechanism.start()
        self._send_command(line, shown)
        self.state = State.AUTH

    def _on_auth(self, reply: Reply) -> None:
        mechanism = self._mechanism
        assert mechanism is not None
        if reply.code == 334:
            line, shown = mechanism.respond(reply.lines[0].strip())
            self._send_command(line, shown)
            return
        self._mechanism = None
        if reply.ok:
            self._log("*", f"authenticated with {mechanism.name}")
            if not self._quit_if_requested():
                self._become_idle()
            return
        detail = getattr(mechanism, "error_detail", None)
        error = _reply_error(reply, "AUTH", SmtpAuthError, prefix=f"AUTH {mechanism.name} failed: ")
        if detail:
            error.message = f"{error.message} ({detail})"
            error.args = (error.message,)
        raise error

    def _become_idle(self) -> None:
        self.state = State.IDLE
        self._events.append(_IDLE)

    def _quit_if_requested(self) -> bool:
        if not self._quit_requested:
            return False
        self._quit_requested = False
        self._send_command("QUIT")
        self.state = State.QUIT
        return True

    def _on_quit(self, reply: Reply) -> None:
        # Whatever the server says to QUIT, we are done with it.
        self.state = State.CLOSED
        self._events.append(Finished())

    # -- the envelope ---------------------------------------------------------------------

    def _chunking_usable(self) -> bool:
        # BDAT chunks go out without waiting for each reply: that needs PIPELINING too (RFC
        # 2920). Without it, DATA (every server in the tests that offers CHUNKING offers both).
        keywords = self.extensions.keywords
        return "CHUNKING" in keywords and "PIPELINING" in keywords and not self.options.disable_chunking

    def _check_envelope(
        self, envelope: Mapping[str, Any]
    ) -> tuple[str, list[str], int | None, DsnRequest | None, bool, bool]:
        """The envelope's sender, recipients, size, DSN request, BINARYMIME, and whether an
        address needs SMTPUTF8; or the SmtpEnvelopeError that says why it cannot be sent."""
        if type(envelope) is not dict and not isinstance(envelope, Mapping):
            raise SmtpEnvelopeError("the envelope must be an object {from, to}", stage="envelope")
        if not _ENVELOPE_FIELDS.issuperset(envelope):
            unknown = set(envelope) - _ENVELOPE_FIELDS
            raise SmtpEnvelopeError(
                f"unknown envelope field(s): {', '.join(sorted(unknown))}", stage="envelope"
            )
        sender = envelope.get("from")
        if sender is None:
            sender = f"anonymous@{self.options.name}"  # the seed's default
        sender = check_address(sender, "from")
        to = envelope.get("to")
        if to is None:
            to = []
        elif isinstance(to, str):
            to = [to]
        elif not isinstance(to, (list, tuple)):
            raise SmtpEnvelopeError("envelope.to must be a string or a list of strings", stage="envelope")
        recipients: list[str] = []
        for address in to:
            address = check_address(address, "to")
            if not address:
                raise SmtpEnvelopeError("invalid to address '': empty", stage="envelope")
            if address not in recipients:
                recipients.append(address)
        if not recipients:
            raise SmtpEnvelopeError("Can't send mail - no recipients defined", stage="envelope")
        keywords = self.extensions.keywords
        utf8 = not (sender.isascii() and all(map(str.isascii, recipients)))  # RFC 6531
        if utf8 and "SMTPUTF8" not in keywords:
            raise SmtpEnvelopeError(
                "an address is not ASCII and the server does not support SMTPUTF8 (RFC 6531)",
                stage="envelope",
            )
        size = envelope.get("size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise SmtpEnvelopeError("envelope.size must be a non-negative integer", stage="envelope")
            limit = self.extensions.size_limit
            if limit and size > limit:
                raise SmtpEnvelopeError(
                    f"message size {size} exceeds the server's limit of {limit} bytes",
                    code=552,
                    enhanced="5.3.4",
                    stage="envelope",
                )
        dsn = envelope.get("dsn")
        if dsn is not None:
            dsn = parse_dsn(dsn)
        if dsn is not None and "DSN" not in keywords:
            # Dropping it would promise notifications that never come.
            raise SmtpEnvelopeError(
                "envelope.dsn: the server does not offer DSN (RFC 3461), so delivery status "
                "notifications cannot be requested; send without dsn",
                stage="envelope",
            )
        binary = envelope.get("binary", False)
        if not isinstance(binary, bool):
            raise SmtpEnvelopeError("envelope.binary must be true or false", stage="envelope")
        if binary and not ("BINARYMIME" in keywords and self._chunking_usable()):
            # Sent with DATA or to a server without BINARYMIME, the bytes would have to be
            # changed (line endings, dot-stuffing) or be refused: say so instead.
            raise SmtpEnvelopeError(
                "envelope.binary: BODY=BINARYMIME needs the server to offer BINARYMIME, CHUNKING "
                "and PIPELINING (RFC 3030), and disableChunking off",
                stage="envelope",
            )
        return sender, recipients, size, dsn, binary, utf8

    def _write_queue(self) -> None:
        """Write the next command, or all of them when the server pipelines (RFC 2920)."""
        queue = self._queue
        while queue:
            kind, arg, line = queue.popleft()
            self._out.append(line)
            if self.transcript:
                self._log("C", line[:-2].decode())
            self._pending.append((kind, arg))
            if not self._pipelining:
                break

    def _on_envelope(self, reply: Reply) -> None:
        kind, arg = self._pending.popleft()
        ok = 200 <= reply.code < 300  # (reply.ok, without the property's call)
        if kind is Pending.RSET:
            if not ok:
                raise _reply_error(reply, "RSET")
            self._rset_needed = False
        elif kind is Pending.MAIL:
            if not ok:
                raise _reply_error(reply, "MAIL")
        elif kind is Pending.RCPT:
            if ok:
                self._accepted.append(arg)
            else:
                self._rejected[arg] = reply
            if not self._accepted and not self._rcpt_waiting():
                # Every recipient is refused: don't send DATA (a pipelined one is void too).
                raise SmtpRecipientsError(
                    "Can't send mail - all recipients were rejected",
                    {a: f"{r.code} {r.text}" for a, r in self._rejected.items()},
                    code=reply.code,
                    enhanced=reply.enhanced,
                    stage="RCPT",
                )
        elif kind is Pending.DATA:
            if reply.code != 354:
                raise _reply_error(reply, "DATA")
            self._start_data()
            return
        if self._chunking and not self._pending and not self._queue:
            self._start_data()  # the last RCPT is answered: no DATA command with BDAT
            return
        self._write_queue()

    def _rcpt_waiting(self) -> bool:
        """Whether an RCPT is still to be written or answered."""
        return any(entry[0] is Pending.RCPT for entry in (*self._pending, *self._queue))

    def _start_data(self) -> None:
        escape = not self.options.disable_escaping and not self._binary
        self._stuffer = DotStuffer(escape=escape, dots=not self._chunking)
        self.state = State.DATA
        self._events.append(Ready(list(self._rejected)))

    def _on_data(self, reply: Reply) -> None:
        if self._pending:
            self._on_bdat(reply)  # a reply to a BDAT chunk while the user still streams
        else:
            self._unexpected(reply)

    def _on_bdat(self, reply: Reply) -> None:
        """A reply to a BDAT chunk that is not the last (in DATA or DATA_END)."""
        self._pending.popleft()
        if not reply.ok and self._bdat_refused is None:
            self._bdat_refused = reply
            self._held = None
            self._log("*", "the server refused a chunk: the rest of the message is not sent")
        if self.state is State.DATA_END and not self._pending and self._bdat_refused is not None:
            self._bdat_done()

    def _bdat_done(self) -> None:
        """The message ends refused by a BDAT reply: every accepted recipient gets that reply."""
        refused = self._bdat_refused
        assert refused is not None
        self._pending.clear()
        self._expect_data_end()
        for _ in range(len(self._pending)):
            self._on_data_end(refused)

    def _on_data_end(self, reply: Reply) -> None:
        if self._pending and self._pending[0][0] is Pending.BDAT:
            self._on_bdat(reply)
            return
        _, recipient = self._pending.popleft()
        if self._bdat_refused is not None:
            # A chunk was refused: whatever the server says to the last one, the message is not
            # whole (RFC 3030 §2: a failed BDAT voids the transaction).
            reply = self._bdat_refused
        results = self._results
        code, enhanced = reply.code, reply.enhanced
        ok = 200 <= code < 300
        text = reply.text
        if self.options.lmtp:
            results.append(_new_tuple(RecipientResult, (recipient, ok, code, text, enhanced)))
        else:
            for accepted in self._accepted:
                results.append(_new_tuple(RecipientResult, (accepted, ok, code, text, enhanced)))
        if self._pending:
            return
        self._results = []
        success = any(map(_accepted_of, results))
        # A refused message leaves nothing on the server (RFC 5321 §4.1.1.4), but a server
        # that misbehaved once gets a clean slate before the next transaction.
        self._rset_needed = not success
        if self._rejected:
            results += [
                RecipientResult(a, False, r.code, r.text, r.enhanced) for a, r in self._rejected.items()
            ]
        self.state = State.IDLE
        self._events.append(Done(success, results))
        if not self._quit_if_requested():
            self._events.append(_IDLE)

    # -- helpers ---------------------------------------------------------------------------

    def _send_command(self, line: str, shown: str | None = None) -> None:
        self._out.append(line.encode("utf-8") + b"\r\n")
        if self.transcript and shown != "":  # (the line is not even chosen for nobody)
            self._log("C", line if shown is None else shown)

    def _log(self, direction: str, text: str) -> None:
        if self.transcript:
            self._events.append(Log(direction, text))

    def _fail(self, error: SmtpError) -> None:
        self._end()
        if self._failed:
            # One error a session: this one (a timeout, a hang-up or garbage while QUIT is
            # under way after the first) only ends it.
            self._log("*", f"after the error: {error}")
            self._events.append(Finished())
            return
        self._failed = True
        self._events.append(Failed(error))

    def _fail_and_quit(self, error: SmtpError) -> None:
        """Report ``error`` and end the session politely: QUIT, then close (the session is in
        a state where QUIT may be said, and nothing the user asked for went out)."""
        self._failed = True
        self._quit_requested = False
        self._send_command("QUIT")
        self.state = State.QUIT
        self._events.append(Failed(error, quitting=True))

    def _end(self) -> None:
        self.state = State.CLOSED
        self._out.clear()
        # Whatever the server sent that is not yet a reply (up to a chunk past the line bound
        # after a protocol error) is dropped now, not held until the client is collected.
        self._parser.reset()

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events
