"""Envelope address checks: an address goes out only when it is an RFC 5321 ``Mailbox``.

An address is written between angle brackets in "MAIL FROM:<...>" and "RCPT TO:<...>". A CR
or LF would end the command and start another of the attacker's choosing; a ">" closes the
path early so that what follows is read as ESMTP parameters; a NUL truncates the line in C
servers; a space or an unbalanced quote lets a server read the rest (our own ``BODY=``, or
the attacker's ``SIZE=``) as part of the address or as parameters. So the whole address must
match RFC 5321 §4.1.2's grammar (with RFC 6531's UTF-8 where SMTPUTF8 allows it)::

    Mailbox         = Local-part "@" ( Domain / address-literal )
    Local-part      = Dot-string / Quoted-string
    Dot-string      = Atom *("." Atom)
    Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
    QcontentSMTP    = qtextSMTP / quoted-pairSMTP     ; quoted-pairSMTP = "\\" %d32-126
    Domain          = sub-domain *("." sub-domain)
    address-literal = "[" ( IPv4 / "IPv6:" IPv6 / Standardized-tag ":" 1*dcontent ) "]"

Anything else is refused before anything is sent, with the reason.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import SmtpEnvelopeError

# RFC 5321 §4.5.3.1.3: a reverse- or forward-path is at most 256 octets including the
# brackets, so 254 for the address itself.
MAX_ADDRESS_OCTETS = 254

_FORBIDDEN = {"<": "'<'", ">": "'>'", "\r": "CR", "\n": "LF", "\0": "NUL"}

# What str.translate deletes to tell whether any forbidden or control character is present
# (one pass in C instead of one per character).
_UNSAFE = dict.fromkeys([*map(ord, _FORBIDDEN), *range(0x20), 0x7F])

# RFC 6531 §3.3: UTF8-non-ascii may appear wherever atext, qtext or a letter may.
_UTF8 = "\u0080-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_UTF8}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LET_DIG = rf"[A-Za-z0-9{_UTF8}]"
_SUB_DOMAIN = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_UTF8}]*{_LET_DIG})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_MAILBOX = re.compile(
    rf"(?P<local>{_DOT_STRING}|{_QUOTED_STRING})@(?P<domain>{_DOMAIN}|\[(?P<literal>[^\[\]\\]*)\])"
)
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")

# Addresses found to be Mailboxes lately (whether one is depends on its text alone): a page
# that sends message after message to the same few addresses checks each once. Bounded: it
# starts again empty when full.
_VALID: dict[str, None] = {}
MAX_VALID = 256


def _literal_ok(literal: str) -> bool:
    """RFC 5321 §4.1.3: an IPv4 address, "IPv6:" and an IPv6 address, or a tagged literal."""
    try:
        if literal[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(literal[5:])
            return True
        if ":" not in literal:
            ipaddress.IPv4Address(literal)
            return True
    except ValueError:
        return False
    return _GENERAL_LITERAL.fullmatch(literal) is not None


def _why_not(address: str) -> str:
    """Words for an address that is not a Mailbox, naming the part at fault."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "no '@domain'"
    if not local or not domain:
        return "empty local part or domain"
    if local.startswith('"'):
        if re.fullmatch(_QUOTED_STRING, local) is None:
            return (
                "the quoted local part is not a proper quoted string (a quote or backslash "
                "inside it must be escaped with a backslash)"
            )
    elif '"' in local:
        return "contains a quote outside a quoted local part"
    elif " " in local:
        return "contains a space outside a quoted local part"
    elif re.fullmatch(_DOT_STRING, local) is None:
        return (
            "the local part is not a dot-string (a character that needs quoting, or an empty "
            "part between dots)"
        )
    if " " in domain:
        return "contains a space in the domain"
    if '"' in domain:
        return "contains a quote outside a quoted local part"
    if domain.startswith("["):
        return "the address literal is not an IPv4 address, IPv6:address or tag:content"
    return "the domain is not a host name (letters, digits and hyphens, in dot-separated labels)"


def check_address(address: object, role: str) -> str:
    """Return ``address`` when it is a Mailbox safe to put in a command; raise
    SmtpEnvelopeError if not. ``""`` (the null reverse-path, RFC 5321 §4.5.5) and a bare
    ``postmaster`` (§4.1.1.3) pass too.

    ``role`` names the field in the message ("from", "to").
    """
    if type(address) is str and address in _VALID:
        return address
    if not isinstance(address, str):
        raise SmtpEnvelopeError(f"invalid {role} address {address!r}: not a string", stage="envelope")
    if len(address.translate(_UNSAFE)) != len(address):
        for char, name in _FORBIDDEN.items():
            if char in address:
                raise SmtpEnvelopeError(
                    f"invalid {role} address {address!r}: contains {name}", stage="envelope"
                )
        for char in address:
            if ord(char) < 0x20 or ord(char) == 0x7F:
                raise SmtpEnvelopeError(
                    f"invalid {role} address {address!r}: contains control character U+{ord(char):04X}",
                    stage="envelope",
                )
    try:
        octets = len(address.encode("utf-8"))
    except UnicodeEncodeError:
        raise SmtpEnvelopeError(
            f"invalid {role} address {address!r}: not valid Unicode (a lone surrogate)", stage="envelope"
        ) from None
    if not address or address.lower() == "postmaster":
        return address
    if octets > MAX_ADDRESS_OCTETS:
        raise SmtpEnvelopeError(
            f"invalid {role} address: {octets} octets, longer than the {MAX_ADDRESS_OCTETS} octets "
            "RFC 5321 allows",
            stage="envelope",
        )
    match = _MAILBOX.fullmatch(address)
    if match is None or (match["literal"] is not None and not _literal_ok(match["literal"])):
        raise SmtpEnvelopeError(f"invalid {role} address {address!r}: {_why_not(address)}", stage="envelope")
    if type(address) is str:  # (a subclass of str could compare unlike its text)
        if len(_VALID) >= MAX_VALID:
            _VALID.clear()
        _VALID[address] = None
    return address
