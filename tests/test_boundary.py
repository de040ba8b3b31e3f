"""pysmtp_wasm/boundary.json, the names both languages use at the boundary, against the Python
code that reads it (the page's bundle imports the same file: web/src/protocol.js, checked by
the browser suite)."""

from __future__ import annotations

import re
from pathlib import Path

from pysmtp_wasm import SmtpClient
from pysmtp_wasm._boundary import CALLBACKS, DEFAULT_PORT, DEFAULT_PORT_IMPLICIT_TLS, ERROR_FIELDS, js_name
from pysmtp_wasm.errors import SmtpConnectionError, SmtpError

ROOT = Path(__file__).resolve().parent.parent


def test_the_callbacks_are_the_python_clients() -> None:
    client = SmtpClient("localhost", 25)
    assert CALLBACKS == ("onidle", "onready", "ondone", "onerror", "onclose", "ondrain")
    assert all(callable(getattr(client, name)) for name in CALLBACKS)


def test_the_error_fields_name_attributes_of_the_errors() -> None:
    error = SmtpConnectionError("refused", stage="connect")
    error.proxy_reason = "unknown_token"  # type: ignore[attr-defined]  # (as _browser.py sets it)
    assert set(ERROR_FIELDS) == {"code", "enhanced", "stage", "fatal", "proxyReason"}
    assert all(hasattr(error, attribute) for attribute in ERROR_FIELDS.values())
    assert js_name("proxy_reason") == "proxyReason"
    assert not hasattr(SmtpError("x"), "proxy_reason")  # only a proxy's refusal carries one


def test_the_default_ports_are_what_a_client_uses() -> None:
    assert (DEFAULT_PORT, DEFAULT_PORT_IMPLICIT_TLS) == (25, 465)
    assert SmtpClient("localhost").port == DEFAULT_PORT
    assert SmtpClient("localhost", None, {"useSecureTransport": True}).port == DEFAULT_PORT_IMPLICIT_TLS


def test_the_javascript_takes_them_from_the_file_not_from_copies() -> None:
    # No JS source spells the callbacks' list or a default port itself: protocol.js imports the file.
    protocol = (ROOT / "web" / "src" / "protocol.js").read_text()
    assert 'from "../../pysmtp_wasm/boundary.json"' in protocol
    for path in (ROOT / "web" / "src").rglob("*.js"):
        text = path.read_text()
        assert not re.search(r'\["onidle", "onready"', text), path
        assert not re.search(r"\? 465 : 25\b", text), path
