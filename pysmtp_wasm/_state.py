"""The engine's states as data, in the manner of h11's ``_state.py``.

Three tables say what the session may do in each state:

- :data:`REPLY_HANDLERS`: which of the engine's methods handles a reply that arrives in it
  (a state not listed owes us no reply: anything the server says there is unexpected);
- :data:`CALLS`: which of the user's calls each state allows, the state an allowed call leads
  to, and the words of the :class:`SmtpUsageError` a refused one raises;
- :data:`AWAITING`: the states in which the server owes us something (a timer runs).

The engine (``_engine.py``) enforces them and the page's side of a Worker (``_usage.py``)
reports them: both read these tables, so they cannot disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import SmtpUsageError


class State(enum.Enum):
    CONNECTING = "connecting"  # the transport is opening the connection
    GREETING = "greeting"  # waiting for the 220 greeting
    EHLO = "ehlo"  # waiting for the EHLO/LHLO reply
    HELO = "helo"  # waiting for the HELO reply (EHLO was refused)
    STARTTLS = "starttls"  # waiting for the reply to STARTTLS
    TLS = "tls"  # the transport is doing the TLS handshake
    AUTH = "auth"  # in the SASL conversation
    IDLE = "idle"  # waiting for an envelope
    ENVELOPE = "envelope"  # waiting for the replies to MAIL, RCPT and DATA
    DATA = "data"  # the user streams the message (with CHUNKING, BDAT replies may come)
    DATA_END = "data_end"  # waiting for the reply (LMTP: replies) to the end of data
    QUIT = "quit"  # waiting for the reply to QUIT
    CLOSED = "closed"

    # Hashed by identity, as they compare: Enum's own __hash__ is a Python function, run on
    # every lookup in a dict keyed by state (the engine's reply handlers, once per reply).
    __hash__ = object.__hash__


class Pending(enum.Enum):
    """What a command written (or queued) in a transaction waits for."""

    RSET = "RSET"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"  # a chunk that is not the last
    END = "END"  # the end of the message (with LMTP: one per accepted recipient)


# An error's ``stage``, one spelling everywhere (README "Errors", web/src/pysmtp-wasm.d.ts): the
# SMTP command whose reply failed or was awaited, in capitals as it is written on the wire, or
# a step that is not a command, in lower case.
COMMAND_STAGES = ("EHLO", "LHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "QUIT")
STEP_STAGES = (
    "connect",  # reaching the server (or the proxy)
    "greeting",  # the server's 220
    "tls",  # the TLS handshake and the certificate check
    "envelope",  # the envelope given to useEnvelope() cannot be sent
    "message",  # the mail given to sendMail()/send_message() cannot make a message
    "reply",  # a reply that is not SMTP
    "idle",  # between messages
    "closed",  # after the connection ended
)
# The stage of each state (where a state waits for one command's reply, that command; in
# ENVELOPE the engine names the command actually awaited: MAIL, RCPT, DATA or RSET).
STAGES: dict[State, str] = {
    State.CONNECTING: "connect",
    State.GREETING: "greeting",
    State.EHLO: "EHLO",  # ("LHLO" with LMTP: the engine says)
    State.HELO: "HELO",
    State.STARTTLS: "STARTTLS",
    State.TLS: "tls",
    State.AUTH: "AUTH",
    State.IDLE: "idle",
    State.ENVELOPE: "MAIL",
    State.DATA: "DATA",
    State.DATA_END: "DATA",
    State.QUIT: "QUIT",
    State.CLOSED: "closed",
}
assert set(STAGES.values()) <= {*COMMAND_STAGES, *STEP_STAGES}

# States in which the server owes us something: a reply, or the TLS handshake. (A tuple:
# membership is an identity check in C, where a set would call Enum.__hash__, in Python.)
AWAITING = (
    State.GREETING,
    State.EHLO,
    State.HELO,
    State.STARTTLS,
    State.TLS,
    State.AUTH,
    State.ENVELOPE,
    State.DATA_END,
    State.QUIT,
)

# The engine's method for a reply that arrives in each state. In DATA only the replies to
# BDAT chunks already sent are expected (the method checks that one is due).
REPLY_HANDLERS: dict[State, str] = {
    State.GREETING: "_on_greeting",
    State.EHLO: "_on_ehlo",
    State.HELO: "_on_helo",
    State.STARTTLS: "_on_starttls",
    State.AUTH: "_on_auth",
    State.ENVELOPE: "_on_envelope",
    State.DATA: "_on_data",
    State.DATA_END: "_on_data_end",
    State.QUIT: "_on_quit",
}


@dataclass(frozen=True)
class CallRule:
    """One of the user's calls.

    ``allowed`` maps each state where the call is allowed to the state it leads to (None: the
    engine decides, or nothing changes). In any other state the call raises SmtpUsageError:
    with the words of ``refused[state]`` when there are some, else "NAME is not possible in
    state S: HINT".
    """

    name: str  # as the user writes it: "useEnvelope()"
    allowed: dict[State, State | None]
    hint: str = ""
    refused: dict[State, str] = field(default_factory=dict)
    # The allowed states as a tuple: membership is identity checks in C (send() is per chunk).
    states: tuple[State, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(self.allowed))

    def check(self, state: State) -> None:
        """Raise the SmtpUsageError of this call in ``state``, if the state does not allow it."""
        if state not in self.states:
            error = self.refusal(state)
            assert error is not None
            raise error

    def refusal(self, state: State) -> SmtpUsageError | None:
        """The error this call raises in ``state``, or None when the state allows it."""
        if state in self.states:
            return None
        message = self.refused.get(state)
        if message is None:
            message = f"{self.name} is not possible in state {state.value}" + (
                f": {self.hint}" if self.hint else ""
            )
        return SmtpUsageError(message.format(state=state.value), stage=STAGES[state])


# quit() in a state where the server owes a step of the session's opening: QUIT is said as
# soon as that step is done.
_QUIT_LATER = (State.GREETING, State.EHLO, State.HELO, State.STARTTLS, State.TLS, State.AUTH, State.DATA_END)

# The seed's calls whose answer depends on the state, by the seed's names (connect() and
# close() are the client's business: _client.py).
CALLS: dict[str, CallRule] = {
    "useEnvelope": CallRule(
        "useEnvelope()",
        {State.IDLE: State.ENVELOPE},
        hint="call it from onidle, after the previous message is done",
    ),
    "send": CallRule("send()", {State.DATA: None}, hint="call it after onready and before end()"),
    "end": CallRule("end()", {State.DATA: State.DATA_END}, hint="call it once, after onready"),
    "quit": CallRule(
        "quit()",
        {State.IDLE: State.QUIT, **dict.fromkeys((*_QUIT_LATER, State.QUIT, State.CLOSED))},
        refused={
            State.CONNECTING: "quit() before the connection is open: use close()",
            **dict.fromkeys(
                (State.ENVELOPE, State.DATA),
                "quit() is not possible while a message is in flight (state: {state}); "
                "end() the message and quit in ondone, or close() at once",
            ),
        },
    ),
}

# connect() and the calls before it, which the client (_client.py) answers before any engine
# exists: connect() is allowed once per client.
CONNECT_AGAIN = "connect() was already called; make a new SmtpClient to connect again"
BEFORE_CONNECT = "{call}() before connect()"
CONNECT_AFTER_CLOSE = "connect() after close(): this client is closed; make a new SmtpClient to connect"

# What the transport tells the engine, checked the same way (a transport that calls them out
# of turn has a bug: the SmtpUsageError says which).
TRANSPORT_CALLS: dict[str, CallRule] = {
    "connection_made": CallRule("connection_made", {State.CONNECTING: State.GREETING}),
    "tls_established": CallRule("tls_established", {State.TLS: State.EHLO}),
}
