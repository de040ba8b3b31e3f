"""Hardening in the browser: the same hostile servers as tests/test_hostile.py, reached from the
page through the proxy, where the path differs from CPython (the JS socket, node-forge TLS,
the WebSocket proxy); plus a proxy that refuses, and load from one page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .certs import Certificate
from .conftest import DIST, Page
from .servers import (
    Conn,
    PysmtpProxy,
    Recorder,
    ScriptedServer,
    SmtpServer,
    Websockify,
    free_port,
    legacy_tls_context,
)
from .test_hostile import (
    BAD_ENVELOPES,
    INJECTED,
    StrippingMitm,
    closes_mid_tls_handshake,
    greet_and_accept_envelope,
    starttls_script,
)

USER, PASSWORD = "alice", "s3cret-pass"


def assert_failed(rec: dict[str, Any], name: str) -> dict[str, Any]:
    """One error of that name (its fields all there: null where absent), then onclose(true), and
    never ondone(true)."""
    assert len(rec["errors"]) == 1, rec["errors"]
    (error,) = rec["errors"]
    assert error["name"] == name and error["isError"] is True and error["fatal"] is True, error
    assert error["undefinedFields"] == [], error
    assert rec["order"][-2:] == [f"error:{name}", "close:true"], rec["order"]
    assert "done:true" not in rec["order"] and rec["closed"] is True
    return error


def server_lines(rec: dict[str, Any]) -> list[str]:
    return [line for line in rec["log"] if line.startswith("S: ")]


def sessions_open(proxy: PysmtpProxy) -> int:
    """The sessions the proxy holds now, by its own /metrics."""
    _, text = proxy.get("/metrics")
    line = next(line for line in text.splitlines() if line.startswith("pysmtp_proxy_sessions_open "))
    return int(float(line.split()[-1]))


def tcp_connections(port: int) -> int:
    """TCP connections (any state but LISTEN and TIME_WAIT) with ``port`` at either end."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state in ("0A", "06"):
            continue
        if int(local.split(":")[1], 16) == port or int(remote.split(":")[1], 16) == port:
            count += 1
    return count


def settle(check: Any, timeout: float = 5) -> Any:
    """Poll ``check()`` until it is falsy-zero or the time is up; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- STARTTLS injection through the JS socket ---------------------------------------------------------


def scripted_tls_options(proxy: PysmtpProxy, port: int, cert: Certificate) -> dict[str, Any]:
    """STARTTLS against a scripted TLS 1.1 server, pinned, with credentials."""
    return {
        "proxy": proxy.url(port),
        "tlsEngine": "forge",  # a scripted TLS 1.1 server takes one connection: no TLS 1.3 try
        "ca": cert.cert_pem,
        "auth": {"user": USER, "pass": PASSWORD},
    }


def test_starttls_injection_in_the_same_read_is_discarded(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    with ScriptedServer(starttls_script(legacy_tls_context(rsa_cert), INJECTED)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options=scripted_tls_options(proxy, server.port, rsa_cert),
        )
    assert rec["errors"] == [] and rec["done"] == [True] and rec["closed"] is False
    assert server.plaintext == b"EHLO localhost\r\nSTARTTLS\r\n"
    assert server.commands[0] == "EHLO localhost" and server.commands[1].startswith("AUTH PLAIN ")
    assert not any("evil" in line or "fake" in line for line in server_lines(rec))
    assert "*: discarded data received after the STARTTLS reply" in rec["log"]


def test_starttls_injection_in_a_later_read_fails_the_handshake(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    with ScriptedServer(starttls_script(legacy_tls_context(rsa_cert), b"", later=INJECTED)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options=scripted_tls_options(proxy, server.port, rsa_cert),
        )
    error = assert_failed(rec, "SmtpTlsError")
    assert "did not answer in TLS" in error["message"] and "250-evil" in error["message"]
    assert not any("evil" in line or "fake" in line for line in server_lines(rec))
    assert server.plaintext == b"EHLO localhost\r\nSTARTTLS\r\n" and server.messages == []


# -- a man in the middle who strips STARTTLS, between the proxy and the server ----------------------


class MitmThread:
    """tests/test_hostile.py's StrippingMitm on an event loop of its own, in a thread (the browser
    tests are synchronous)."""

    def __init__(self, upstream_port: int) -> None:
        self.mitm = StrippingMitm(upstream_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> StrippingMitm:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.mitm.__aenter__(), self.loop).result(10)
        return self.mitm

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.mitm.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize(
    ("host", "extra", "authenticates"),
    [
        (None, {}, False),  # the default host, "localhost": only a label in the page
        ("127.0.0.1", {}, False),
        ("mail.example.com", {}, False),
        ("mail.example.com", {"allowInsecureAuth": True}, True),
        (None, {"allowInsecureAuth": True}, True),
    ],
    ids=[
        "default-host",
        "loopback-address",
        "remote",
        "remote-allowInsecureAuth",
        "default-allowInsecureAuth",
    ],
)
def test_starttls_stripped_without_require_tls(
    page: Page,
    proxy: PysmtpProxy,
    server_tls: ssl.SSLContext,
    host: str | None,
    extra: dict[str, Any],
    authenticates: bool,
) -> None:
    """The page names an SMTP host (or none: "localhost"); the proxy's token takes the connection
    to the man in the middle, who deletes the STARTTLS offer. Without requireTLS the session stays
    in plaintext. In the page the host is only a label (the proxy decides where the bytes go, and
    the page cannot see it), so no host earns cleartext AUTH: AUTH PLAIN goes out only with
    allowInsecureAuth."""
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server, MitmThread(server.port) as mitm:
        options = {
            "proxy": proxy.url(mitm.port),
            "auth": {"user": USER, "pass": PASSWORD},
            "authMethod": "PLAIN",
        }
        spec: dict[str, Any] = {"port": mitm.port, "options": {**options, **extra}}
        if host is not None:
            spec["host"] = host
        rec = page.session(**spec)
        assert settle(lambda: recorder.connections_open) == 0
    assert mitm.stripped == 1  # the server did offer STARTTLS
    credentials = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    if authenticates:
        assert rec["errors"] == [] and rec["done"] == [True] and recorder.commands == ["AUTH PLAIN"]
        assert credentials in bytes(mitm.from_client)  # what allowInsecureAuth gives away
        assert [(m.login, m.tls) for m in recorder.messages] == [(USER, False)]
    else:
        error = assert_failed(rec, "SmtpTlsError")
        assert error["stage"] == "AUTH" and "not sending the password in cleartext" in error["message"]
        assert (host or "localhost") in error["message"] and "allowInsecureAuth" in error["message"]
        # What the server side of the wire received: no AUTH line, no credentials, no message.
        assert bytes(mitm.from_client) == b"EHLO localhost\r\nQUIT\r\n"
        assert recorder.commands == [] and recorder.messages == []


# -- before the TLS engine is ready --------------------------------------------------------------------


def test_bytes_before_the_tls_handshake_are_bounded(page: Page, proxy: PysmtpProxy) -> None:
    """While the TLS engine loads, what the server sends is kept for the handshake. A TLS server
    sends nothing before the ClientHello, so past 64 KiB the socket gives up (a TLSError, then
    close) instead of buffering without bound. Here the engine never loads, and the server
    floods 1 MiB."""

    def flood(conn: Conn) -> None:
        for _ in range(64):
            conn.send(b"\x17" * 16384)
        conn.read(1)  # until the client closes

    with ScriptedServer(flood) as server:
        out = page.run(
            """
            const [port, proxy] = args;
            const socket = PySmtpSocket.open("localhost", port,
              { proxy, useSecureTransport: true, openssl: () => new Promise(() => {}) });  // never ready
            return await new Promise((resolve) => {
              const events = [];
              socket.onerror = (e) => events.push([e.data.name, e.data.message]);
              socket.onclose = () => resolve({ events, kept: socket._tls._cipherInBytes });
            });
            """,
            server.port,
            proxy.url(server.port),
        )
    ((name, message),) = out["events"]
    assert name == "TLSError" and "sent more than 64 KiB before the TLS handshake began" in message, out
    assert out["kept"] == 0  # dropped with the connection


# -- the connection breaks ------------------------------------------------------------------------------


def test_server_closes_mid_reply(page: Page, proxy: PysmtpProxy) -> None:
    def at_greeting(conn: Conn) -> None:
        conn.send(b"220-mx.example.com\r\n220-still gree")

    def after_data(conn: Conn) -> None:
        greet_and_accept_envelope(conn)
        conn.until(b"\r\n.\r\n")
        conn.send(b"250-2.0.0 queued as")

    for script in (at_greeting, after_data):
        with ScriptedServer(script) as server:
            rec = page.session(port=server.port, options={"proxy": proxy.url(server.port)})
        assert_failed(rec, "SmtpConnectionError")
        assert rec["done"] == []


def test_server_closes_mid_data(page: Page, proxy: PysmtpProxy) -> None:
    def script(conn: Conn) -> None:
        greet_and_accept_envelope(conn)
        conn.read(300_000)

    with ScriptedServer(script) as server:
        rec = page.session(port=server.port, options={"proxy": proxy.url(server.port)}, lines=100_000)
    assert_failed(rec, "SmtpConnectionError")
    assert rec["done"] == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_server_closes_mid_tls_handshake(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate, mode: str
) -> None:
    with ScriptedServer(closes_mid_tls_handshake(mode)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "ca": rsa_cert.cert_pem,
                "useSecureTransport": mode == "implicit",
                "auth": {"user": USER, "pass": PASSWORD},
            },
        )
    error = assert_failed(rec, "SmtpTlsError")
    assert "closed the connection during the TLS" in error["message"]
    assert rec["idles"] == 0 and b"AUTH" not in server.plaintext


def test_one_byte_a_second_times_out(page: Page, proxy: PysmtpProxy) -> None:
    """The greeting's timer fires while bytes still arrive: shown by order (the client gave up
    while the server had most of its bytes still to send), not by the clock."""
    dripped: list[int] = []

    def script(conn: Conn) -> None:
        for byte in b"220 " + b"x" * 60:
            if conn.server.stop.wait(1.0):
                return
            try:
                conn.send(bytes([byte]))
            except OSError:
                return  # the client (through the proxy) closed
            dripped.append(byte)

    with ScriptedServer(script) as server:
        rec = page.session(
            port=server.port, options={"proxy": proxy.url(server.port), "timeoutGreeting": 2500}
        )
        at_close = len(dripped)
    error = assert_failed(rec, "SmtpTimeoutError")
    assert "greeting" in error["message"] and error["stage"] == "greeting"
    assert 1 <= at_close < 64, at_close


# -- the proxy refuses ----------------------------------------------------------------------------------


def proxy_failure(page: Page, url: str, port: int = 25) -> dict[str, Any]:
    """A session through ``url`` that fails before any SMTP: its one error (a SmtpConnectionError
    at stage "connect", with no code), then onclose(true); nothing left behind."""
    rec = page.session(port=port, options={"proxy": url})
    error = assert_failed(rec, "SmtpConnectionError")
    assert error["stage"] == "connect" and error["code"] is None and rec["idles"] == 0, error
    assert settle(lambda: sum(page.stats().values())) == 0
    return error


def test_the_proxy_fails_nothing_answers_at_its_address(page: Page) -> None:
    port = free_port()  # no proxy listening
    error = proxy_failure(page, f"ws://127.0.0.1:{port}/?token=t25")
    assert f"cannot open a WebSocket to the proxy at ws://127.0.0.1:{port}/?token=t25" in error["message"]
    assert f"nothing answers at 127.0.0.1:{port}" in error["message"], error
    assert "is the proxy running, and is this its address and port?" in error["message"], error


@pytest.mark.parametrize("query", ["?token=not-in-the-token-file", ""], ids=["unknown-token", "no-token"])
def test_the_proxy_refuses_the_url_token(page: Page, websockify: Websockify, query: str) -> None:
    # websockify refuses an unknown or missing token at the handshake (the browser sees only
    # 1006); the diagnostic request finds an HTTP server there, so the message points at the token.
    # (pysmtp-wasm-proxy says why instead: tests/test_proxy_browser.py.)
    proxy = websockify
    error = proxy_failure(page, f"ws://127.0.0.1:{proxy.port}/{query}")
    assert (
        f"an HTTP server answers at 127.0.0.1:{proxy.port}, but it did not accept the WebSocket"
        in error["message"]
    )
    assert ("it has none" in error["message"]) == (query == ""), error
    assert "check the token in the URL" in error["message"] or "check the URL's token" in error["message"], (
        error
    )
    assert "the proxy's log" in error["message"], error


def test_wss_to_a_proxy_that_speaks_ws(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        proxy.url(server.port)
        error = proxy_failure(page, f"wss://127.0.0.1:{proxy.port}/?token=t{server.port}", server.port)
    assert f"a plain HTTP server answers at 127.0.0.1:{proxy.port}, not HTTPS" in error["message"], error
    assert f'use "ws://127.0.0.1:{proxy.port}/?token=t{server.port}"' in error["message"], error
    assert server.recorder.connections_total <= 1  # (its readiness probe): nothing reached it


def test_a_url_that_is_not_a_websocket_proxy(page: Page) -> None:
    # The page's own web server: HTTP, but no WebSocket there.
    where = page.base_url.split("://", 1)[1].rstrip("/")
    error = proxy_failure(page, f"ws://{where}/smtp?token=x")
    assert f"an HTTP server answers at {where}, but it did not accept the WebSocket" in error["message"], (
        error
    )
    assert "either it is not a WebSocket proxy" in error["message"], error


def test_the_proxy_accepts_then_closes_before_any_byte(page: Page, proxy: PysmtpProxy) -> None:
    with ScriptedServer(lambda conn: None) as hangs_up:  # accepts the TCP connection, closes it at once
        url = proxy.url(hangs_up.port)
        error = proxy_failure(page, url, hangs_up.port)
    assert (
        f"the proxy at {url} accepted the WebSocket, then closed it before the SMTP server sent a byte"
        in (error["message"])
    ), error
    assert "the proxy's log says which" in error["message"], error


CSP_PAGE = """<!doctype html>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="connect-src 'self' ws://127.0.0.1:*">
<script src="pysmtp-wasm.js"></script>
<script>window.smtp = PySmtp.load();</script>
"""


def test_a_diagnostic_request_the_page_forbids_is_never_read_as_nothing_answers(
    page: Page, websockify: Websockify
) -> None:
    """A page whose Content-Security-Policy allows the proxy's ws:// address. Whether it allows an
    http:// request there too is the engine's reading of CSP (Level 3 says a ws: source also
    matches http:, WebKit follows it, Chromium does not): where the diagnostic request is
    refused, the error says it cannot tell why; where it is allowed, it says what it found. A
    refused request is never taken for "nothing answers". (websockify: it refuses an unknown
    token at the handshake, which is when the page makes its diagnostic request; ours says why.)"""
    proxy = websockify
    html = DIST / "_csp.html"
    html.write_text(CSP_PAGE)
    try:
        page.goto(f"{page.base_url}/{html.name}")
        error = proxy_failure(page, f"ws://127.0.0.1:{proxy.port}/?token=not-in-the-token-file")
        blocked = page.run(
            """
            const seen = [];
            document.addEventListener("securitypolicyviolation", (e) => seen.push(e.blockedURI));
            try { await fetch(args[0], { mode: "no-cors", cache: "no-store" }); } catch (e) {}
            await new Promise((resolve) => setTimeout(resolve, 100));
            return seen.length > 0;
            """,
            f"http://127.0.0.1:{proxy.port}/",
        )
    finally:
        html.unlink()
        page.goto(f"{page.base_url}/minimal.html")
    assert "nothing answers" not in error["message"], error
    if blocked:
        assert "the browser refused the diagnostic request to that address too" in error["message"], error
        assert "cannot tell why" in error["message"], error
    else:
        assert f"an HTTP server answers at 127.0.0.1:{proxy.port}" in error["message"], error
    assert blocked or page.engine != "chromium"  # where the test means something: Chromium blocks


def websocket_that_closes(code: int, reason: str) -> Any:
    """The server side of a WebSocket handshake (offering back the "binary" subprotocol, as
    websockify and our proxy do), then a close frame: a proxy that refuses as PROXY-CONTRACT.md
    says ours does."""

    def script(conn: Conn) -> None:
        request = conn.until(b"\r\n\r\n").decode("latin-1")
        match = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", request)
        assert match, request
        magic = match.group(1) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(magic.encode()).digest()).decode()
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: binary\r\n\r\n".encode()
        )
        payload = code.to_bytes(2, "big") + reason.encode()
        conn.send(bytes([0x88, len(payload)]) + payload)  # FIN + close, unmasked, under 126 bytes
        conn.read(2)  # the browser's close frame

    return script


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (4404, "unknown_token: no target for this token", "refused the connection: no target for this token"),
        (4403, "origin: this origin is not allowed", "does not accept pages from"),
        (
            4502,
            "target_unreachable: cannot connect to smtp.example.com:587: Connection refused",
            "could not connect to the SMTP server: cannot connect to smtp.example.com:587",
        ),
        (
            4504,
            "target_timeout: connecting to 192.0.2.1:25 timed out",
            "connecting to 192.0.2.1:25 timed out",
        ),
    ],
    ids=["4404", "4403", "4502", "4504"],
)
def test_a_proxy_close_code_is_shown_with_its_reason(
    page: Page, code: int, reason: str, expected: str
) -> None:
    with ScriptedServer(websocket_that_closes(code, reason)) as refusing:
        url = f"ws://127.0.0.1:{refusing.port}/?token=t"
        error = proxy_failure(page, url)
    name = reason.split(":")[0]
    assert error["proxyReason"] == name, error
    assert f"the proxy at {url}" in error["message"] and expected in error["message"], error
    assert f"({name}, WebSocket close {code})" in error["message"], error


# -- bad input -------------------------------------------------------------------------------------------

INPUT_SCRIPT = r"""
const [port, proxy] = args;
const api = await window.smtp;
const client = new api.SmtpClient("localhost", port, { proxy });
const calls = [];
const errors = [];
const refused = (what, fn) => {
  try { fn(); calls.push([what, "accepted"]); }
  catch (e) { calls.push([what, e.name, e instanceof Error, e.fatal]); }
};
let idles = 0;
return await new Promise((resolve) => {
  client.onidle = () => {
    idles++;
    if (idles === 1) {
      client.useEnvelope({ from: "a@example.com", to: "one@example.com" });
      refused("useEnvelope in flight", () => client.useEnvelope({ to: "x@example.com" }));
      refused("connect twice", () => client.connect());
      refused("send before onready", () => client.send("early"));
      refused("quit mid-message", () => client.quit());
    } else if (idles === 2) {
      client.useEnvelope({ from: "a@example.com", to: "two@example.com" });
    } else {
      client.quit();
    }
  };
  client.onready = () => {
    client.send(`Subject: ${idles}\r\n\r\nbody ${idles}\r\n`);
    client.end();
    refused("send after end", () => client.send("late bytes"));
    refused("end twice", () => client.end());
  };
  client.onerror = (e) => errors.push([e.name, e.fatal, e.message]);
  client.onclose = (isError) => resolve({ calls, errors, isError, state: client.state });
  client.connect();
});
"""


def test_calls_in_the_wrong_state_are_refused_and_the_connection_stays_usable(
    page: Page, proxy: PysmtpProxy
) -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        out = page.run(INPUT_SCRIPT, server.port, proxy.url(server.port))
    assert out["isError"] is False and out["errors"] == []
    usage = ["SmtpUsageError", True, False]  # thrown, an Error, not fatal
    assert (
        out["calls"]
        == [
            ["useEnvelope in flight", *usage],
            ["connect twice", *usage],
            ["send before onready", *usage],
            ["quit mid-message", *usage],
        ]
        + [["send after end", *usage], ["end twice", *usage]] * 2
    )
    assert [(m.rcpt_tos, m.content) for m in recorder.messages] == [
        (["one@example.com"], b"Subject: 1\r\n\r\nbody 1\r\n"),
        (["two@example.com"], b"Subject: 2\r\n\r\nbody 2\r\n"),
    ]


# WebDriver carries arguments as JSON, which has no lone surrogate: that case is made in the page
# (test_browser.py, test_a_lone_surrogate_is_our_error_in_the_page).
PAGE_BAD_ENVELOPES = [(e, r) for e, r in BAD_ENVELOPES if "not valid Unicode" not in r]


def test_a_bad_envelope_is_an_error_then_quit_then_close_and_nothing_is_sent(
    page: Page, proxy: PysmtpProxy
) -> None:
    """Each bad envelope after a first message on its connection: onerror, nothing of it on the
    wire, QUIT answered, onclose(true). The server stores only the first messages."""
    recorder = Recorder(pipelining=True)
    server = SmtpServer(recorder)
    server.SMTP_kwargs["enable_SMTPUTF8"] = False
    with server:
        url = proxy.url(server.port)
        recs = [
            page.session(
                port=server.port,
                options={"proxy": url},
                envelopes=[{"from": "a@example.com", "to": f"ok{i}@example.com"}, bad],
            )
            for i, (bad, _) in enumerate(PAGE_BAD_ENVELOPES)
        ]
        assert settle(lambda: recorder.connections_open) == 0
    for rec, (_, reason) in zip(recs, PAGE_BAD_ENVELOPES, strict=True):
        assert rec["order"] == ["done:true", "error:SmtpEnvelopeError", "close:true"], rec["order"]
        (error,) = rec["errors"]
        assert error["fatal"] is True and error["isError"] is True and reason in error["message"], error
        assert error["stage"] == "envelope" and error["code"] is None and error["enhanced"] is None
        sent = [line for line in rec["log"] if line.startswith("C: ")]
        assert sent[-1] == "C: QUIT" and sum(line.startswith("C: MAIL") for line in sent) == 1
        assert "S: 221 Bye" in rec["log"]
        assert not any("victim" in line or "NOTIFY" in line for line in sent)
    assert [m.rcpt_tos for m in recorder.messages] == [
        [f"ok{i}@example.com"] for i in range(len(PAGE_BAD_ENVELOPES))
    ]
    assert settle(lambda: sum(page.stats().values())) == 0


# emailjs-smtp-client's integration test "should fail with invalid MAIL FROM" (and its two
# siblings), ported to the page: in onerror the test sets onclose and waits for it.
SEED_SCRIPT = r"""
const [port, proxy, envelope] = args;
const api = await window.smtp;
const smtp = new api.SmtpClient("127.0.0.1", port, { proxy });
await new Promise((resolve) => { smtp.onidle = resolve; smtp.connect(); });
return await new Promise((resolve) => {
  smtp.onerror = (err) => {
    smtp.onclose = (isError) => resolve({ name: err.name, message: err.message, fatal: err.fatal, isError });
  };
  smtp.useEnvelope(envelope);
});
"""


@pytest.mark.parametrize(
    ("envelope", "name", "message"),
    [
        ({"from": "invalid", "to": ["receiver@localhost"]}, "SmtpEnvelopeError", "invalid from address"),
        (
            {"from": "sender@example.com", "to": []},
            "SmtpEnvelopeError",
            "Can't send mail - no recipients defined",
        ),
        (
            {"from": "sender@example.com", "to": ["receiver@example.com"]},
            "SmtpRecipientsError",
            "Can't send mail - all recipients were rejected",
        ),
    ],
    ids=["from", "empty", "rejected"],
)
def test_the_seeds_should_fail_tests_get_onclose_after_onerror(
    page: Page, proxy: PysmtpProxy, envelope: dict[str, Any], name: str, message: str
) -> None:
    with SmtpServer(Recorder(reject={"receiver@example.com"})) as server:
        out = page.run(SEED_SCRIPT, server.port, proxy.url(server.port), envelope)
        assert settle(lambda: server.recorder.connections_open) == 0
    assert out["name"] == name and message in out["message"]
    assert out["fatal"] is True and out["isError"] is True and server.recorder.messages == []


# -- load --------------------------------------------------------------------------------------------------

MANY_AT_ONCE = r"""
const [port, proxy, count] = args;
const sessions = [];
for (let i = 0; i < count; i++) {
  const envelopes = [{ from: "a@example.com", to: `c${i}@example.com` }];
  const body = `Subject: ${i}\r\n\r\nmessage ${i}\r\n`;
  sessions.push(window.session({ port, options: { proxy }, envelopes, body }));
}
const recs = await Promise.all(sessions);
await new Promise((r) => setTimeout(r, 50));  // proxies are destroyed just after onclose
const api = await window.smtp;
return { outcomes: recs.map((r) => [r.errors.length, r.done, r.closed]), stats: api.stats() };
"""


def test_fifty_connections_at_once_from_one_page(page: Page, proxy: PysmtpProxy) -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        url = proxy.url(server.port)
        before = (tcp_connections(proxy.port), recorder.connections_total)
        out = page.run(MANY_AT_ONCE, server.port, url, 50)
        assert settle(lambda: recorder.connections_open) == 0
        # The proxy's sessions and its connections: none left (fewer connections than before is
        # fine: one of an earlier test may still have been on its way out when counted)
        assert settle(lambda: sessions_open(proxy)) == 0
        assert settle(lambda: max(0, tcp_connections(proxy.port) - before[0])) == 0
    assert out["outcomes"] == [[0, [True], False]] * 50
    assert out["stats"] == {"socketProxies": 0, "clients": 0, "jsClients": 0}
    contents = sorted(m.content for m in recorder.messages)
    assert contents == sorted(f"Subject: {i}\r\n\r\nmessage {i}\r\n".encode() for i in range(50))
    assert recorder.connections_total - before[1] == 50


def test_a_thousand_messages_on_one_connection_from_the_page(page: Page, proxy: PysmtpProxy) -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        url = proxy.url(server.port)
        before = (tcp_connections(proxy.port), recorder.connections_total)
        envelopes = [{"from": "a@example.com", "to": f"m{i}@example.com"} for i in range(1000)]
        rec = page.session(port=server.port, options={"proxy": url}, envelopes=envelopes)
        assert settle(lambda: recorder.connections_open) == 0
        assert settle(lambda: sessions_open(proxy)) == 0
        assert settle(lambda: tcp_connections(proxy.port) - before[0]) == 0
    assert rec["errors"] == [] and rec["done"] == [True] * 1000 and rec["closed"] is False
    assert [m.rcpt_tos for m in recorder.messages] == [[f"m{i}@example.com"] for i in range(1000)]
    assert recorder.connections_total - before[1] == 1
    assert settle(lambda: sum(page.stats().values())) == 0
