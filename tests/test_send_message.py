"""The high-level API in CPython: ``await client.send_message(msg)`` against aiosmtpd."""

from __future__ import annotations

import asyncio
import os
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from pysmtp_wasm import SmtpClient, SmtpEnvelopeError, SmtpRecipientsError, SmtpReplyError
from pysmtp_wasm._message import build_message, prepare
from pysmtp_wasm.pytest_plugin import SmtpServerFactory
from pysmtp_wasm.testing import Recorder, SmtpServer


def parsed(content: bytes) -> EmailMessage:
    message = message_from_bytes(content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def sample() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Zoë Expéditeur <zoe@example.com>"
    msg["To"] = "Ana <ana@example.com>, bob@example.com"
    msg["Cc"] = "carol@example.com"
    msg["Bcc"] = "hidden@example.com, secret@example.com"
    msg["Subject"] = "Grüße aus Köln — ünïcödé ✓"
    msg.set_content("Héllo wörld, ça va ? 日本語\n.a line starting with a dot\n")
    return msg


async def test_bcc_recipients_get_it_and_are_absent_from_the_headers(smtp_server: SmtpServer):
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    msg = sample()
    result = await client.send_message(msg)
    client.quit()
    (received,) = server.recorder.messages
    assert received.rcpt_tos == [
        "ana@example.com",
        "bob@example.com",
        "carol@example.com",
        "hidden@example.com",
        "secret@example.com",
    ]
    assert b"hidden@example.com" not in received.content and b"Bcc" not in received.content
    assert sorted(result.accepted) == sorted(received.rcpt_tos) and result.rejected == []
    assert msg["Bcc"] == "hidden@example.com, secret@example.com"  # the caller's message is untouched


async def test_utf8_headers_and_body_survive(smtp_server: SmtpServer):
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    await client.send_message(sample())
    client.quit()
    content = server.recorder.messages[0].content
    assert content.split(b"\r\n\r\n")[0].isascii()  # no SMTPUTF8 needed: RFC 2047 in headers
    got = parsed(content)
    assert got["Subject"] == "Grüße aus Köln — ünïcödé ✓"
    assert str(got["From"]) == "Zoë Expéditeur <zoe@example.com>"
    assert (
        got.get_content().replace("\r\n", "\n")
        == "Héllo wörld, ça va ? 日本語\n.a line starting with a dot\n"
    )


async def test_non_ascii_addresses_use_smtputf8(smtp_server: SmtpServer):
    msg = EmailMessage()
    msg["From"] = "jörg@exämple.com"
    msg["To"] = "ünï@example.com"
    msg["Subject"] = "SMTPUTF8 ✓"
    msg.set_content("bödy")
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    await client.send_message(msg)
    client.quit()
    received = server.recorder.messages[0]
    assert "SMTPUTF8" in received.mail_options and received.rcpt_tos == ["ünï@example.com"]
    assert "From: jörg@exämple.com".encode() in received.content  # RFC 6532: UTF-8 headers
    assert parsed(received.content)["Subject"] == "SMTPUTF8 ✓"


async def test_attachment_round_trips_byte_identical_with_progress(smtp_server_factory: SmtpServerFactory):
    payload = os.urandom(300_000)
    msg = build_message(
        {
            "from": "a@example.com",
            "to": ["b@example.com"],
            "subject": "attachment",
            "text": "see attached",
            "html": "<p>see <b>attached</b></p>",
            "attachments": [
                {"filename": "data.bin", "content": payload},
                {"filename": "notes.txt", "content": "plain ✓ text\n"},
            ],
        }
    )
    seen: list[tuple[int, int]] = []
    server = smtp_server_factory(pipelining=True)
    client = SmtpClient("127.0.0.1", server.port)
    result = await client.send_message(msg, progress=lambda sent, total: seen.append((sent, total)))
    client.quit()
    got = parsed(server.recorder.messages[0].content)
    attachments = {part.get_filename(): part for part in got.iter_attachments()}
    assert attachments["data.bin"].get_content() == payload
    assert attachments["data.bin"].get_content_type() == "application/octet-stream"
    assert attachments["notes.txt"].get_content().replace("\r\n", "\n") == "plain ✓ text\n"
    assert got.get_body(("html",)).get_content().strip() == "<p>see <b>attached</b></p>"
    assert seen[-1] == (result.size, result.size) and len(seen) > 3
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


async def test_refused_message_raises_and_the_connection_stays_usable():
    class Picky(Recorder):
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            if b"spam" in envelope.content:
                return "554 5.7.1 looks like spam"
            return await super().handle_DATA(server, session, envelope)

    with SmtpServer(Picky()) as server:
        client = SmtpClient("127.0.0.1", server.port)
        spam = build_message(
            {"from": "a@example.com", "to": "b@example.com", "subject": "spam", "text": "spam"}
        )
        with pytest.raises(SmtpReplyError) as caught:
            await client.send_message(spam)
        assert caught.value.code == 554 and caught.value.enhanced == "5.7.1"
        ham = build_message({"from": "a@example.com", "to": "b@example.com", "subject": "ham", "text": "ham"})
        result = await client.send_message(ham)
        closed = asyncio.get_running_loop().create_future()
        client.onclose = closed.set_result
        client.quit()
        assert await asyncio.wait_for(closed, 5) is False
    assert result.accepted == ["b@example.com"] and len(server.recorder.messages) == 1


async def test_an_error_raises_after_onclose_and_the_next_call_connects_again(
    smtp_server_factory: SmtpServerFactory,
):
    """An error that ends the connection (a bad envelope, every recipient refused) reaches
    onerror, then onclose(true), then raises; the next send_message opens a new connection."""
    server = smtp_server_factory(reject={"x@example.com"})
    client = SmtpClient("127.0.0.1", server.port)
    order: list[str] = []
    client.onerror = lambda error: order.append(f"error:{type(error).__name__}")
    client.onclose = lambda is_error: order.append(f"close:{is_error}")
    before = server.recorder.connections_total
    with pytest.raises(SmtpEnvelopeError, match="no recipients defined"):
        await client.send_message(sample(), recipients=[])
    assert order == ["error:SmtpEnvelopeError", "close:True"] and client.state == "closed"
    with pytest.raises(SmtpRecipientsError):
        await client.send_message(sample(), recipients=["x@example.com"])
    assert order[2:] == ["error:SmtpRecipientsError", "close:True"]
    result = await client.send_message(sample(), recipients=["ok@example.com"])
    client.quit()
    result_after_quit = await client.send_message(sample(), recipients=["again@example.com"])
    client.close()
    for _ in range(100):  # onclose comes when asyncio reports the connection lost
        if len(order) == 6:
            break
        await asyncio.sleep(0.01)
    assert result.accepted == ["ok@example.com"] and result_after_quit.accepted == ["again@example.com"]
    assert [m.rcpt_tos for m in server.recorder.messages] == [["ok@example.com"], ["again@example.com"]]
    assert server.recorder.connections_total - before == 4  # a connection per call
    assert order[4:] == ["close:False", "close:False"]


async def test_a_bad_envelope_quits_and_sends_nothing_of_it(smtp_server: SmtpServer):
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    lines: list[tuple[str, str]] = []
    client.onlog = lambda direction, text: lines.append((direction, text))
    with pytest.raises(SmtpEnvelopeError, match="invalid from address"):
        await client.send_message(sample(), sender="a@example.com\r\nRCPT TO:<victim@example.com>")
    sent = [text for direction, text in lines if direction == "C"]
    assert sent == ["EHLO localhost", "QUIT"] and ("S", "221 Bye") in lines
    assert server.recorder.messages == []


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ('"a" NOTIFY=NEVER"@example.com', "not a proper quoted string"),
        ("b@example.com>", "contains '>'"),
        ("x" * 243 + "@example.com", "255 octets, longer than the 254"),
        ("b\udc00@example.com", "not valid Unicode"),
    ],
)
async def test_an_address_off_the_grammar_reaches_nothing_of_the_server(
    smtp_server: SmtpServer, recipient: str, reason: str
):
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    lines: list[tuple[str, str]] = []
    client.onlog = lambda direction, text: lines.append((direction, text))
    with pytest.raises(SmtpEnvelopeError) as caught:
        await client.send_message(sample(), recipients=[recipient])
    assert reason in str(caught.value) and caught.value.stage == "envelope"
    assert [text for direction, text in lines if direction == "C"] == ["EHLO localhost", "QUIT"]
    assert server.recorder.messages == [] and server.recorder.commands == []


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("X-A\r\nBcc", "victim@example.com", "is not a field name"),
        ("X-A", "x\r\nBcc: victim@example.com", "the value contains CR"),
        ("X-A", "x\ud800", "not valid Unicode"),
    ],
)
async def test_a_bad_header_opens_no_connection(
    smtp_server: SmtpServer, header: str, value: str, reason: str
):
    """A header the message cannot carry safely is refused before connecting: the server sees
    no connection at all, and the client stays new."""
    server = smtp_server
    before = server.recorder.connections_total
    msg = sample()
    msg._headers.append((header, value))  # type: ignore[attr-defined] - as the email package may take it
    client = SmtpClient("127.0.0.1", server.port)
    with pytest.raises(SmtpEnvelopeError) as caught:
        await client.send_message(msg)
    assert reason in str(caught.value) and caught.value.stage == "message"
    mail = {"from": "a@example.com", "to": "b@example.com", "headers": {header: value}}
    with pytest.raises(SmtpEnvelopeError) as caught:
        await client.send_message(build_message(mail))
    assert reason in str(caught.value)
    assert client.state == "new" and server.recorder.connections_total == before
    assert server.recorder.messages == []


async def test_send_message_and_the_low_level_callbacks_do_not_mix(smtp_server: SmtpServer):
    server = smtp_server
    client = SmtpClient("127.0.0.1", server.port)
    calls: list[str] = []
    client.onidle = lambda: calls.append("onidle")
    client.ondone = lambda ok: calls.append("ondone")
    await client.send_message(sample())
    await client.send_message(sample())
    client.quit()
    assert calls == [] and len(server.recorder.messages) == 2


def test_build_message_needs_from_and_a_recipient():
    with pytest.raises(SmtpEnvelopeError, match="from"):
        build_message({"to": "b@example.com"})
    with pytest.raises(SmtpEnvelopeError, match="no recipients defined"):
        build_message({"from": "a@example.com", "subject": "x"})
    with pytest.raises(SmtpEnvelopeError, match="unknown mail field"):
        build_message({"from": "a@example.com", "to": "b@example.com", "attachment": []})
    prepared = prepare(build_message({"from": "a@example.com", "bcc": "b@example.com"}))
    assert prepared.recipients == ["b@example.com"] and b"b@example.com" not in prepared.data
