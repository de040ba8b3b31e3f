"""From an ``email.message.EmailMessage`` to an envelope and the bytes to send, and from a
plain mail object (JS ``sendMail``'s argument) to an ``EmailMessage``.

Imported only by the high-level API, so the low-level client does not pay for the ``email``
package at start-up.
"""

from __future__ import annotations

import copy
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from ._events import RecipientResult
from .errors import SmtpEnvelopeError

# Pieces the message is streamed in: big enough to keep the socket busy, small enough that
# progress moves and ondrain gets a say.
CHUNK_SIZE = 64 * 1024

# RFC 5322 §2.2: a field name is printable ASCII except the colon. Anything else (a CR, LF,
# space or colon) would let a name given by the page start a header of its choosing (CPython
# 3.11's ``email`` takes "X-A\r\nBcc" as a name).
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# A line break in a value is folding only when whitespace follows (RFC 5322 §2.2.3).
_FOLD = re.compile(r"\r?\n[ \t]")


def _check_header(name: object, value: object, *, folded: bool = False) -> None:
    """Refuse a header whose name is not a field name, or whose value holds a CR, LF or NUL
    (a folded value from a parsed message, ``folded``: a line break followed by whitespace,
    is allowed), or text that UTF-8 cannot encode."""
    if not isinstance(name, str) or _FIELD_NAME.fullmatch(name) is None:
        raise SmtpEnvelopeError(
            f"header name {name!r} is not a field name (printable ASCII without ':' or space)",
            stage="message",
        )
    text = value if isinstance(value, str) else str(value)
    if folded:
        text = _FOLD.sub(" ", text)
    for char, what in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if char in text:
            raise SmtpEnvelopeError(f"header {name}: the value contains {what}", stage="message")
    _check_text(text, f"header {name}")


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise SmtpEnvelopeError(
            f"{what} is not valid Unicode (U+{ord(text[error.start]):04X}, a lone surrogate, at "
            f"{error.start})",
            stage="message",
        ) from None


@dataclass
class SendResult:
    """What the server said of a message sent with ``send_message``/``sendMail``."""

    accepted: list[str]
    rejected: list[str]
    results: list[RecipientResult] = field(default_factory=list)
    message_id: str | None = None
    size: int = 0


@dataclass
class Prepared:
    sender: str
    recipients: list[str]
    data: bytes
    message_id: str | None


def _addresses(values: Sequence[str]) -> list[str]:
    return [address for _, address in getaddresses([str(v) for v in values]) if address]


def prepare(msg: Message, sender: str | None = None, recipients: Sequence[str] | None = None) -> Prepared:
    """The envelope (from Sender/From; To, Cc and Bcc, as smtplib does, Resent-* when present)
    and the bytes of the message without its Bcc headers, CRLF line endings.

    Non-ASCII addresses need SMTPUTF8: the message is then serialized with UTF-8 headers
    (RFC 6532); otherwise non-ASCII header text is RFC 2047-encoded and the bytes are ASCII
    in the headers.
    """
    # The headers as stored (items() would parse them first, and fail in its own words).
    for name, value in msg.raw_items():
        _check_header(name, value, folded=True)
    try:
        return _prepare(msg, sender, recipients)
    except (UnicodeError, ValueError) as error:
        raise SmtpEnvelopeError(f"the message cannot be sent as it is: {error}", stage="message") from None


def _prepare(msg: Message, sender: str | None, recipients: Sequence[str] | None) -> Prepared:
    resent = msg.get_all("Resent-Date")
    prefix = "Resent-" if resent else ""
    if sender is None:
        found = _addresses(msg.get_all(prefix + "Sender", []) or msg.get_all(prefix + "From", []))
        if not found:
            raise SmtpEnvelopeError("the message has no From header: pass sender", stage="envelope")
        sender = found[0]
    if recipients is None:
        fields = [msg.get_all(prefix + name, []) for name in ("To", "Cc", "Bcc")]
        recipients = _addresses([value for values in fields for value in values])
    # Deleting rebinds the copy's header list: the caller's message keeps its Bcc.
    public = copy.copy(msg)
    del public["Bcc"]
    del public["Resent-Bcc"]
    international = not all(a.isascii() for a in (sender, *recipients))
    try:
        data = public.as_bytes(policy=(policy.SMTPUTF8 if international else policy.SMTP))
    except (UnicodeError, ValueError, TypeError) as error:
        # A body or part that cannot be written as bytes (a lone surrogate, say): ours, not
        # the email package's error.
        raise SmtpEnvelopeError(f"the message cannot be written as bytes: {error}", stage="message") from None
    return Prepared(sender, list(recipients), data, msg.get("Message-ID"))


def _joined(value: Any) -> str | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return value
    return ", ".join(str(v) for v in value)


MAIL_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "text", "html", "attachments", "replyTo", "headers"}
)
_ADDRESS_HEADERS = (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "replyTo"))


def build_message(mail: Mapping[str, Any]) -> EmailMessage:
    """An ``EmailMessage`` from ``{from, to, cc, bcc, subject, text, html, attachments,
    headers}``; an attachment is ``{filename, content (bytes or str), contentType?}``.

    What cannot make a message (a header name that is not a field name, a CR or LF in a
    value, a lone surrogate anywhere) raises :class:`SmtpEnvelopeError`, never the ``email``
    package's or the codec's own error."""
    try:
        return _build_message(mail)
    except (UnicodeError, ValueError) as error:
        raise SmtpEnvelopeError(f"the mail cannot be made into a message: {error}", stage="message") from None


def _build_message(mail: Mapping[str, Any]) -> EmailMessage:
    unknown = set(mail) - MAIL_FIELDS
    if unknown:
        raise SmtpEnvelopeError(f"unknown mail field(s): {', '.join(sorted(unknown))}", stage="message")
    msg = EmailMessage()
    sender = mail.get("from")
    if not sender:
        raise SmtpEnvelopeError("the mail needs a from address", stage="message")
    for header, key in _ADDRESS_HEADERS:
        value = _joined(mail.get(key))
        if value is not None:
            _check_header(header, value)
            msg[header] = value
    if not any(mail.get(key) for key in ("to", "cc", "bcc")):
        raise SmtpEnvelopeError("Can't send mail - no recipients defined", stage="message")
    _check_header("Subject", mail.get("subject") or "")
    msg["Subject"] = mail.get("subject") or ""
    msg["Date"] = formatdate(localtime=True)
    domain = (_addresses([str(sender)]) or ["@localhost"])[0].rpartition("@")[2] or "localhost"
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    msg["Message-ID"] = make_msgid(domain=domain)
    for name, value in (mail.get("headers") or {}).items():
        _check_header(name, value)
        msg[name] = str(value)
    text, html = mail.get("text"), mail.get("html")
    for key in ("subject", "text", "html"):
        if isinstance(mail.get(key), str):
            _check_text(mail[key], key)
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(str(text))
        if html is not None:
            msg.add_alternative(str(html), subtype="html")
    else:
        msg.set_content(str(html), subtype="html")
    for attachment in mail.get("attachments") or []:
        filename = attachment.get("filename") or "attachment"
        content = attachment.get("content", b"")
        content_type = (
            attachment.get("contentType") or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        )
        maintype, _, subtype = content_type.partition("/")
        if isinstance(content, str) and maintype == "text":
            # Text given as text goes in as text/*; charset=utf-8.
            msg.add_attachment(content, subtype=subtype or "plain", filename=filename)
        else:
            # Bytes stay bytes (base64): they come out byte-identical.
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return msg
