"""Delivery status notification requests (RFC 3461): the ``dsn`` field of an envelope.

``{"notify": [...], "ret": "FULL"|"HDRS", "envid": str, "orcpt": str}`` with the RFC's
names becomes ``RET=`` and ``ENVID=`` on MAIL FROM and ``NOTIFY=`` and ``ORCPT=`` on each
RCPT TO. ENVID and ORCPT are xtext (RFC 3461 §4): their text goes on the command line, so
it is checked like an address (no CR, LF, NUL, control characters) and then encoded, so
nothing in it can pose as another parameter or command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._address import check_address
from .errors import SmtpEnvelopeError

NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
RET_VALUES = ("FULL", "HDRS")
# RFC 3461 §4.4: an ENVID is at most 100 characters (before encoding).
MAX_ENVID = 100


@dataclass(frozen=True)
class DsnRequest:
    """The checked request, ready for the command lines."""

    notify: tuple[str, ...] = ()
    ret: str | None = None
    envid: str | None = None
    orcpt: str | None = None

    def mail_params(self) -> str:
        params = f" RET={self.ret}" if self.ret else ""
        if self.envid is not None:
            params += f" ENVID={xtext(self.envid)}"
        return params

    def rcpt_params(self) -> str:
        params = f" NOTIFY={','.join(self.notify)}" if self.notify else ""
        if self.orcpt is not None:
            params += f" ORCPT=rfc822;{xtext(self.orcpt)}"
        return params


def xtext(text: str) -> str:
    """RFC 3461 §4: "!" to "~" stand for themselves except "+" and "="; all else is "+XX"."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


def _error(message: str) -> SmtpEnvelopeError:
    return SmtpEnvelopeError(f"envelope.dsn: {message}", stage="envelope")


def parse_dsn(value: Any) -> DsnRequest | None:
    """Check ``envelope.dsn``; raise SmtpEnvelopeError with the reason when it is not valid."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _error("must be an object {notify, ret, envid, orcpt}")
    unknown = set(value) - {"notify", "ret", "envid", "orcpt"}
    if unknown:
        raise _error(f"unknown field(s): {', '.join(sorted(unknown))}")
    notify: tuple[str, ...] = ()
    raw = value.get("notify")
    if raw is not None:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise _error("notify must be a list of strings")
        names = [i.upper() for i in items]
        if names == ["NEVER"]:
            notify = ("NEVER",)
        elif not names or any(n not in NOTIFY_VALUES for n in names):
            raise _error(f'notify must be ["NEVER"] or some of {", ".join(NOTIFY_VALUES)}, not {items!r}')
        else:
            notify = tuple(n for n in NOTIFY_VALUES if n in names)  # RFC order, no duplicates
    ret = value.get("ret")
    if ret is not None:
        if not isinstance(ret, str) or ret.upper() not in RET_VALUES:
            raise _error(f"ret must be FULL or HDRS, not {ret!r}")
        ret = ret.upper()
    envid = value.get("envid")
    if envid is not None:
        if not isinstance(envid, str) or not envid.isascii() or not envid.isprintable():
            raise _error(f"envid must be printable ASCII text, not {envid!r}")
        if not 0 < len(envid) <= MAX_ENVID:
            raise _error(f"envid must be 1 to {MAX_ENVID} characters")
    orcpt = value.get("orcpt")
    if orcpt is not None:
        orcpt = check_address(orcpt, "dsn.orcpt")
        if not orcpt or not orcpt.isascii():
            raise _error(f"orcpt must be a non-empty ASCII address, not {orcpt!r}")
    if not (notify or ret or envid is not None or orcpt is not None):
        return None
    return DsnRequest(notify, ret, envid, orcpt)
