"""Property-based tests (hypothesis) of the reply parser and the DATA encoder.

- The reply parser: the result never depends on how the bytes are chunked; well-formed
  replies come back exactly; no input, however malformed, raises anything but
  :class:`SmtpProtocolError`, and its buffer never exceeds its bound.
- The dot-stuffing encoder: the result never depends on the chunking; its output, un-stuffed
  by an independent reference decoder, is the input with canonical line endings; no bare CR or
  LF and no premature end of data ever leaves it.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysmtp_wasm import Reply, ReplyParser, SmtpProtocolError
from pysmtp_wasm._dotstuff import DotStuffer
from pysmtp_wasm._reply import MAX_REPLY_LINE, MAX_REPLY_LINES

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, repeats allowed: empty chunks are fed too)."""
    bounds = [0, *sorted(min(p, len(data)) for p in points), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@st.composite
def chunked(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    raw = draw(data)
    points = draw(st.lists(st.integers(0, max(len(raw), 1)), max_size=12))
    return raw, cut(raw, points)


# -- reply streams: plausible, malformed and hostile ----------------------------------------------

_CODES = st.one_of(
    st.sampled_from([b"220", b"250", b"334", b"354", b"421", b"451", b"535", b"550"]),
    st.binary(min_size=0, max_size=4),  # non-digits, short codes, NULs, high bytes
    st.sampled_from([b"120", b"2x0", b"\xd9\xa2\xd9\xa5\xd9\xa0", b"\x00\x00\x00", b"650", b"   "]),
)
_SEPARATORS = st.sampled_from([b" ", b"-", b"", b"?", b"\t", b"\x00", b"-\r"])
_TEXT = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"5.7.1 denied", b"2.0.0 ok", b"ok \xff\xfe bytes", b"nul\x00inside", "üñí".encode()]),
    st.builds(lambda n, c: c * n, st.integers(4000, 4200), st.sampled_from([b"x", b"\x00", b"\xff"])),
)
_ENDINGS = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\r", b""])
_LINES = st.builds(lambda code, sep, text, end: code + sep + text + end, _CODES, _SEPARATORS, _TEXT, _ENDINGS)
HOSTILE = st.one_of(
    st.binary(max_size=300),
    st.lists(_LINES, max_size=12).map(b"".join),
    st.builds(
        lambda n: b"250-x\r\n" * n + b"250 end\r\n", st.integers(MAX_REPLY_LINES - 3, MAX_REPLY_LINES + 2)
    ),
)


def parse(chunks: list[bytes]) -> tuple[list[Reply], str | None, int]:
    """Feed the chunks in order: the replies, the first error's message (or None), and the
    bytes left buffered. Any exception but SmtpProtocolError fails the test."""
    parser = ReplyParser()
    replies: list[Reply] = []
    for chunk in chunks:
        try:
            replies += parser.feed(chunk)
        except SmtpProtocolError as error:
            return replies, str(error), parser.buffered
        assert parser.buffered <= MAX_REPLY_LINE
    return replies, None, parser.buffered


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@PROPERTY_SETTINGS
@given(chunked(HOSTILE))
def test_reply_parser_result_does_not_depend_on_chunking(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    whole = parse([data])
    one_by_one = parse(bytewise(data))
    split = parse(chunks)
    # The same error (or none), at the same place, whatever the chunking.
    assert whole[1] == one_by_one[1] == split[1]
    if whole[1] is None:
        assert whole == one_by_one == split
    else:
        # A chunk that ends in an error returns no replies, so a coarser chunking delivers a
        # prefix of what byte-by-byte feeding delivers before the same error.
        for replies in (whole[0], split[0]):
            assert replies == one_by_one[0][: len(replies)]


@PROPERTY_SETTINGS
@given(chunked(HOSTILE))
def test_reply_parser_raises_only_its_own_error_and_stays_bounded(case: tuple[bytes, list[bytes]]) -> None:
    _, chunks = case
    parser = ReplyParser()
    for chunk in chunks:
        try:
            replies = parser.feed(chunk)
        except SmtpProtocolError as error:
            assert error.fatal and error.stage == "reply"
            return
        assert parser.buffered <= MAX_REPLY_LINE
        for reply in replies:
            assert 200 <= reply.code <= 599
            assert 1 <= len(reply.lines) <= MAX_REPLY_LINES
            assert all(isinstance(line, str) and len(line) <= MAX_REPLY_LINE for line in reply.lines)
            assert reply.enhanced is None or reply.enhanced[0] == str(reply.code)[0]


_REPLY_TEXT = st.binary(max_size=60).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, tuple[str, ...]]]]:
    replies = draw(
        st.lists(st.tuples(st.integers(200, 599), st.lists(_REPLY_TEXT, min_size=1, max_size=5)), max_size=6)
    )
    wire = b""
    expected = []
    for code, lines in replies:
        for index, text in enumerate(lines):
            sep = b" " if index == len(lines) - 1 else b"-"
            wire += str(code).encode() + sep + text + draw(st.sampled_from([b"\r\n", b"\n"]))
        expected.append((code, tuple(t.decode("utf-8", "replace") for t in lines)))
    return wire, expected


@PROPERTY_SETTINGS
@given(well_formed(), st.lists(st.integers(0, 2000), max_size=10))
def test_well_formed_replies_come_back_exactly_in_any_chunking(
    case: tuple[bytes, list[tuple[int, tuple[str, ...]]]], points: list[int]
) -> None:
    wire, expected = case
    replies, error, buffered = parse(cut(wire, points))
    assert error is None and buffered == 0
    assert [(r.code, r.lines) for r in replies] == expected


# -- the DATA encoder --------------------------------------------------------------------------------

MESSAGES = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"\n.\n", b"a", b"\x00", b"\xff", b" "]
        ),
        max_size=40,
    ).map(b"".join),
)


def reference_unstuff(wire: bytes) -> bytes:
    """RFC 5321 §4.5.2 in reverse, written independently of the encoder: split the wire into
    CRLF lines, stop at the first line that is a lone ".", drop one leading dot per line."""
    assert wire.endswith(b"\r\n"), wire
    lines = wire[:-2].split(b"\r\n")
    assert lines[-1] == b".", "the data does not end with CRLF . CRLF"
    body = lines[:-1]
    out = b""
    for line in body:
        assert line != b".", "a premature end of data"
        assert b"\r" not in line and b"\n" not in line, "a bare CR or LF"
        out += (line[1:] if line.startswith(b".") else line) + b"\r\n"
    return out


def canonical(message: bytes) -> bytes:
    """Every CRLF, bare CR or bare LF as CRLF; a final CRLF when the message lacks one."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def encode(chunks: list[bytes], escape: bool = True) -> bytes:
    stuffer = DotStuffer(escape=escape)
    return b"".join(stuffer.encode(c) for c in chunks) + stuffer.finish()


@PROPERTY_SETTINGS
@given(chunked(MESSAGES))
def test_dot_stuffing_round_trips_through_an_independent_decoder(case: tuple[bytes, list[bytes]]) -> None:
    message, chunks = case
    wire = encode(chunks)
    assert wire == encode([message]) == encode(bytewise(message))  # chunking changes nothing
    assert reference_unstuff(wire) == canonical(message)
    assert wire.count(b"\r\n.\r\n") == (1 if wire != b".\r\n" else 0)  # one end of data, at the end


@PROPERTY_SETTINGS
@given(chunked(MESSAGES))
def test_disable_escaping_sends_the_bytes_as_given_in_any_chunking(case: tuple[bytes, list[bytes]]) -> None:
    message, chunks = case
    wire = encode(chunks, escape=False)
    ending = b"" if message == b"" or message.endswith(b"\r\n") else b"\r\n"
    assert wire == message + ending + b".\r\n"


def reference_unbdat(wire: bytes) -> tuple[bytes, int]:
    """RFC 3030 framing read independently of the engine: "BDAT n[ LAST]" CRLF then n octets,
    until LAST. Returns the octets and the number of chunks; fails on anything else."""
    out, count = b"", 0
    while True:
        head, sep, wire = wire.partition(b"\r\n")
        assert sep and head.startswith(b"BDAT "), head
        words = head.split(b" ")
        size, last = int(words[1]), words[2:] == [b"LAST"]
        assert len(words) == (3 if last else 2)
        out, wire, count = out + wire[:size], wire[size:], count + 1
        if last:
            assert wire == b"", "bytes after BDAT LAST"
            return out, count


def bdat_wire(chunks: list[bytes]) -> tuple[bytes, int]:
    """What the engine writes for the message after a CHUNKING server accepted the envelope."""
    from pysmtp_wasm import SmtpEngine, parse_options

    engine = SmtpEngine(parse_options({}))
    engine.transcript = False
    engine.connection_made()
    engine.receive_data(b"220 mx\r\n250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    engine.use_envelope({"from": "a@example.com", "to": "b@example.com"})
    engine.receive_data(b"250 ok\r\n250 ok\r\n")
    engine.data_to_send()
    nonempty = 0
    for chunk in chunks:
        engine.send(chunk)
        nonempty += bool(chunk)
    engine.end()
    return engine.data_to_send(), nonempty


@PROPERTY_SETTINGS
@given(chunked(MESSAGES))
def test_bdat_carries_the_canonical_message_in_any_chunking(case: tuple[bytes, list[bytes]]) -> None:
    message, chunks = case
    wire, sent = bdat_wire(chunks)
    payload, count = reference_unbdat(wire)
    assert payload == canonical(message)  # CRLF made, no dot-stuffing, the last line ended
    assert count <= sent + 1  # at most one BDAT per send() (a chunk that is only a CR waits), plus LAST
