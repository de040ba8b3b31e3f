"""The engine's parts on their own: reply parser, extensions, dot-stuffing, options."""

from __future__ import annotations

import pytest

from pysmtp_wasm import ReplyParser, SmtpProtocolError, SmtpUsageError, parse_options
from pysmtp_wasm._dotstuff import DotStuffer
from pysmtp_wasm._extensions import Extensions
from pysmtp_wasm._reply import MAX_REPLY_LINES


def unstuff(data: bytes) -> bytes:
    """An independent reference decoder: RFC 5321 §4.5.2 in reverse."""
    assert data.endswith(b"\r\n.\r\n") or data == b".\r\n"
    body = data[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


# -- replies -----------------------------------------------------------------------------------


def test_several_replies_in_one_chunk_and_multiline():
    replies = ReplyParser().feed(b"250-first\r\n250-second\r\n250 last\r\n354 go\r\n")
    assert [(r.code, r.lines) for r in replies] == [(250, ("first", "second", "last")), (354, ("go",))]


def test_enhanced_status_code_only_when_class_matches():
    (a, b, c) = ReplyParser().feed(b"550 5.1.1 no such user\r\n550 2.1.1 odd\r\n250 ok\r\n")
    assert a.enhanced == "5.1.1" and b.enhanced is None and c.enhanced is None


def test_bare_lf_and_code_only_lines():
    (a, b) = ReplyParser().feed(b"220 hi\n250\r\n")
    assert (a.code, a.text, b.code, b.text) == (220, "hi", 250, "")


def test_non_utf8_reply_text_is_kept_with_replacement():
    (reply,) = ReplyParser().feed(b"550 bad \xff byte\r\n")
    assert reply.text == "bad \ufffd byte"


def test_too_many_lines_in_one_reply():
    parser = ReplyParser()
    with pytest.raises(SmtpProtocolError, match="lines"):
        parser.feed(b"250-x\r\n" * (MAX_REPLY_LINES + 1))


def test_extensions_parse_auth_size_and_old_auth_syntax():
    (reply,) = ReplyParser().feed(
        b"250-mx\r\n250-SIZE 35882577\r\n250-AUTH=LOGIN\r\n250-auth PLAIN login\r\n250 8bitmime\r\n"
    )
    ext = Extensions.from_ehlo(reply)
    assert ext.size_limit == 35882577
    assert ext.auth_mechanisms == ["LOGIN", "PLAIN"]
    assert "8BITMIME" in ext and "STARTTLS" not in ext


# -- dot-stuffing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b".a\r\n.b"], b"..a\r\n..b\r\n.\r\n"),
        ([b"a\r\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\r", b"\n", b"."], b"a\r\n\r\n..\r\n.\r\n"),
        ([b"a\n.\nb"], b"a\r\n..\r\nb\r\n.\r\n"),  # bare LF made CRLF: no smuggled end of data
        ([b"a\r\n.\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"end\r\n"], b"end\r\n.\r\n"),
        ([b"end\r"], b"end\r\n.\r\n"),
        ([], b".\r\n"),
        ([b"", b"."], b"..\r\n.\r\n"),
    ],
)
def test_dot_stuffing_across_chunks(chunks, expected):
    stuffer = DotStuffer()
    out = b"".join(stuffer.encode(c) for c in chunks) + stuffer.finish()
    assert out == expected


def test_dot_stuffing_every_split_of_a_message_round_trips():
    message = b".first\r\nsecond\r\n..third\r\n.\r\nlast."
    canonical = DotStuffer()
    reference = canonical.encode(message) + canonical.finish()
    assert unstuff(reference) == message + b"\r\n"
    for cut in range(len(message) + 1):
        stuffer = DotStuffer()
        out = stuffer.encode(message[:cut]) + stuffer.encode(message[cut:]) + stuffer.finish()
        assert out == reference, cut


def test_disable_escaping_sends_bytes_as_given():
    stuffer = DotStuffer(escape=False)
    assert stuffer.encode(b".a\n.b") + stuffer.finish() == b".a\n.b\r\n.\r\n"
    stuffer = DotStuffer(escape=False)
    assert stuffer.encode(b"x\r") + stuffer.encode(b"\n") + stuffer.finish() == b"x\r\n.\r\n"


# -- options ---------------------------------------------------------------------------------------


def test_options_are_checked():
    with pytest.raises(SmtpUsageError, match="unknown option 'requireTls'"):
        parse_options({"requireTls": True})
    with pytest.raises(SmtpUsageError, match="contradict"):
        parse_options({"ignoreTLS": True, "requireTLS": True})
    with pytest.raises(SmtpUsageError, match="name"):
        parse_options({"name": "host\r\nRSET"})
    with pytest.raises(SmtpUsageError, match="authMethod"):
        parse_options({"authMethod": "GSSAPI"})
    with pytest.raises(SmtpUsageError, match="pass or xoauth2"):
        parse_options({"auth": {"user": "u"}})
    with pytest.raises(SmtpUsageError, match="tlsEngine must be one of"):
        parse_options({"tlsEngine": "subtls"}, frozenset({"tlsEngine"}))
    assert parse_options({"tlsEngine": "forge"}, frozenset({"tlsEngine"})).extra == {"tlsEngine": "forge"}
    options = parse_options({"auth": {"user": "u", "pass": "p"}, "authMethod": "plain", "lmtp": 1})
    assert options.auth_method == "PLAIN" and options.lmtp is True


def test_allow_insecure_auth_is_a_known_option_and_off_by_default():
    assert parse_options({}).allow_insecure_auth is False
    assert parse_options({"allowInsecureAuth": True}).allow_insecure_auth is True
    with pytest.raises(SmtpUsageError, match="unknown option 'allowInsecureAUTH'.*allowInsecureAuth"):
        parse_options({"allowInsecureAUTH": True})


def test_every_event_type_has_its_handler_in_the_client() -> None:
    """The client acts on events by a table of their types: a new event type needs a row."""
    from typing import get_args

    from pysmtp_wasm._client import _ON_EVENT
    from pysmtp_wasm._events import Event

    assert set(_ON_EVENT) == set(get_args(Event))
