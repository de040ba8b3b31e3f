"""What the page gives is checked before anything is sent: addresses by RFC 5321's Mailbox
grammar, header names and values, credentials, host, port and EHLO name; text that UTF-8
cannot encode (a lone surrogate) is the library's own error, never UnicodeEncodeError."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest

from pysmtp_wasm import SmtpClient, SmtpEnvelopeError, SmtpUsageError, _address
from pysmtp_wasm._address import MAX_ADDRESS_OCTETS, check_address
from pysmtp_wasm._message import build_message, prepare

# -- addresses -------------------------------------------------------------------------------------

GOOD_ADDRESSES = [
    "a@example.com",
    "first.last+tag@sub-domain.example.org",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    '"with space"@example.com',
    '"escaped \\" quote and \\\\ backslash"@example.com',
    '""@example.com',
    "jörg@bücher.example",
    "u@[192.0.2.1]",
    "u@[IPv6:2001:db8::1]",
    "u@[tag:some-content]",
    "",  # the null reverse-path
    "postmaster",
    "x" * (MAX_ADDRESS_OCTETS - len("@example.com")) + "@example.com",  # exactly 254 octets
]

# (address, words the reason must contain)
BAD_ADDRESSES = [
    ('"a" SIZE=1"@x.org', "not a proper quoted string"),
    ('"a\\"@x.org', "not a proper quoted string"),  # the closing quote is escaped
    ('"unterminated@x.org', "not a proper quoted string"),
    ('a"b@x.org', "quote outside a quoted local part"),
    ('a@x.org"', "quote outside a quoted local part"),
    ("b@example.com>", "contains '>'"),  # '>' alone, without a space
    ("b>@example.com", "contains '>'"),
    ('"a>b"@example.com', "contains '>'"),  # legal in a quoted string, refused all the same
    ("a b@x.org", "contains a space outside a quoted local part"),
    ("a@x.org SIZE=1", "space in the domain"),
    ("a..b@x.org", "not a dot-string"),
    (".a@x.org", "not a dot-string"),
    ("a.@x.org", "not a dot-string"),
    ("a(b)@x.org", "not a dot-string"),
    ("a@x..org", "domain is not a host name"),
    ("a@-x.org", "domain is not a host name"),
    ("a@x.org.", "domain is not a host name"),
    ("a@x_y.org", "domain is not a host name"),
    ("a@[192.0.2]", "address literal"),
    ("a@[IPv6:nope]", "address literal"),
    ("a@[not-a:lit eral]", "space in the domain"),
    ("a@[no-colon]", "address literal"),
    ("a@", "empty local part or domain"),
    ("@x.org", "empty local part or domain"),
    ("nobody", "no '@domain'"),
    ("a\r\nRCPT TO:v@x.org", "contains CR"),
    ("a\0@x.org", "contains NUL"),
    ("a\t@x.org", "control character U+0009"),
    ("a\ud800@x.org", "not valid Unicode"),
    (
        "x" * (MAX_ADDRESS_OCTETS + 1 - len("@example.com")) + "@example.com",
        "255 octets, longer than the 254",
    ),
    ("é" * 122 + "@example.com", "256 octets"),  # 134 characters, 256 octets: octets count
]


@pytest.mark.parametrize("address", GOOD_ADDRESSES)
def test_mailbox_grammar_accepts(address: str) -> None:
    assert check_address(address, "to") == address


@pytest.mark.parametrize(("address", "reason"), BAD_ADDRESSES)
def test_mailbox_grammar_refuses_with_the_reason(address: str, reason: str) -> None:
    with pytest.raises(SmtpEnvelopeError) as caught:
        check_address(address, "to")
    assert reason in str(caught.value) and caught.value.stage == "envelope"
    assert str(caught.value).startswith("invalid to address")


def test_a_non_string_address_is_refused() -> None:
    with pytest.raises(SmtpEnvelopeError, match="not a string"):
        check_address(b"a@x.org", "from")


def test_addresses_found_valid_are_remembered_within_a_bound() -> None:
    """check_address remembers the addresses it passed (a page sends to the same few again and
    again): one that passed passes again, the bad ones are refused every time, a str subclass
    is checked on its own each time, and what is remembered stays bounded."""
    _address._VALID.clear()
    assert check_address("again@example.com", "from") == "again@example.com"
    assert "again@example.com" in _address._VALID
    assert check_address("again@example.com", "to") == "again@example.com"
    for _ in range(2):
        with pytest.raises(SmtpEnvelopeError, match="contains CR"):
            check_address("again@example.com\r\nRSET", "to")
    assert not any("\r" in a for a in _address._VALID)

    class Odd(str):
        pass

    assert check_address(Odd("odd@example.com"), "to") == "odd@example.com"
    assert "odd@example.com" not in _address._VALID
    for n in range(3 * _address.MAX_VALID):
        assert check_address(f"r{n}@example.com", "to") == f"r{n}@example.com"
        assert len(_address._VALID) <= _address.MAX_VALID
    assert f"r{3 * _address.MAX_VALID - 1}@example.com" in _address._VALID


# -- headers and text of a message -----------------------------------------------------------------

BASE = {"from": "a@example.com", "to": "b@example.com", "text": "hi"}

BAD_MAILS: list[tuple[dict[str, Any], str]] = [
    ({"headers": {"X-A\r\nBcc": "victim@example.com"}}, "is not a field name"),
    ({"headers": {"X A": "x"}}, "is not a field name"),
    ({"headers": {"X:A": "x"}}, "is not a field name"),
    ({"headers": {"": "x"}}, "is not a field name"),
    ({"headers": {"X-Ü": "x"}}, "is not a field name"),
    ({"headers": {"X-A": "x\r\nBcc: victim@example.com"}}, "the value contains CR"),
    ({"headers": {"X-A": "x\nBcc: victim@example.com"}}, "the value contains LF"),
    ({"headers": {"X-A": "x\0y"}}, "the value contains NUL"),
    ({"headers": {"X-A": "x\ud800"}}, "not valid Unicode"),
    ({"subject": "s\udfff"}, "not valid Unicode"),
    ({"subject": "s\r\nBcc: victim@example.com"}, "the value contains CR"),
    ({"text": "t\ud800"}, "not valid Unicode"),
    ({"html": "<p>\udc00</p>"}, "not valid Unicode"),
    ({"from": "a\ud800@example.com"}, "not valid Unicode"),
    ({"to": "b@example.com\r\nBcc: victim@example.com"}, "the value contains CR"),
    ({"attachments": [{"filename": "r\ud800.txt", "content": "x"}]}, "surrogates not allowed"),
    ({"attachments": [{"filename": "r.txt", "content": "x\ud800"}]}, "surrogates not allowed"),
]


@pytest.mark.parametrize(("change", "reason"), BAD_MAILS, ids=range(len(BAD_MAILS)))
def test_a_mail_that_cannot_be_a_safe_message_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(SmtpEnvelopeError) as caught:
        prepare(build_message({**BASE, **change}))
    assert reason in str(caught.value) and caught.value.stage == "message"


def test_send_message_checks_the_header_names_of_a_message_given() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    # The email package takes this name as it is (CPython 3.11; Pyodide's 3.14 refuses it).
    msg._headers.append(("X-A\r\nBcc", "victim@example.com"))  # type: ignore[attr-defined]
    with pytest.raises(SmtpEnvelopeError, match="is not a field name"):
        prepare(msg)


def test_a_given_message_whose_body_cannot_be_bytes_is_our_error() -> None:
    from email.message import Message

    msg = Message()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg.set_payload("body \ud800")  # a lone surrogate: not UTF-8, not ASCII
    with pytest.raises(SmtpEnvelopeError, match="cannot be written as bytes") as caught:
        prepare(msg)
    assert caught.value.stage == "message"


def test_a_parsed_message_keeps_its_folded_headers() -> None:
    from email import message_from_bytes

    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: a long\r\n folded subject\r\n\r\nbody\r\n"
    assert prepare(message_from_bytes(raw)).data == raw


def test_a_good_header_goes_through() -> None:
    data = prepare(build_message({**BASE, "headers": {"X-Mailer-Id!": "42; ok"}})).data
    assert b"\r\nX-Mailer-Id!: 42; ok\r\n" in data


# -- the constructor -------------------------------------------------------------------------------

BAD_CONSTRUCTIONS: list[tuple[tuple[Any, ...], str]] = [
    (
        ("localhost\0.evil.example", 25),
        "host 'localhost\\x00.evil.example' contains control character U+0000",
    ),
    (("mail.example.com\r\n", 25), "contains control character U+000D"),
    (("mail example.com", 25), "contains a space"),
    (("mail\x7f.example.com", 25), "U+007F"),
    (("mail\u2028.example.com", 25), "U+2028"),
    (("x\ud800.example.com", 25), "not valid Unicode"),
    (("a" * 254, 25), "longer than the 253 octets"),
    (("localhost", 65536), "port must be a whole number from 1 to 65535"),
    (("localhost", -1), "port must be a whole number from 1 to 65535"),
    (("localhost", True), "port must be a whole number"),
    (("localhost", 25.5), "port must be a whole number"),
    (("localhost", "smtp"), "port must be a whole number"),
    (("localhost", 25, {"name": "client\0.example"}), "option name must be a host name"),
    (("localhost", 25, {"name": "client\ud800"}), "option name must be a host name"),
    (("localhost", 25, {"auth": {"user": "u\r\nRSET", "pass": "p"}}), "auth.user contains CR"),
    (("localhost", 25, {"auth": {"user": "u", "pass": "p\nq"}}), "auth.pass contains LF"),
    (("localhost", 25, {"auth": {"user": "u\0admin", "pass": "p"}}), "auth.user contains NUL"),
    (("localhost", 25, {"auth": {"user": "u", "pass": "p\0"}}), "auth.pass contains NUL"),
    (("localhost", 25, {"auth": {"user": "u", "xoauth2": "t\r"}}), "auth.xoauth2 contains CR"),
    (("localhost", 25, {"auth": {"user": "u", "xoauth2": "t\x01auth=x"}}), "auth.xoauth2 contains U+0001"),
    (("localhost", 25, {"auth": {"user": "u", "pass": "p\ud800"}}), "auth.pass is not valid Unicode"),
    (("localhost", 25, {"auth": {"user": "\udc80", "pass": "p"}}), "auth.user is not valid Unicode"),
]


@pytest.mark.parametrize(("args", "reason"), BAD_CONSTRUCTIONS, ids=range(len(BAD_CONSTRUCTIONS)))
def test_the_constructor_refuses_with_the_reason(args: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(SmtpUsageError) as caught:
        SmtpClient(*args)
    assert reason in str(caught.value)
    if "auth" in str(args):  # the message names the field, never the secret
        secret = args[2]["auth"].get("pass") or args[2]["auth"].get("xoauth2")
        assert secret is None or secret not in str(caught.value) or len(secret) < 2


def test_the_constructor_takes_what_is_fine() -> None:
    client = SmtpClient(
        "mail.example.com", "587", {"name": "client.example", "auth": {"user": "ü", "pass": "p w"}}
    )
    assert (client.host, client.port) == ("mail.example.com", 587)
    assert SmtpClient().port == 25 and SmtpClient(None, None, {"useSecureTransport": True}).port == 465
    assert SmtpClient("::1", 25.0).port == 25 and SmtpClient("[::1]").host == "[::1]"
