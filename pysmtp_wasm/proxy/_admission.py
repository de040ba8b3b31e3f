"""Admission: whether a WebSocket request may become a session, as pure functions of the request
and the proxy's state (no socket, no clock of its own), and the reasons for a refusal.

Every refusal is a reason name from REASONS: the same name is the log line's ``reason``, the
metric's ``reason`` label and the close reason's first word, and its status is both the HTTP
status (clients without an ``Origin``) and, plus 4000, the WebSocket close code (browsers,
which cannot see the HTTP status of a refused upgrade). docs/proxy.md has the table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ._config import LOOPBACK, Config, Target, is_loopback_host, normalize_origin
from ._tickets import check_ticket

# reason name -> (HTTP-like status, words for a human). The close code is 4000 + status.
REASONS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the URL names no target (?token=NAME)"),
    "ticket_missing": (401, "this proxy needs a ticket (&ticket=...) from the site"),
    "ticket_invalid": (401, "the ticket is not valid"),
    "ticket_expired": (401, "the ticket has expired"),
    "ticket_wrong_token": (401, "the ticket was made for another target"),
    "origin": (403, "pages from this origin may not use this proxy"),
    "unknown_token": (404, "no such target"),
    "max_sessions": (429, "the proxy has as many sessions as it takes"),
    "max_sessions_per_ip": (429, "too many sessions from this address"),
    "draining": (503, "the proxy is shutting down"),
    # after the session was accepted
    "target_unreachable": (502, "cannot connect"),
    "target_timeout": (504, "no answer when connecting"),
    "idle_timeout": (408, "no byte either way"),
}
# RFC 6455 §7.4.1's own codes for what the page sent.
FRAME_TOO_BIG = 1009
TEXT_FRAME = 1003
# RFC 6455 §5.5.1: a close frame's reason is at most 123 bytes of UTF-8.
MAX_REASON_BYTES = 123


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str = ""  # more words (which target, which limit)

    @property
    def status(self) -> int:
        return REASONS[self.reason][0]

    @property
    def close_code(self) -> int:
        return 4000 + self.status

    @property
    def text(self) -> str:
        """``"<reason>: <words>"``, cut to what a close frame can carry."""
        words = REASONS[self.reason][1] + (f" {self.detail}" if self.detail else "")
        return close_reason(f"{self.reason}: {words}")


def close_reason(text: str) -> str:
    """``text`` cut at a character boundary to at most 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= MAX_REASON_BYTES:
        return text
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


@dataclass(frozen=True)
class Request:
    """What admission looks at: the request's path (with its query), its ``Origin`` (None for a
    client that is not a browser), and the client's address (after X-Forwarded-For)."""

    path: str
    origin: str | None
    client: str


def query_value(path: str, name: str) -> str | None:
    """The first ``name=`` of the query, as websockify's token plugin reads ``token``."""
    values = parse_qs(urlsplit(path).query, keep_blank_values=True).get(name)
    return values[0] if values else None


def origin_refusal(origin: str | None, config: Config) -> Refusal | None:
    """A browser always sends ``Origin`` with a WebSocket; a client without one is not a browser
    (nothing here can stop it lying about it: a ticket is what stops those)."""
    if origin is None:
        return None
    if (normalized := normalize_origin(origin)) != LOOPBACK and normalized in config.allow_origins:
        return None
    if config.loopback_origins:
        try:
            host = urlsplit(origin.strip()).hostname
        except ValueError:
            host = None
        if host is not None and is_loopback_host(host):
            return None
    return Refusal("origin", f"({origin[:60]})")


@dataclass(frozen=True)
class Admitted:
    token: str
    target: Target
    subject: str  # from the ticket, for the log


def admit(
    request: Request,
    config: Config,
    targets: Mapping[str, Target],
    ticket_key: bytes | None,
    now: float,
    draining: bool,
) -> Admitted | Refusal:
    """Everything but the session limits, in the order that tells a stranger least: a page from
    another origin learns nothing of the targets, a client without a ticket nothing of which
    tokens exist."""
    if draining:
        return Refusal("draining")
    token = query_value(request.path, "token")
    if not token:
        return Refusal("bad_request")
    if refusal := origin_refusal(request.origin, config):
        return refusal
    subject = ""
    if ticket_key is not None:
        reason, subject = check_ticket(ticket_key, query_value(request.path, "ticket"), token, now)
        if reason is not None:
            return Refusal(reason)
    target = targets.get(token)
    if target is None:
        return Refusal("unknown_token")
    return Admitted(token, target, subject)


def limit_refusal(total: int, from_address: int, config: Config) -> Refusal | None:
    """Whether one more session fits, with ``total`` open and ``from_address`` from its client."""
    if total >= config.max_sessions:
        return Refusal("max_sessions", f"({config.max_sessions})")
    if config.max_sessions_per_ip and from_address >= config.max_sessions_per_ip:
        return Refusal("max_sessions_per_ip", f"({config.max_sessions_per_ip})")
    return None


def client_address(
    peer: str, forwarded_for: Iterable[str], trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: the TCP peer's, unless the peer is a trusted proxy; then the
    X-Forwarded-For addresses are read from the right (each proxy appends the address it saw)
    and the first one that is not itself a trusted proxy is the client. Anything unparsable
    stops the walk at the last address vouched for."""
    networks = list(trusted)

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    if not networks or not is_trusted(peer):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            client = str(ipaddress.ip_address(hop.strip("[]")))
        except ValueError:
            break
        if not is_trusted(client):
            break
    return client


class Ledger:
    """The sessions open now, in all and by client address; ``acquire`` applies the limits."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.total = 0
        self.by_address: dict[str, int] = {}

    def acquire(self, address: str) -> Refusal | None:
        refusal = limit_refusal(self.total, self.by_address.get(address, 0), self.config)
        if refusal is None:
            self.total += 1
            self.by_address[address] = self.by_address.get(address, 0) + 1
        return refusal

    def release(self, address: str) -> None:
        left = self.by_address.get(address, 0) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)
        self.total = max(0, self.total - 1)
