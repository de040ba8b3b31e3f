"""What the engine reports. Each maps to one of the seed's callbacks (or to a transport action)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import SmtpError


class RecipientResult(NamedTuple):
    """What the server said of one recipient.

    For SMTP, an accepted recipient's result is the reply to the end of data (one reply for
    the whole message); for LMTP it is that recipient's own delivery reply. A recipient
    refused at RCPT TO carries that refusal.

    (A named tuple, as :class:`~pysmtp_wasm._reply.Reply`: one is made per recipient of every
    message, and a frozen dataclass's ``__init__`` costs several times as much in WebAssembly.)
    """

    recipient: str
    accepted: bool
    code: int
    message: str
    enhanced: str | None = None


@dataclass(frozen=True)
class Idle:
    """Ready for an envelope (``onidle``)."""


@dataclass(frozen=True)
class Ready:
    """The envelope was accepted; stream the message (``onready(failedRecipients)``)."""

    failed_recipients: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Done:
    """The server answered the end of the message (``ondone(success, results)``)."""

    success: bool
    results: list[RecipientResult] = field(default_factory=list)


@dataclass(frozen=True)
class StartTls:
    """The server said "220 go ahead": the transport must now do the TLS handshake, then call
    :meth:`SmtpEngine.tls_established`."""


@dataclass(frozen=True)
class Failed:
    """An error ends the session (``onerror`` then ``onclose(true)``): close the transport.

    With ``quitting`` the engine has written QUIT (the session was in a state to say it):
    close the transport on :class:`Finished` instead, which follows the reply or, if none
    comes in time, a timeout passed to :meth:`SmtpEngine.fail`.
    """

    error: SmtpError
    quitting: bool = False


@dataclass(frozen=True)
class Finished:
    """The server answered QUIT: close the transport (``onclose(false)``)."""


@dataclass(frozen=True)
class Log:
    """One transcript line: ``direction`` is "C" (client), "S" (server) or "*" (a note).

    Secrets are already masked.
    """

    direction: str
    text: str


Event = Idle | Ready | Done | StartTls | Failed | Finished | Log
