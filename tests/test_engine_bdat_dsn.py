"""CHUNKING (RFC 3030, BDAT) and DSN (RFC 3461) in the sans-IO engine, by scripted byte exchanges."""

from __future__ import annotations

from typing import Any

import pytest

from pysmtp_wasm import SmtpEnvelopeError, State
from pysmtp_wasm._dsn import parse_dsn, xtext

from . import script
from .script import Harness, bytewise, run
from .test_engine import refused_envelope

EHLO = b"250-mx.example.com\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n"
CHUNKS = [b"Subject: t\r\n\r\n.dot", b" line\nbare LF\r\n..two", b" dots"]
# The chunks as BDAT carries them: line endings made CRLF, no dot-stuffing, the last line ended.
# A chunk goes out when the next one comes (the last waits for end(): "BDAT n LAST").
PAYLOADS = [b"Subject: t\r\n\r\n.dot", b" line\r\nbare LF\r\n..two", b" dots\r\n"]


def user(
    envelope: dict[str, Any] | None = None, chunks: list[bytes] = CHUNKS, messages: int = 1
) -> dict[str, Any]:
    return script.user(envelope, chunks, messages)


def bdat(payload: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(payload), b" LAST" if last else b"") + payload


SESSION = [
    (b"", b"220 mx ESMTP\r\n"),
    (b"EHLO localhost\r\n", EHLO),
    (
        b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n",
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@example.com>: unknown\r\n",
    ),
    (
        bdat(PAYLOADS[0]) + bdat(PAYLOADS[1]) + bdat(PAYLOADS[2], last=True),
        b"250 2.0.0 chunk 1\r\n250 2.0.0 chunk 2\r\n250 2.0.0 Ok: queued\r\n",
    ),
    (b"QUIT\r\n", b"221 Bye\r\n"),
]
OUTCOME = [
    "Idle",
    "Ready(['c@example.com'])",
    "Done(True, [('b@example.com', 250), ('c@example.com', 550)])",
    "Idle",
    "Finished",
]


def test_bdat_session():
    h = run(SESSION, **user())
    assert h.outcome()[1] == OUTCOME
    assert h.engine.state is State.CLOSED
    assert ("C", "BDAT 7 LAST") in h.log and ("C", "DATA") not in h.log


def test_bdat_session_byte_by_byte_and_every_split_point():
    reference = run(SESSION, **user()).outcome()
    assert run(SESSION, chunker=bytewise, **user()).outcome() == reference
    starts, position = [], 0
    for _, answer in SESSION:
        starts.append(position)
        position += len(answer)
    for cut in range(position + 1):

        def chunker(index: int, data: bytes, cut: int = cut) -> list[bytes]:
            local = cut - starts[index]
            return [data[:local], data[local:]] if 0 < local < len(data) else [data]

        assert run(SESSION, chunker=chunker, **user()).outcome() == reference, f"cut at byte {cut}"


def test_bdat_replies_may_come_while_the_user_still_sends():
    h = Harness()
    h.feed(b"220 mx\r\n")
    h.feed(EHLO)
    h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
    h.feed(b"250 ok\r\n250 ok\r\n")
    assert h.engine.state is State.DATA
    h.engine.send(b"one\r\n")
    h.engine.send(b"two\r\n")  # "one" goes out now
    h.feed(b"250 2.0.0 got 5\r\n")  # its reply, while still in DATA
    assert h.engine.state is State.DATA
    h.call("end")
    h.feed(b"250 2.0.0 queued\r\n")
    sent = bytes(h.sent)
    assert sent.endswith(bdat(b"one\r\n") + bdat(b"two\r\n", last=True))
    assert h.outcome()[1][-2:] == ["Done(True, [('b@example.com', 250)])", "Idle"]


def test_end_after_a_refused_chunk_reports_it_without_sending_more():
    h = Harness()
    h.feed(b"220 mx\r\n")
    h.feed(EHLO)
    h.call("use_envelope", {"from": "a@example.com", "to": ["b@example.com", "c@example.com"]})
    h.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n")
    h.engine.send(b"x" * 10)
    h.engine.send(b"y" * 10)  # writes BDAT 10 (x)
    h.feed(b"552 5.3.4 too big\r\n")
    before = len(h.sent)
    h.engine.send(b"z" * 10)  # dropped
    h.call("end")
    assert bytes(h.sent[before:]) == b""
    assert h.outcome()[1][-2:] == [
        "Done(False, [('b@example.com', 552), ('c@example.com', 552)])",
        "Idle",
    ]
    h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
    assert bytes(h.sent[before:]).startswith(b"RSET\r\nMAIL FROM:")


def test_lmtp_bdat_gives_one_reply_per_recipient():
    session = [
        (b"", b"220 lmtp\r\n"),
        (b"LHLO localhost\r\n", b"250-lmtp\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
        (
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n",
            b"250 ok\r\n250 ok\r\n250 ok\r\n",
        ),
        (
            bdat(PAYLOADS[0]) + bdat(PAYLOADS[1]) + bdat(PAYLOADS[2], last=True),
            b"250 chunk\r\n250 chunk\r\n250 2.0.0 <b> saved\r\n552 5.2.2 <c> over quota\r\n",
        ),
        (b"QUIT\r\n", b"221 bye\r\n"),
    ]
    h = run(session, options={"lmtp": True}, **user())
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250), ('c@example.com', 552)])"


def test_without_pipelining_the_envelope_goes_command_by_command_then_data():
    # BDAT chunks go out without waiting for each reply: without PIPELINING, DATA instead.
    session = [
        (b"", b"220 mx\r\n"),
        (b"EHLO localhost\r\n", b"250-mx\r\n250 CHUNKING\r\n"),
        (b"MAIL FROM:<a@example.com>\r\n", b"250 ok\r\n"),
        (b"RCPT TO:<b@example.com>\r\n", b"250 ok\r\n"),
        (b"DATA\r\n", b"354 go\r\n"),
        (b"hi\r\n.\r\n", b"250 queued\r\n"),
        (b"QUIT\r\n", b"221 bye\r\n"),
    ]
    h = run(session, **user({"from": "a@example.com", "to": "b@example.com"}, chunks=[b"hi"]))
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250)])"


def test_an_empty_message_is_bdat_0_last():
    session = SESSION[:3] + [(b"BDAT 0 LAST\r\n", b"250 queued\r\n"), (b"QUIT\r\n", b"221 Bye\r\n")]
    h = run(session, **user(chunks=[]))
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250), ('c@example.com', 550)])"


def test_a_cr_at_a_chunk_end_waits_for_the_next_chunk():
    session = SESSION[:3] + [
        (bdat(b"a\r\nb") + bdat(b"\r\nc\r\n", last=True), b"250 c1\r\n250 queued\r\n"),
        (b"QUIT\r\n", b"221 Bye\r\n"),
    ]
    h = run(session, **user(chunks=[b"a\r\nb\r", b"\nc"]))
    assert h.outcome()[1][2].startswith("Done(True")


def test_disable_chunking_uses_data_even_when_offered():
    session = [
        (b"", b"220 mx\r\n"),
        (b"EHLO localhost\r\n", EHLO),
        (
            b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            b"250 ok\r\n250 ok\r\n354 go\r\n",
        ),
        (b"hi\r\n.\r\n", b"250 queued\r\n"),
        (b"QUIT\r\n", b"221 bye\r\n"),
    ]
    h = run(
        session,
        options={"disableChunking": True},
        **user({"from": "a@example.com", "to": "b@example.com"}, [b"hi"]),
    )
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250)])"


# -- DSN ---------------------------------------------------------------------------------------------


def test_dsn_parameters_on_mail_and_rcpt():
    dsn = {"notify": ["failure", "SUCCESS"], "ret": "hdrs", "envid": "id 1+2=3", "orcpt": "orig@example.com"}
    session = [
        (b"", b"220 mx\r\n"),
        (b"EHLO localhost\r\n", EHLO),
        (
            b"MAIL FROM:<a@example.com> BODY=8BITMIME RET=HDRS ENVID=id+201+2B2+3D3\r\n"
            b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.com\r\n",
            b"250 ok\r\n250 ok\r\n",
        ),
        (bdat(b"hi\r\n", last=True), b"250 queued\r\n"),
        (b"QUIT\r\n", b"221 bye\r\n"),
    ]
    h = run(session, **user({"from": "a@example.com", "to": "b@example.com", "dsn": dsn}, [b"hi"]))
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250)])"


def test_dsn_without_the_extension_is_an_error_and_nothing_is_sent():
    h = Harness()
    h.feed(b"220 mx\r\n")
    h.feed(b"250-mx\r\n250 PIPELINING\r\n")
    # Nothing of the envelope goes out; the error is reported, QUIT ends the session.
    error = refused_envelope(
        h, {"from": "a@example.com", "to": "b@example.com", "dsn": {"notify": ["NEVER"]}}
    )
    assert "does not offer DSN" in str(error)


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ({"notify": ["NEVER", "SUCCESS"]}, "notify must be"),
        ({"notify": []}, "notify must be"),
        ({"notify": ["SOMETIMES"]}, "notify must be"),
        ({"notify": "SUCCESS,FAILURE"}, "notify must be"),
        ({"ret": "BODY"}, "ret must be FULL or HDRS"),
        ({"envid": "a\r\nRCPT TO:<x@evil>"}, "envid must be printable ASCII"),
        ({"envid": "é"}, "envid must be printable ASCII"),
        ({"envid": "x" * 101}, "1 to 100"),
        ({"orcpt": "x@example.com>\r\nDATA"}, "invalid dsn.orcpt address"),
        ({"orcpt": "jörg@example.com"}, "orcpt must be a non-empty ASCII address"),
        ({"notfy": ["SUCCESS"]}, "unknown field"),
        ("SUCCESS", "must be an object"),
    ],
)
def test_dsn_validation(dsn: Any, reason: str):
    with pytest.raises(SmtpEnvelopeError, match=reason):
        parse_dsn(dsn)


def test_dsn_never_and_xtext():
    request = parse_dsn({"notify": ["never"]})
    assert request is not None and request.rcpt_params() == " NOTIFY=NEVER" and request.mail_params() == ""
    assert parse_dsn({}) is None and parse_dsn(None) is None
    assert xtext("a+b=c d~!") == "a+2Bb+3Dc+20d~!"


# -- BINARYMIME ---------------------------------------------------------------------------------------

BINARY_EHLO = b"250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250 CHUNKING\r\n"


def test_binarymime_sends_the_bytes_unchanged():
    raw = [b"Content-Type: application/octet-stream\r\n\r\n\x00\r.\n", b"\xff\r\n.\r\nend"]
    session = [
        (b"", b"220 mx\r\n"),
        (b"EHLO localhost\r\n", BINARY_EHLO),
        (
            b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\n",
            b"250 ok\r\n250 ok\r\n",
        ),
        (bdat(raw[0]) + bdat(raw[1], last=True), b"250 c1\r\n250 queued\r\n"),
        (b"QUIT\r\n", b"221 bye\r\n"),
    ]
    h = run(session, **user({"from": "a@example.com", "to": "b@example.com", "binary": True}, raw))
    assert h.outcome()[1][2] == "Done(True, [('b@example.com', 250)])"


@pytest.mark.parametrize(
    ("ehlo", "options"),
    [
        (EHLO, {}),  # CHUNKING without BINARYMIME
        (b"250-mx\r\n250 BINARYMIME\r\n", {}),  # BINARYMIME without CHUNKING
        (BINARY_EHLO, {"disableChunking": True}),
        (BINARY_EHLO.replace(b"250-PIPELINING\r\n", b""), {}),  # no PIPELINING: no BDAT
    ],
)
def test_binarymime_where_it_cannot_be_had_is_an_error_before_anything_is_sent(
    ehlo: bytes, options: dict[str, Any]
):
    h = Harness(options)
    h.feed(b"220 mx\r\n")
    h.feed(ehlo)
    error = refused_envelope(h, {"from": "a@example.com", "to": "b@example.com", "binary": True})
    assert "BINARYMIME needs" in str(error)


def test_a_250_to_the_last_chunk_after_a_refused_one_is_still_a_refusal():
    h = Harness()
    h.feed(b"220 mx\r\n")
    h.feed(EHLO)
    h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
    h.feed(b"250 ok\r\n250 ok\r\n")
    h.engine.send(b"one\r\n")
    h.engine.send(b"two\r\n")
    h.call("end")  # both chunks written before any reply
    h.feed(b"451 4.3.0 chunk lost\r\n250 2.0.0 queued anyway\r\n")
    assert h.outcome()[1][-2:] == ["Done(False, [('b@example.com', 451)])", "Idle"]
