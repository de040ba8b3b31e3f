"""Envelope address checks: nothing that could end or extend an SMTP command gets out.

An address is written between angle brackets in "MAIL FROM:<...>" and "RCPT TO:<...>". A CR
or LF would end the command and start another of the attacker's choosing; a ">" closes the
path early so that what follows is read as ESMTP parameters; a NUL truncates the line in C
servers. Such addresses are refused before anything is sent.
"""

from __future__ import annotations

from .errors import SmtpEnvelopeError

# RFC 5321 §4.5.3.1.3: a reverse- or forward-path is at most 256 octets including the
# brackets, so 254 for the address itself.
MAX_ADDRESS_OCTETS = 254

_FORBIDDEN = {"<": "'<'", ">": "'>'", "\r": "CR", "\n": "LF", "\0": "NUL"}

# What str.translate deletes to tell whether any forbidden or control character is present
# (one pass in C instead of one per character).
_UNSAFE = dict.fromkeys([*map(ord, _FORBIDDEN), *range(0x20), 0x7F])


def check_address(address: object, role: str) -> str:
    """Return ``address`` when it is safe to put in a command; raise SmtpEnvelopeError if not.

    ``role`` names the field in the message ("from", "to").
    """
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
    if not address:
        return address  # the null reverse-path "<>" (RFC 5321 §4.5.5) is valid
    local, at, domain = address.rpartition("@")
    if not at:
        # RFC 5321 §4.1.1.3: "postmaster" without a domain is the one bare name allowed.
        if address.lower() != "postmaster":
            raise SmtpEnvelopeError(f"invalid {role} address {address!r}: no '@domain'", stage="envelope")
    elif not local or not domain:
        raise SmtpEnvelopeError(
            f"invalid {role} address {address!r}: empty local part or domain", stage="envelope"
        )
    elif " " in domain or " " in local and not (local.startswith('"') and local.endswith('"')):
        # A space outside a quoted local part would let the rest pose as ESMTP parameters.
        raise SmtpEnvelopeError(f"invalid {role} address {address!r}: contains a space", stage="envelope")
    if len(address.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise SmtpEnvelopeError(
            f"invalid {role} address: longer than {MAX_ADDRESS_OCTETS} octets", stage="envelope"
        )
    return address


def needs_smtputf8(address: str) -> bool:
    """True when the address is not ASCII (RFC 6531 needs the SMTPUTF8 extension)."""
    return not address.isascii()
