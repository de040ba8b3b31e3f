"""The names both languages use at the Python <-> JavaScript boundary, from one file:
``boundary.json``, which the page's bundle imports too (web/src/protocol.js)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

_DATA: dict[str, Any] = json.loads(resources.files(__package__).joinpath("boundary.json").read_text("utf-8"))

# The seed's callbacks a page may set on an SmtpClient.
CALLBACKS: tuple[str, ...] = tuple(_DATA["callbacks"])

# The evidence an error carries across: its JavaScript name -> the Python attribute.
ERROR_FIELDS: dict[str, str] = dict(_DATA["errorFields"])

# The port when none is given: plain (and STARTTLS), and implicit TLS (useSecureTransport).
DEFAULT_PORT: int = int(_DATA["defaultPorts"]["plain"])
DEFAULT_PORT_IMPLICIT_TLS: int = int(_DATA["defaultPorts"]["implicitTls"])


def js_name(attribute: str) -> str:
    """The JavaScript name of an error's Python attribute (``proxy_reason`` -> ``proxyReason``)."""
    return next(js for js, py in ERROR_FIELDS.items() if py == attribute)
