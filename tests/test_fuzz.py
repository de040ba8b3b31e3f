"""Fuzzing the engine: arbitrary server bytes in every state.

A *transcript* is what a server (or a man in the middle) does to the client: chunks of bytes,
the TLS handshake completing, the connection dropping, a timeout. ``tests/fuzz_corpus/`` holds
interesting ones (a whole session, STARTTLS injection, LMTP, endless lines, ...); each is
replayed with its expected ending, and they seed a hypothesis search that mutates them
(splices random or hostile bytes, cuts, re-chunks, drops steps, interleaves the user's calls).

Whatever happens, these must hold after every step (``Player.check``):

- no exception escapes the engine but ``SmtpUsageError`` from a user's call in the wrong state;
- memory stays bounded: the parser's buffer, a multi-line reply's lines, the command queues;
- once closed, nothing more is written or reported; one ending (``Failed`` or ``Finished``), or
  ``Failed`` with QUIT under way (``quitting``) then at most one ``Finished``;
- ``Done(True)`` only when the server answered the data with a 2xx;
- nothing is written between "220 ready to start TLS" and the end of the handshake, and bytes
  received in that gap are never read as replies (CVE-2011-0411);
- secrets never reach the transcript.

By default the search is short (it runs in the suite); for a long run:

    FUZZ_EXAMPLES=200000 ./build.sh test -k fuzz
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pysmtp_wasm import (
    Done,
    Failed,
    Finished,
    Idle,
    Log,
    Ready,
    SmtpEngine,
    SmtpError,
    SmtpUsageError,
    StartTls,
    State,
    parse_options,
)
from pysmtp_wasm._reply import MAX_REPLY_LINE, MAX_REPLY_LINES
from pysmtp_wasm._state import COMMAND_STAGES, STEP_STAGES

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))

SECRET = "Pa55-w0rd-s3cret"
TOKEN = "ya29.fuzz-token"
SECRETS = [SECRET, TOKEN, base64.b64encode(f"\0user\0{SECRET}".encode()).decode()]
SECRETS.append(base64.b64encode(SECRET.encode()).decode())

DEFAULT_ENVELOPES = [{"from": "a@example.com", "to": ["b@example.com", "c@example.com"]}]
BODY = [b"Subject: fuzz\r\n\r\n.dot", b" line\r\n", b"\r\n.\r\nlast"]


# -- transcripts ------------------------------------------------------------------------------------


@dataclass
class Transcript:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    host: str = "localhost"  # the server's name as the user gave it (for messages only)
    loopback: bool = True  # whether the peer the transport reached is loopback (AUTH without TLS)
    envelopes: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_ENVELOPES))
    steps: list[tuple[str, Any]] = field(default_factory=list)
    manual: bool = False  # the user acts only through CALL steps
    expect: str | None = None  # "<final state> <event or error class>"


def load(path: Path) -> Transcript:
    """The corpus format, one step a line:

    ``S: <bytes>`` the server sends (Python escapes: \\r \\n \\x00 \\\\; ``S*N:`` N times),
    ``TLS`` the handshake succeeds, ``LOST`` the connection drops, ``TIMEOUT`` a timer fires,
    ``CALL <method> [json]``
    the user calls a method; ``options:``/``envelopes:`` (JSON), ``host:``, ``peer: remote`` (the transport
    reached an address that is not loopback), ``user: manual`` (no envelope
    on idle, no message on ready: only the CALL steps act) and ``expect:`` are headers,
    ``#`` starts a comment.
    """
    transcript = Transcript(path.stem)
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        head, _, rest = line.partition(" ")
        repeat = re.fullmatch(r"S\*(\d+):", head)
        if head == "S:" or repeat:
            data = rest.encode("latin-1").decode("unicode_escape").encode("latin-1")
            transcript.steps.append(("data", data * (int(repeat.group(1)) if repeat else 1)))
        elif head in ("TLS", "LOST", "TIMEOUT"):
            transcript.steps.append((head.lower(), None))
        elif head == "CALL":
            method, _, argument = rest.partition(" ")
            transcript.steps.append(("call", (method, json.loads(argument) if argument else None)))
        elif head == "options:":
            transcript.options = json.loads(rest)
        elif head == "host:":
            transcript.host = rest.strip()
        elif head == "peer:":
            assert rest.strip() in ("loopback", "remote"), line
            transcript.loopback = rest.strip() == "loopback"
        elif head == "envelopes:":
            transcript.envelopes = json.loads(rest)
        elif head == "user:":
            transcript.manual = rest.strip() == "manual"
        elif head == "expect:":
            transcript.expect = rest.strip()
        else:
            raise ValueError(f"{path.name}: cannot read {line!r}")
    return transcript


def corpus() -> list[Transcript]:
    return [load(path) for path in sorted(CORPUS.glob("*.txt"))]


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


# -- the player: the engine driven as the client facade drives it, checked at every step --------


class Player:
    """Runs a transcript against a fresh engine, playing a well-behaved user: an envelope on
    each idle (then QUIT), the body and end() on ready."""

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self.engine = SmtpEngine(parse_options(transcript.options), host=transcript.host)
        self.engine.stays_local = transcript.loopback  # as SmtpClient sets it from the transport
        self.sent = bytearray()
        self.events: list[Any] = []
        self.log: list[tuple[str, str]] = []
        self.states: set[State] = {self.engine.state}
        self.envelopes = list(transcript.envelopes)
        given = [
            *transcript.envelopes,
            *(v[1] for k, v in transcript.steps if k == "call" and v[0] == "use_envelope"),
        ]
        self.max_recipients = max(
            (len(_as_list(e.get("to"))) for e in given if isinstance(e, dict)), default=0
        )
        self.endings = 0
        self.quitting = False  # the ending was Failed(quitting=True): a Finished may follow
        self.last_data_end_reply_ok: bool | None = None
        self._take(self.engine.connection_made())

    # -- steps ---------------------------------------------------------------------------------

    def play(self) -> Player:
        for kind, value in self.transcript.steps:
            self.step(kind, value)
        return self

    def step(self, kind: str, value: Any) -> None:
        engine = self.engine
        self.states.add(engine.state)
        before = engine.state
        replies = engine.replies_received
        if kind == "data":
            self._take(engine.receive_data(value))
            if before is State.TLS:
                assert engine.replies_received == replies, "bytes before the TLS handshake were read"
        elif kind == "tls":
            self._user(engine.tls_established)
        elif kind == "lost":
            self._take(engine.connection_lost())
        elif kind == "timeout":
            self._take(engine.fail(SmtpError("timed out (fuzz)", stage=engine.stage)))
        elif kind == "call":
            method, argument = value
            if method == "send":
                self._user(engine.send, (argument or "").encode("latin-1"))
            elif method == "use_envelope":
                self._user(engine.use_envelope, argument)
            elif method == "close":
                engine.close()
            else:
                self._user(getattr(engine, method))
        self.states.add(engine.state)
        self.check()

    def _user(self, call: Any, *args: Any) -> None:
        """A user's call: it may be refused (SmtpUsageError, nothing changes), nothing else."""
        state = self.engine.state
        sent = len(self.sent)
        try:
            events = call(*args)
        except SmtpUsageError:
            assert self.engine.state is state and self.engine.data_to_send() == b""
            assert len(self.sent) == sent
            return
        self._take(events or [])

    def _take(self, events: list[Any]) -> None:
        engine = self.engine
        written = engine.data_to_send()
        assert not (written and self.endings), "written after the session ended"
        self.sent += written
        for index, event in enumerate(events):
            if isinstance(event, Log):
                self.log.append((event.direction, event.text))
                continue
            self.events.append(event)
            if isinstance(event, Failed):
                self.endings += 1
                assert self.endings == 1, "two endings"
                self.quitting = event.quitting
                # Quitting, the engine waits for QUIT's reply, unless that reply came in the same
                # data: then a Finished follows in the same batch of events.
                finished_after = any(isinstance(e, Finished) for e in events[index + 1 :])
                expected = State.CLOSED if not event.quitting or finished_after else State.QUIT
                assert engine.state is expected
                if event.quitting:
                    assert self.sent.endswith(b"QUIT\r\n"), "Failed(quitting) without a QUIT"
            elif isinstance(event, Finished):
                self.endings += 1
                assert self.endings == 1 or (self.endings == 2 and self.quitting), "two endings"
                assert engine.state is State.CLOSED
            elif isinstance(event, StartTls):
                # Never pipelined behind STARTTLS: it is the last thing written.
                assert self.sent.endswith(b"STARTTLS\r\n") and engine.state is State.TLS
            elif isinstance(event, Done):
                assert event.success == any(r.accepted for r in event.results)
                assert all(200 <= r.code < 300 for r in event.results if r.accepted)
                if event.success:
                    assert self.last_data_end_ok(), "Done(True) without a 2xx to the data"
            elif self.transcript.manual:
                pass
            elif isinstance(event, Idle) and engine.state is State.IDLE:
                if self.envelopes:
                    self._user(engine.use_envelope, self.envelopes.pop(0))
                else:
                    self._user(engine.quit)
            elif isinstance(event, Ready) and engine.state is State.DATA:
                for chunk in BODY:
                    self._user(engine.send, chunk)
                self._user(engine.end)
            extra = engine.data_to_send()
            if extra:
                self.sent += extra
        if engine.state is State.TLS:
            assert self.sent.endswith(b"STARTTLS\r\n"), "written after STARTTLS before the handshake"

    def last_data_end_ok(self) -> bool:
        # The engine logs the end of data as "C: ." and every reply line it handles after it:
        # at least one of those (LMTP: one per recipient) must be a 2xx.
        ends = [
            i
            for i, line in enumerate(self.log)
            if line == ("C", ".") or line[0] == "C" and line[1].endswith(" LAST")
        ]
        answers = [text for direction, text in self.log[ends[-1] :] if direction == "S"] if ends else []
        return any(text.startswith("2") for text in answers)

    # -- invariants ----------------------------------------------------------------------------

    def check(self) -> None:
        engine = self.engine
        parser = engine._parser
        assert parser.buffered <= MAX_REPLY_LINE
        assert len(parser._lines) < MAX_REPLY_LINES
        assert engine._out == [] and engine._events == []
        for event in self.events:
            if isinstance(event, Failed):  # one spelling of stage; code/enhanced None or real
                error = event.error
                assert error.stage in (*COMMAND_STAGES, *STEP_STAGES), repr(error)
                assert error.code is None or isinstance(error.code, int), repr(error)
                assert error.enhanced is None or isinstance(error.enhanced, str), repr(error)
        # RSET, MAIL, one RCPT per recipient of the largest envelope ever given, DATA; with
        # CHUNKING, one reply due per BDAT chunk written (at most one per send()).
        chunks = sum(1 for direction, text in self.log if direction == "C" and text.startswith("BDAT"))
        assert len(engine._pending) + len(engine._queue) <= self.max_recipients + 3 + chunks
        if engine.state is State.CLOSED:
            sent = len(self.sent)
            assert engine.receive_data(b"250 more\r\n") == [] and engine.data_to_send() == b""
            assert len(self.sent) == sent
        for _, text in self.log:
            assert not any(secret in text for secret in SECRETS), text

    def outcome(self) -> str:
        # The error, if there was one (a Finished may follow it, after QUIT); else the last event.
        ending = next((e for e in self.events if isinstance(e, Failed)), None) or next(
            (e for e in reversed(self.events) if isinstance(e, Finished)), None
        )
        if isinstance(ending, Failed):
            what = type(ending.error).__name__
        elif ending is not None:
            what = "Finished"
        else:
            what = type(self.events[-1]).__name__ if self.events else "-"
        return f"{self.engine.state.value} {what}"


# -- the corpus, replayed -------------------------------------------------------------------------------


@pytest.mark.parametrize("transcript", corpus(), ids=lambda t: t.name)
def test_fuzz_corpus_replays_with_its_expected_ending(transcript: Transcript) -> None:
    player = Player(transcript).play()
    assert transcript.expect is not None, f"{transcript.name}: no expect: line"
    assert player.outcome() == transcript.expect


def test_fuzz_corpus_reaches_every_state() -> None:
    reached: set[State] = set()
    for transcript in corpus():
        reached |= Player(transcript).play().states
    assert reached == set(State)


# -- the search ------------------------------------------------------------------------------------------

OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"auth": {"user": "user", "pass": SECRET}},
    {"auth": {"user": "user", "pass": SECRET}, "authMethod": "LOGIN"},
    {"auth": {"user": "user", "pass": SECRET}, "authMethod": "CRAM-MD5"},
    {"auth": {"user": "user", "xoauth2": TOKEN}},
    {"requireTLS": True, "auth": {"user": "user", "pass": SECRET}},
    {"useSecureTransport": True},
    {"lmtp": True},
    {"ignoreTLS": True, "disableEscaping": True},
]
ENVELOPES: list[dict[str, Any]] = [
    {"from": "a@example.com", "to": "b@example.com"},
    {"from": "a@example.com", "to": ["b@example.com", "c@example.com", "d@example.com"], "size": 10},
    {"from": "jöe@example.com", "to": "b@example.com"},
    {"from": "a@example.com", "to": "b@example.com\r\nRSET"},
    {"from": "", "to": []},
]
# Bytes a hostile server likes: reply fragments, STARTTLS go-aheads with payloads, endless
# lines and replies, junk.
HOSTILE_PIECES = [
    b"220 ready\r\n", b"250 ok\r\n", b"250-PIPELINING\r\n", b"250-STARTTLS\r\n", b"250 AUTH PLAIN LOGIN\r\n",
    b"220 go ahead\r\n250 injected\r\n", b"334 VXNlcm5hbWU6\r\n", b"334 not-base64!\r\n", b"334 \r\n",
    b"235 ok\r\n", b"354 go\r\n", b"421 4.4.2 bye\r\n", b"550 5.1.1 no\r\n", b"221 bye\r\n", b"250-",
    b"250-SIZE 10\r\n", b"250-SIZE -1\r\n", b"250-SIZE 99999999999999999999999\r\n", b"\r\n", b"\n",
    b"250-x\r\n" * (MAX_REPLY_LINES + 1), b"250 " + b"x" * (MAX_REPLY_LINE + 1), b"\x00\xff\xfe", b"2", b"25",
    b"HTTP/1.1 400 Bad Request\r\n", b"\x16\x03\x01\x00\x2a", b"250 2.0.0 \xff\xfe\r\n",
]  # fmt: skip


def _user_steps() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.sampled_from(
            [
                ("call", ("quit", None)),
                ("call", ("end", None)),
                ("call", ("close", None)),
                ("call", ("tls_established", None)),
                ("call", ("connection_made", None)),
                ("lost", None),
                ("timeout", None),
                ("tls", None),
            ]
        ),
        st.builds(lambda e: ("call", ("use_envelope", e)), st.sampled_from(ENVELOPES)),
        st.builds(lambda s: ("call", ("send", s)), st.sampled_from(["x", ".\r\n", "\r\n.\r\n", ""])),
    )


def _server_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from(HOSTILE_PIECES),
        st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=6).map(b"".join),
    )


@st.composite
def mutated(draw: st.DrawFn) -> Transcript:
    """A corpus transcript (or none) with a few mutations."""
    base = draw(st.sampled_from([*CORPUS_TRANSCRIPTS, Transcript("empty")]))
    steps = list(base.steps)
    options = base.options if draw(st.booleans()) else draw(st.sampled_from(OPTION_SETS))
    envelopes = (
        base.envelopes if draw(st.booleans()) else draw(st.lists(st.sampled_from(ENVELOPES), max_size=3))
    )
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(0, len(steps)))
        action = draw(st.sampled_from(["insert", "user", "drop", "flip", "cut", "rechunk", "truncate"]))
        data_steps = [i for i, (kind, _) in enumerate(steps) if kind == "data"]
        if action == "insert":
            steps.insert(where, ("data", draw(_server_bytes())))
        elif action == "user":
            steps.insert(where, draw(_user_steps()))
        elif action == "drop" and steps:
            del steps[min(where, len(steps) - 1)]
        elif action == "truncate":
            del steps[where:]
        elif data_steps:
            index = draw(st.sampled_from(data_steps))
            data: bytes = steps[index][1]
            at = draw(st.integers(0, len(data)))
            if action == "flip" and data:
                at = min(at, len(data) - 1)
                data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
                steps[index] = ("data", data)
            elif action == "cut":
                steps[index] = ("data", data[:at])
            elif action == "rechunk":
                steps[index : index + 1] = [("data", data[:at]), ("data", data[at:])]
    return Transcript(f"mutant of {base.name}", options, base.host, base.loopback, envelopes, steps)


CORPUS_TRANSCRIPTS = corpus()


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(mutated())
def test_fuzz_engine_with_mutated_transcripts(transcript: Transcript) -> None:
    player = Player(transcript).play()
    # Whatever state it is left in, the connection can still be lost cleanly.
    player.step("lost", None)
    assert player.engine.state is State.CLOSED and player.endings <= (2 if player.quitting else 1)
