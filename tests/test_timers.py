"""The client's timeouts against a fake clock: the real SmtpClient and engine, a transport that
records what is written and runs timers on a clock the test moves. No sleeping, no wall-clock
thresholds: the test says when time passes and checks what fired.

The rules (the seed's): a timeout runs while the server owes us something; it restarts when a
command is written and when a complete reply arrives (never on a partial one); its length is
``timeoutSocketLowerBound`` plus ``timeoutSocketMultiplier`` per byte written since the last
reply (``timeoutGreeting`` for the greeting)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from pysmtp_wasm import SmtpClient, SmtpError, SmtpTimeoutError
from pysmtp_wasm import _client as client_module


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + seconds, callback)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing each timer due on the way at its own time, in order."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, due)
            timer.fired = True
            timer.callback()
        self.now = end

    @property
    def pending(self) -> list[float]:
        return sorted(t.due for _, _, t in self._timers if not t.cancelled and not t.fired)


class Timer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback = due, callback
        self.cancelled = self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTransport:
    """Bytes written are kept; the test plays the server through the owner's reports."""

    def __init__(self, owner: Any, clock: Clock) -> None:
        self.owner, self.clock = owner, clock
        self.written = bytearray()
        self.closed = False
        self.writable = True

    def open(self, host: str, port: int, *, secure: bool, ca: Any, options: dict[str, Any]) -> None:
        pass

    def write(self, data: bytes) -> bool:
        self.written += data
        return self.writable

    def start_tls(self) -> None:
        raise AssertionError("no TLS in these tests")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner._transport_closed()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return self.clock.call_later(seconds, callback)

    def stays_local(self) -> bool:
        return True


class Session:
    """A connected client at the fake clock, with what it reported."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **options: Any) -> None:
        self.clock = Clock()
        monkeypatch.setattr(client_module, "monotonic", lambda: self.clock.now)
        self.transport: FakeTransport | None = None

        def factory(owner: Any) -> FakeTransport:
            self.transport = FakeTransport(owner, self.clock)
            return self.transport

        self.client = SmtpClient("localhost", 25, options, transport=factory)
        self.errors: list[SmtpError] = []
        self.events: list[str] = []
        self.client.onerror = self.errors.append
        self.client.onidle = lambda: self.events.append("idle")
        self.client.onready = lambda failed: self.events.append("ready")
        self.client.ondone = lambda ok: self.events.append(f"done:{ok}")
        self.client.onclose = lambda is_error: self.events.append(f"close:{is_error}")
        self.client.connect()
        assert self.transport is not None
        self.client._transport_open()

    def server(self, data: bytes) -> None:
        self.client._transport_data(data)

    def wrote(self) -> bytes:
        assert self.transport is not None
        data = bytes(self.transport.written)
        self.transport.written.clear()
        return data

    def to_idle(self, ehlo: bytes = b"250 hi\r\n") -> None:
        self.server(b"220 hi\r\n")
        assert self.wrote() == b"EHLO localhost\r\n"
        self.server(ehlo)
        assert self.events == ["idle"]

    def timed_out(self) -> SmtpTimeoutError | None:
        errors = [e for e in self.errors if isinstance(e, SmtpTimeoutError)]
        return errors[0] if errors else None


def test_the_greeting_times_out_at_timeout_greeting(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Session(monkeypatch, timeoutGreeting=5000)
    s.clock.advance(4.99)
    assert s.errors == []
    s.clock.advance(0.02)
    error = s.timed_out()
    assert error is not None and error.stage == "greeting" and "the greeting" in str(error)


def test_a_timer_does_not_fire_at_its_old_deadline_after_a_reply_moved_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAIL at t=0 (deadline 1 s); its reply at 0.9 s writes RCPT, which moves the deadline to
    1.9 s: nothing may fire at 1 s; at 1.9 s the RCPT wait times out."""
    s = Session(monkeypatch, timeoutSocketLowerBound=1000, timeoutSocketMultiplier=0)
    s.to_idle()
    s.client.useEnvelope({"from": "a@example.com", "to": "b@example.com"})
    assert s.wrote() == b"MAIL FROM:<a@example.com>\r\n"
    s.clock.advance(0.9)
    s.server(b"250 ok\r\n")
    assert s.wrote() == b"RCPT TO:<b@example.com>\r\n"
    s.clock.advance(0.95)  # 1.85 s: past the first deadline, before the second
    assert s.errors == [] and s.client.state == "envelope"
    s.clock.advance(0.1)  # 1.95 s
    error = s.timed_out()
    assert error is not None and error.stage == "RCPT", s.errors


def test_the_per_byte_allowance_resets_after_a_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 000-byte message at 1 ms a byte earns 10 s for the reply to its end; the next
    command (MAIL of the next message) gets the lower bound and its own bytes only."""
    s = Session(monkeypatch, timeoutSocketLowerBound=1000, timeoutSocketMultiplier=1)
    s.to_idle()
    s.client.useEnvelope({"from": "a@example.com", "to": "b@example.com"})
    s.server(b"250 ok\r\n")
    s.server(b"250 ok\r\n")
    s.server(b"354 go\r\n")
    assert s.events == ["idle", "ready"]
    s.wrote()
    s.client.send(b"x" * 9998 + b"\r\n")
    s.client.end()
    s.clock.advance(10.5)  # within 1 s + 10 ms a byte of the message
    assert s.errors == []
    s.server(b"250 queued\r\n")
    assert s.events[-2:] == ["done:True", "idle"]
    s.wrote()
    s.client.useEnvelope({"from": "a@example.com", "to": "b@example.com"})
    mail = s.wrote()
    assert mail == b"MAIL FROM:<a@example.com>\r\n"
    s.clock.advance(1.0 + len(mail) / 1000 + 0.01)
    error = s.timed_out()
    assert error is not None and error.stage == "MAIL", s.errors


def test_a_slow_but_progressing_server_is_not_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reply comes 0.9 s after its command, with a 1 s timeout: a session of 12 steps
    (10.8 s in all) goes through."""
    s = Session(monkeypatch, timeoutSocketLowerBound=1000, timeoutSocketMultiplier=0)
    s.clock.advance(0.9)
    s.server(b"220 hi\r\n")
    s.clock.advance(0.9)
    s.server(b"250 hi\r\n")
    recipients = [f"r{i}@example.com" for i in range(8)]
    s.client.useEnvelope({"from": "a@example.com", "to": recipients})
    for _ in range(1 + len(recipients)):  # MAIL, each RCPT (no PIPELINING: one at a time)
        s.clock.advance(0.9)
        s.server(b"250 ok\r\n")
    s.clock.advance(0.9)
    s.server(b"354 go\r\n")
    s.client.send(b"Subject: slow\r\n\r\nbody\r\n")
    s.client.end()
    s.clock.advance(0.9)
    s.server(b"250 queued\r\n")
    assert s.errors == [] and s.events == ["idle", "ready", "done:True", "idle"]
    s.clock.advance(60)  # idle: nothing is owed, nothing fires
    assert s.errors == []


def test_a_reply_dripped_in_pieces_still_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that do not complete a reply do not restart the timer."""
    s = Session(monkeypatch, timeoutSocketLowerBound=1000, timeoutSocketMultiplier=0)
    s.to_idle()
    s.client.useEnvelope({"from": "a@example.com", "to": "b@example.com"})
    for byte in b"250 o":
        s.clock.advance(0.3)
        if s.errors:
            break
        s.server(bytes([byte]))
    error = s.timed_out()
    assert error is not None and error.stage == "MAIL" and s.clock.now - 1000.0 < 1.3


def test_idle_and_quit(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timer runs while idle; QUIT has one: a server that never answers it is closed."""
    s = Session(monkeypatch, timeoutSocketLowerBound=1000)
    s.to_idle()
    s.clock.advance(3600)
    assert s.errors == []
    s.client.quit()
    assert s.wrote() == b"QUIT\r\n"
    s.clock.advance(1.1)
    error = s.timed_out()
    assert error is not None and error.stage == "QUIT" and s.events[-1] == "close:True"


def test_a_shorter_lower_bound_set_while_a_wait_runs_applies_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer of a wait sleeps at most the shortest timeout; a page that lowers
    ``timeoutSocketLowerBound`` meanwhile wakes it: the wait under way gets the new bound."""
    s = Session(monkeypatch, timeoutSocketLowerBound=10_000, timeoutSocketMultiplier=0)
    s.to_idle()
    s.client.useEnvelope({"from": "a@example.com", "to": "b@example.com"})
    s.clock.advance(0.5)
    s.client.timeoutSocketLowerBound = 1000
    s.clock.advance(0.49)  # 0.99 s after MAIL
    assert s.errors == []
    s.clock.advance(0.02)
    error = s.timed_out()
    assert error is not None and error.stage == "MAIL", s.errors


def test_a_deadline_that_progress_brings_closer_is_met(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greeting may take 30 s; it comes at once, and EHLO's reply is owed within 1 s. The
    timer set for the greeting must not sleep past that."""
    s = Session(monkeypatch, timeoutGreeting=30_000, timeoutSocketLowerBound=1000)
    s.server(b"220 hi\r\n")
    assert s.wrote() == b"EHLO localhost\r\n"
    s.clock.advance(0.99)
    assert s.errors == []
    s.clock.advance(0.02)
    error = s.timed_out()
    assert error is not None and error.stage == "EHLO", s.errors
