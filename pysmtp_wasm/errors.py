"""The library's errors.

Two families, in the h11 manner:

* the *server or the network* misbehaved or said no (:class:`SmtpReplyError`,
  :class:`SmtpProtocolError`, :class:`SmtpTimeoutError`, :class:`SmtpConnectionError`,
  :class:`SmtpTlsError`);
* *you* asked for something that cannot be done (:class:`SmtpUsageError` for a call in the
  wrong state, raised at once, nothing changed; :class:`SmtpEnvelopeError` for an envelope
  that would be unsafe or is not sendable: nothing of it is sent).

Every error reported through ``onerror`` ends the connection (``fatal`` is true):
``onclose(true)`` follows, after a QUIT when the session was in a state to say it. Only
:class:`SmtpUsageError` is raised instead, and leaves the connection as it was (``fatal`` false).

Every error carries the evidence: the SMTP ``code``, the RFC 3463 ``enhanced`` status code,
the server's text, and the ``stage`` (which command) that failed.
"""

from __future__ import annotations

__all__ = [
    "SmtpError",
    "SmtpReplyError",
    "SmtpAuthError",
    "SmtpRecipientsError",
    "SmtpProtocolError",
    "SmtpTimeoutError",
    "SmtpConnectionError",
    "SmtpTlsError",
    "SmtpUsageError",
    "SmtpEnvelopeError",
]


class SmtpError(Exception):
    """Base class of every error this library reports.

    Attributes:
        code: the SMTP reply code (e.g. 535), or None when no reply is involved.
        enhanced: the RFC 3463 enhanced status code (e.g. "5.7.8"), or None.
        stage: the step that failed, or None: the command whose reply failed or was awaited,
            in capitals ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", ...), or a step that is not a
            command, in lower case ("connect", "greeting", "tls", "envelope", ...); the list is
            ``_state.COMMAND_STAGES`` and ``_state.STEP_STAGES``.
        fatal: True when the connection is closed because of this error.
    """

    fatal = True

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.enhanced = enhanced
        self.stage = stage

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("code", self.code), ("enhanced", self.enhanced), ("stage", self.stage))
            if value is not None
        )
        return f"{type(self).__name__}({self.message!r}{extra})"


class SmtpReplyError(SmtpError):
    """The server answered a command with a failure reply (4xx or 5xx)."""


class SmtpAuthError(SmtpReplyError):
    """Authentication failed; the message is the server's text."""


class SmtpRecipientsError(SmtpReplyError):
    """Every recipient was rejected.

    ``rejected`` maps each address to the server's reply text for it.
    """

    def __init__(self, message: str, rejected: dict[str, str], **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.rejected = rejected


class SmtpProtocolError(SmtpError):
    """The server sent something that is not SMTP (a malformed or oversized reply)."""


class SmtpTimeoutError(SmtpError):
    """The server did not answer in time."""


class SmtpConnectionError(SmtpError):
    """The connection could not be made, or it was lost."""


class SmtpTlsError(SmtpError):
    """TLS could not be set up: no STARTTLS, a failed handshake or an untrusted certificate;
    or AUTH would have sent a password or token in cleartext (``stage`` "AUTH"; see the
    option ``allowInsecureAuth``)."""


class SmtpUsageError(SmtpError):
    """A method was called in a state that does not allow it (raised at once, nothing sent,
    the connection left as it was)."""

    fatal = False


class SmtpEnvelopeError(SmtpUsageError):
    """The envelope cannot be sent: no recipients, an unsafe or malformed address, a size
    over the server's limit, or a non-ASCII address without SMTPUTF8.

    Reported through ``onerror`` before anything of the envelope is sent; then the session
    ends with QUIT and ``onclose(true)``, as after every error.
    """

    fatal = True
