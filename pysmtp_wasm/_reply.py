"""Server replies: bytes in, :class:`Reply` objects out (RFC 5321 §4.2)."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import SmtpProtocolError

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers stay far below, and
# Postfix caps its own lines at 2048. Twice that leaves room for verbose servers while a
# server that streams an endless line is stopped after 4 KiB, not after all our memory.
MAX_REPLY_LINE = 4096

# An EHLO reply has some twenty lines; Exim and Postfix never send more than a few dozen.
# Bounding the line count bounds a multi-line reply's memory too (lines x line length).
MAX_REPLY_LINES = 256

# RFC 3463 §2: class.subject.detail, where subject and detail are 1-3 digits.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class Reply(NamedTuple):
    """One complete (possibly multi-line) server reply.

    (A named tuple rather than a frozen dataclass: one is made per reply, and a frozen
    dataclass's ``__init__`` costs several times as much in WebAssembly.)
    """

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None

    @property
    def text(self) -> str:
        """The reply's text lines joined by newlines, without the codes."""
        return "\n".join(self.lines)

    @property
    def ok(self) -> bool:
        """True for a positive completion (2xx)."""
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        """True for a positive intermediate reply (3xx: send more)."""
        return 300 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def _enhanced_code(code: int, text: str) -> str | None:
    """The RFC 3463 code at the start of ``text`` when its class matches the reply code."""
    match = _ENHANCED.match(text)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return None


# A reply line's start: three digits, the first 2-5, then " ", "-" or nothing (RFC 5321 §4.2).
_HEAD = re.compile(r"[2-5][0-9][0-9](?:[ -]|\Z)")

# A whole segment that is one last (or only) reply line: its code, and its text if any.
_ONE_LINE = re.compile(rb"([2-5][0-9][0-9])(?: ([^\n]*?))?\r?\n")

# Reply(code, lines, enhanced) without its __new__: a named tuple's __new__ is a Python
# function, and one call less per reply counts in WebAssembly.
_new_reply = tuple.__new__


class ReplyParser:
    """Assembles replies from arbitrary chunks of bytes.

    Lines may arrive split at any byte and several replies may arrive in one chunk; the
    result never depends on the chunking. Lines end in CRLF; a bare LF is accepted too, as
    most clients do, since a server that sends one means no harm by it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a reply line not yet complete."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget everything received so far (after STARTTLS: RFC 3207 §4.2)."""
        self._buffer.clear()
        self._lines.clear()
        self._code = None

    def feed(self, data: bytes) -> list[Reply]:
        """Take received bytes; return the replies they complete, in order."""
        buffer = self._buffer
        if not buffer and self._code is None and len(data) <= MAX_REPLY_LINE + 1:
            # The usual case, a one-line reply in a segment of its own: one match of the whole
            # segment, no copy into the buffer, no search for more lines. (What _line would make
            # of it; anything else takes the way below.)
            one = _ONE_LINE.fullmatch(data)
            if one is not None:
                code, raw = one.groups()
                text = raw.decode("utf-8", "replace") if raw else ""
                match = _ENHANCED.match(text)
                # (the enhanced code's class is its first character, the reply code's is the segment's)
                enhanced = match.group(0) if match is not None and ord(text[0]) == data[0] else None
                return [_new_reply(Reply, (int(code), (text,), enhanced))]
        replies: list[Reply] = []
        buffer += data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > MAX_REPLY_LINE:
                raise SmtpProtocolError(
                    f"server reply line longer than {MAX_REPLY_LINE} bytes", stage="reply"
                )
            line = bytes(buffer[start:end])
            start = end + 1
            reply = self._line(line[:-1] if line.endswith(b"\r") else line)
            if reply is not None:
                replies.append(reply)
        del buffer[:start]
        if len(buffer) > MAX_REPLY_LINE:
            raise SmtpProtocolError(f"server reply line longer than {MAX_REPLY_LINE} bytes", stage="reply")
        return replies

    def _line(self, raw: bytes) -> Reply | None:
        # Replies are ASCII (RFC 5321 §4.2); a stray byte must not stop us from reporting
        # the server's words, so undecodable bytes are replaced rather than refused.
        line = raw.decode("utf-8", "replace")
        if _HEAD.match(line) is None:
            raise SmtpProtocolError(f"malformed server reply: {line[:80]!r}", stage="reply")
        code = int(line[:3])
        text = line[4:]
        last = line[3:4] != "-"
        lines = self._lines
        if self._code is None:
            if last:
                # A one-line reply (the usual one): no list to keep. (The enhanced code's class
                # is its first character, the reply code's is the line's.)
                match = _ENHANCED.match(text)
                enhanced = match.group(0) if match is not None and text[0] == line[0] else None
                return _new_reply(Reply, (code, (text,), enhanced))
        elif code != self._code:
            raise SmtpProtocolError(
                f"multi-line reply changed its code from {self._code} to {code}", stage="reply"
            )
        self._code = code
        lines.append(text)
        if not last:
            if len(lines) >= MAX_REPLY_LINES:
                raise SmtpProtocolError(f"server reply longer than {MAX_REPLY_LINES} lines", stage="reply")
            return None
        result = tuple(lines)
        lines.clear()
        self._code = None
        return _new_reply(Reply, (code, result, _enhanced_code(code, result[0])))
