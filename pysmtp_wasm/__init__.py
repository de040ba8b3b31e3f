"""pysmtp_wasm: an SMTP/LMTP client with emailjs-smtp-client's API, on a sans-IO engine.

Runs in CPython (asyncio) and in Pyodide in the browser (over a WebSocket-to-TCP proxy).
"""

from ._client import SmtpClient
from ._engine import SmtpEngine
from ._events import Done, Failed, Finished, Idle, Log, Ready, RecipientResult, StartTls
from ._options import Options, parse_options
from ._reply import Reply, ReplyParser
from ._state import State
from .errors import (
    SmtpAuthError,
    SmtpConnectionError,
    SmtpEnvelopeError,
    SmtpError,
    SmtpProtocolError,
    SmtpRecipientsError,
    SmtpReplyError,
    SmtpTimeoutError,
    SmtpTlsError,
    SmtpUsageError,
)

__version__ = "0.1.0"

__all__ = [
    "SmtpClient",
    "SmtpEngine",
    "State",
    "Options",
    "parse_options",
    "Reply",
    "ReplyParser",
    "Idle",
    "Ready",
    "Done",
    "StartTls",
    "Failed",
    "Finished",
    "Log",
    "RecipientResult",
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
