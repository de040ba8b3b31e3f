"""Tickets: short-lived HMAC-SHA256 proofs, minted by the site's backend, that a page may open a
session to one token.

A ticket is two base64url strings (RFC 4648 §5, no ``=`` padding) joined by a dot::

    ticket  = b64url(payload) "." b64url(HMAC-SHA256(key, payload))
    payload = UTF-8 JSON object: {"token": "<token>", "exp": <unix seconds>, "sub": "<subject>"}

The MAC covers the payload's exact bytes, so any JSON encoder will do; ``exp`` is an integer,
``sub`` is any string the backend likes (a user id: it is written in the proxy's log line).
It uses only what every language has (JSON, base64, HMAC-SHA256), so a backend in any language
can mint one; ``make_ticket`` is this module's. Nothing here imports ``websockets``: a backend
needs only ``pysmtp-wasm`` itself to mint tickets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

# A ticket is in a URL: bounded so that a client cannot make us parse and hash megabytes.
MAX_TICKET_LENGTH = 2048
# A key shorter than this is refused: HMAC-SHA256 wants at least its output size (RFC 2104 §3).
MIN_KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_ticket(key: bytes, token: str, ttl: int = 60, subject: str = "") -> str:
    """A ticket for ``token`` that expires in ``ttl`` seconds, signed with ``key`` (the bytes of
    the proxy's ``--ticket-key`` file, surrounding whitespace stripped). ``subject`` (a user
    id, say) is carried to the proxy's log. The page adds it to its proxy URL:
    ``wss://proxy.example/?token=smtp&ticket=<ticket>``."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a ticket key must be at least {MIN_KEY_BYTES} bytes")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    payload = json.dumps(
        {"token": token, "exp": int(time.time()) + int(ttl), "sub": subject}, separators=(",", ":")
    ).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def check_ticket(key: bytes, ticket: str | None, token: str, now: float) -> tuple[str | None, str]:
    """Whether ``ticket`` lets a session open to ``token`` at ``now``: ``(None, subject)`` when
    it does, else ``(reason, "")`` with reason one of ``ticket_missing``, ``ticket_invalid``
    (malformed or forged), ``ticket_expired``, ``ticket_wrong_token``. Pure: no clock, no I/O."""
    if not ticket:
        return "ticket_missing", ""
    if len(ticket) > MAX_TICKET_LENGTH or ticket.count(".") != 1:
        return "ticket_invalid", ""
    encoded, _, mac_text = ticket.partition(".")
    try:
        payload, mac = _unb64(encoded), _unb64(mac_text)
    except (binascii.Error, ValueError):
        return "ticket_invalid", ""
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        return "ticket_invalid", ""
    # Signed by the key: from here on the payload is the backend's own words.
    try:
        fields = json.loads(payload)
        expires, bound, subject = fields["exp"], fields["token"], fields.get("sub", "")
    except (ValueError, TypeError, KeyError):
        return "ticket_invalid", ""
    if not isinstance(expires, int) or not isinstance(bound, str) or not isinstance(subject, str):
        return "ticket_invalid", ""
    if now >= expires:
        return "ticket_expired", ""
    if not hmac.compare_digest(bound.encode(), token.encode()):
        return "ticket_wrong_token", ""
    return None, subject
