"""A scripted server for the sans-IO engine: exchanges of (what the client must have sent,
what the server answers), with control over how the server's bytes are chunked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pysmtp_wasm import Done, Failed, Finished, Idle, Log, Ready, SmtpEngine, StartTls, parse_options

Exchange = tuple[bytes, bytes]  # (client bytes expected before, server bytes answered)


class Harness:
    """Drives an engine like the client facade does, recording what it writes and reports.

    ``on_idle``/``on_ready``/``on_done`` play the user: they get the harness and act on the
    engine (use_envelope, send, end, quit).
    """

    def __init__(
        self,
        options: dict[str, Any] | None = None,
        on_idle: Callable[[Harness], None] | None = None,
        on_ready: Callable[[Harness, list[str]], None] | None = None,
        on_done: Callable[[Harness, Done], None] | None = None,
        transcript: bool = True,
        host: str = "localhost",
        loopback: bool = True,
    ) -> None:
        self.engine = SmtpEngine(parse_options(options or {}), host=host)
        # What a transport says of the peer it reached (SmtpClient sets it at connection_made):
        # by default these scripts play a server on this machine.
        self.engine.stays_local = loopback
        self.engine.transcript = transcript
        self.sent = bytearray()
        self.events: list[Any] = []
        self.log: list[tuple[str, str]] = []
        self.on_idle = on_idle
        self.on_ready = on_ready
        self.on_done = on_done
        self.idles = 0
        self._take(self.engine.connection_made())

    def feed(self, data: bytes) -> None:
        self._take(self.engine.receive_data(data))

    def tls(self) -> None:
        self._take(self.engine.tls_established())

    def call(self, method: str, *args: Any) -> None:
        self._take(getattr(self.engine, method)(*args) or [])

    def _take(self, events: Iterable[Any]) -> None:
        self.sent += self.engine.data_to_send()
        for event in events:
            if isinstance(event, Log):
                self.log.append((event.direction, event.text))
                continue
            self.events.append(event)
            if isinstance(event, Idle) and self.engine.state.value == "idle":
                self.idles += 1
                if self.on_idle:
                    self.on_idle(self)
            elif isinstance(event, Ready) and self.on_ready:
                self.on_ready(self, event.failed_recipients)
            elif isinstance(event, Done) and self.on_done:
                self.on_done(self, event)
            self.sent += self.engine.data_to_send()

    def outcome(self) -> tuple[bytes, list[str]]:
        """Everything the client wrote, and the events by name (errors with their text)."""
        names = []
        for event in self.events:
            if isinstance(event, Failed):
                names.append(f"Failed({type(event.error).__name__}: {event.error})")
            elif isinstance(event, Ready):
                names.append(f"Ready({event.failed_recipients})")
            elif isinstance(event, Done):
                names.append(f"Done({event.success}, {[(r.recipient, r.code) for r in event.results]})")
            else:
                names.append(type(event).__name__)
        return bytes(self.sent), names


def run(
    exchanges: Sequence[Exchange],
    chunker: Callable[[int, bytes], Iterable[bytes]] = lambda i, data: [data],
    **kwargs: Any,
) -> Harness:
    """Play the exchanges in order; each exchange's server bytes are cut by ``chunker``.

    Before answering, the script checks that the client sent exactly what was expected.
    """
    harness = Harness(**kwargs)
    checked = 0
    for index, (expected, answer) in enumerate(exchanges):
        got = bytes(harness.sent[checked:])
        assert got == expected, f"exchange {index}: expected {expected!r}, client sent {got!r}"
        checked = len(harness.sent)
        if answer == b"<TLS>":
            assert isinstance(harness.events[-1], StartTls)
            harness.tls()
            continue
        for chunk in chunker(index, answer):
            harness.feed(chunk)
    return harness


def user(
    envelope: dict[str, Any] | None = None, chunks: Sequence[bytes] = (), messages: int = 1
) -> dict[str, Any]:
    """Harness callbacks that play the user: ``messages`` times an envelope (by default from
    a@example.com to b@ and c@example.com) and the chunks, then QUIT."""

    def on_idle(h: Harness) -> None:
        if h.idles <= messages:
            h.call(
                "use_envelope",
                envelope or {"from": "a@example.com", "to": ["b@example.com", "c@example.com"]},
            )
        else:
            h.call("quit")

    def on_ready(h: Harness, failed: list[str]) -> None:
        for chunk in chunks:
            h.engine.send(chunk)
        h.call("end")

    return {"on_idle": on_idle, "on_ready": on_ready}


def bytewise(index: int, data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


__all__ = ["Harness", "run", "bytewise", "Finished", "Failed", "Idle", "Ready", "Done", "StartTls"]
