"""The page through pysmtp-wasm-proxy in Chromium, Firefox and WebKit: plain, STARTTLS and implicit
TLS, as the proxy's log sees them; a refusal heard by the page as the proxy's reason (the close
codes of notes/PROXY-CONTRACT, read by web/src/socket.js); a target that refuses; and the same
page through websockify 0.13, which the page still speaks to.

(The rest of the browser suite goes through this proxy too: the ``proxy`` fixture is it.)"""

from __future__ import annotations

import ssl
import time
from typing import Any

import pytest

from pysmtp_wasm.testing import Certs

from .conftest import Page
from .servers import PysmtpProxy, Recorder, SmtpServer, Websockify, free_port

BODY = "Subject: through the proxy\r\n\r\nhello\r\n"


def sessions_of(proxy: PysmtpProxy, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10  # a session's line is written as it ends
    while len(proxy.sessions()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return proxy.sessions()


@pytest.mark.parametrize("mode", ["plain", "starttls", "implicit"])
def test_the_page_sends_through_the_proxy(
    page: Page, proxy: PysmtpProxy, server_tls: ssl.SSLContext, smtp_certs: Certs, mode: str
) -> None:
    recorder = Recorder()
    tls = {"starttls": {"starttls": server_tls}, "implicit": {"implicit_tls": server_tls}}.get(mode, {})
    with SmtpServer(recorder, **tls) as server:
        token = f"browser-{mode}-{page.engine}"
        url = proxy.add(server.port, token=token)
        before = len(proxy.sessions())
        options: dict[str, Any] = {"proxy": url}
        if mode != "plain":
            options |= {"ca": smtp_certs.ca_pem, "requireTLS": mode == "starttls",
                        "useSecureTransport": mode == "implicit"}  # fmt: skip
        rec = page.session(port=server.port, options=options, lines=20_000)
    assert rec["errors"] == [] and rec["done"] == [True] and rec["closed"] is False, rec["errors"]
    [message] = recorder.messages
    assert message.tls is (mode != "plain") and len(message.content) > 1_500_000
    [line] = [s for s in sessions_of(proxy, before + 1)[before:] if s["token"] == token]
    assert line["target"] == f"127.0.0.1:{server.port}" and line["client"] == "127.0.0.1"
    assert line["bytes_to_target"] > 1_500_000 and line["bytes_to_client"] > 100
    assert line["end"] in ("client_closed", "target_closed")


@pytest.mark.parametrize(
    ("query", "name", "code", "words"),
    [("?token=not-a-target", "unknown_token", 4404, "no such target"),
     ("", "bad_request", 4400, "the URL names no target")],
    ids=["unknown-token", "no-token"],
)  # fmt: skip
def test_a_refusal_reaches_the_page_with_the_proxys_reason(
    page: Page, proxy: PysmtpProxy, query: str, name: str, code: int, words: str
) -> None:
    with SmtpServer() as server:
        before = server.recorder.connections_total  # (its own readiness probe)
        url = f"ws://127.0.0.1:{proxy.port}/{query}"
        rec = page.session(port=server.port, options={"proxy": url})
        assert server.recorder.connections_total == before
    (error,) = rec["errors"]
    assert error["name"] == "SmtpConnectionError" and error["stage"] == "connect", error
    assert error["proxyReason"] == name and words in error["message"], error
    assert f"({name}, WebSocket close {code})" in error["message"], error
    assert rec["order"] == ["error:SmtpConnectionError", "close:true"]
    refused = [s for s in proxy.sessions() if s.get("reason") == name]
    assert refused and refused[-1]["status"] == code - 4000


def test_a_target_that_refuses_is_named_to_the_page(page: Page, proxy: PysmtpProxy) -> None:
    port = free_port()
    rec = page.session(port=port, options={"proxy": proxy.add(port, token=f"gone-{page.engine}")})
    (error,) = rec["errors"]
    assert error["name"] == "SmtpConnectionError" and error["proxyReason"] == "target_unreachable", error
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in error["message"], error
    assert rec["order"][-2:] == ["error:SmtpConnectionError", "close:true"] and rec["done"] == []


def test_websockify_still_carries_the_page(page: Page, websockify: Websockify) -> None:
    with SmtpServer() as server:
        rec = page.session(port=server.port, options={"proxy": websockify.url(server.port)}, body=BODY)
    assert rec["errors"] == [] and rec["done"] == [True]
    [message] = server.recorder.messages
    assert message.content == BODY.encode()


def test_one_large_send_goes_through_the_proxy(page: Page, proxy: PysmtpProxy) -> None:
    """One send() of 3 MB, past the proxy's 1 MiB frame limit: the socket hands it to the
    WebSocket in pieces (Firefox and WebKit send each WebSocket.send as one frame)."""
    with SmtpServer() as server:
        url = proxy.add(server.port, token=f"one-send-{page.engine}")
        rec = page.session(port=server.port, options={"proxy": url}, lines=40_000, chunkSize=8_000_000)
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert rec["sent"] > 3_000_000
    [message] = server.recorder.messages
    assert len(message.content) > 3_000_000
    assert message.content.startswith(b".line 0 ") and b"line 39999 " in message.content
