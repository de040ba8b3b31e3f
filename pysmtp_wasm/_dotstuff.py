"""The message stream encoder: line endings, dot-stuffing and the end-of-data marker.

RFC 5321 §4.5.2: a line of the message that begins with "." gets one more "." in front,
and the data ends with CRLF "." CRLF. Line starts can fall across two ``send()`` chunks, so
the encoder remembers where the last chunk ended.

Line endings are made canonical (every bare CR or LF becomes CRLF, RFC 5321 §2.3.8): a
lone "\\n.\\r\\n" in the body is how SMTP smuggling (CVE-2023-51764 and kin) makes a server
see an end of data that the client never meant, so no bare line ending leaves this encoder.

With CHUNKING (RFC 3030, ``BDAT``) there is no end-of-data marker and so no dot-stuffing
(``dots=False``), but the line endings are made CRLF all the same: RFC 3030 §3 keeps that
rule for 7BIT and 8BITMIME bodies.
"""

from __future__ import annotations

END_OF_DATA = b".\r\n"
CRLF = b"\r\n"

# Translation tables: a chunk's CRs as 1 and every other byte as 0; its LFs likewise.
_CRS = bytes(int(i == 13) for i in range(256))
_LFS = bytes(int(i == 10) for i in range(256))


def _only_crlf(data: bytes) -> bool:
    """Whether every line ending in ``data`` is CRLF: each CR is followed by an LF and each LF
    follows a CR, that is the places of the CRs, moved one on, are the places of the LFs (and
    it neither starts with LF nor ends with CR). Two byte-for-byte translations and a memcmp:
    cheaper than counting CRs, LFs and CRLFs (a two-byte search). (Slices and ==: in Pyodide
    twice as fast as startswith() on a memoryview, which would spare the copies.)"""
    return data[:1] != b"\n" and data[-1:] != b"\r" and data.translate(_CRS)[:-1] == data.translate(_LFS)[1:]


class DotStuffer:
    """Turns message chunks into DATA bytes (or, with ``dots=False``, into BDAT chunk bytes)."""

    def __init__(self, escape: bool = True, dots: bool = True) -> None:
        self._escape = escape
        self._dots = dots
        self._line_start = True  # the next byte begins a line
        self._pending_cr = False  # the last chunk ended in CR; its LF may come next
        self._tail = b""  # last two bytes written, for the raw (unescaped) mode
        self.bytes_in = 0

    def encode(self, chunk: bytes) -> bytes:
        """Encode one chunk of the message."""
        if not chunk:
            return b""
        self.bytes_in += len(chunk)
        if not self._escape:
            self._tail = (self._tail + chunk)[-2:]
            return chunk
        data = chunk
        if self._pending_cr:
            self._pending_cr = False
            data = b"\r" + data
        if data.endswith(b"\r"):
            # Hold a trailing CR back: whether it is a CRLF or a bare CR shows in the next chunk.
            self._pending_cr = True
            data = data[:-1]
            if not data:
                return b""
        # Each pass over the chunk counts: in WebAssembly these scans are most of the cost of
        # sending (bench/README.md).
        if not _only_crlf(data):
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            data = data.replace(b"\n", b"\r\n")
        if self._dots:
            # Split on CRLF "." (a three-byte search, faster than a two-byte one) and join only
            # when there was one: faster than replace().
            lines = data.split(b"\r\n.")
            if len(lines) > 1:
                data = b"\r\n..".join(lines)
            if self._line_start and data[:1] == b".":
                data = b"." + data
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """The bytes that end the message: a CRLF if the last line lacks one, then "." CRLF."""
        return self.finish_line() + END_OF_DATA

    def finish_line(self) -> bytes:
        """The CRLF that ends the last line if it lacks one (a BDAT message ends so too)."""
        if not self._escape:
            return b"" if self._tail.endswith(CRLF) or self._tail == b"" else CRLF
        if self._pending_cr:
            self._pending_cr = False
            return CRLF
        return b"" if self._line_start else CRLF
