"""In the browser: the page from dist/ in Chromium, Firefox and WebKit (tests/browsers.py), the
Python engine in Pyodide, the JS socket through the real proxy (pysmtp-wasm-proxy) to real aiosmtpd
servers, TLS with pinning."""

from __future__ import annotations

import hashlib
import json
import time
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest

from .certs import Certificate, self_signed
from .conftest import Page
from .servers import (
    Conn,
    PysmtpProxy,
    Recorder,
    ScriptedServer,
    SmtpServer,
    Websockify,
    free_port,
    legacy_tls_context,
    modern_tls_context,
)

USER, PASSWORD, TOKEN = "alice", "s3cret-pass", "ya29.token-xyz"


def expected_lines(count: int) -> bytes:
    """What window.lines(count) in the page sends."""
    out = []
    for i in range(count):
        head = ("." if i % 3 == 0 else "") + f"line {i} "
        out.append(head + "x" * (74 - len(head)) + "\r\n")
    return "".join(out).encode()


def client_lines(rec: dict) -> list[str]:
    return [line for line in rec["log"] if line.startswith("C: ")]


# -- plain ---------------------------------------------------------------------------------------


@pytest.mark.both_modes
def test_plain_message_with_a_proxy_function_and_partial_rejection(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(reject={"bad@example.com"}, pipelining=True)) as server:
        proxy.url(server.port)
        rec = page.session(
            port=server.port,
            proxyFor=f"ws://127.0.0.1:{proxy.port}/?token=t{{port}}",
            envelopes=[{"from": "a@example.com", "to": ["bad@example.com", "good@example.com"]}],
        )
    assert rec["errors"] == [] and rec["closed"] is False
    assert rec["ready"] == [["bad@example.com"]] and rec["done"] == [True]
    (results,) = rec["results"]
    assert rec["lastResults"] == results  # client.lastResults: what ondone got
    assert {r["recipient"]: (r["accepted"], r["code"]) for r in results} == {
        "good@example.com": (True, 250),
        "bad@example.com": (False, 550),
    }
    (message,) = server.recorder.messages
    assert message.rcpt_tos == ["good@example.com"] and message.content == b"Subject: hi\r\n\r\nhello\r\n"
    assert any(line.startswith("S: 220 ") for line in rec["log"])  # onlog crosses too


def test_over_a_thousand_recipients_cross_as_arrays(page: Page, proxy: PysmtpProxy) -> None:
    # Up to a thousand, refused recipients and results cross as a call's arguments
    # (_jsapi.py PLAIN_MAX); beyond, as one converted array: the page sees the same.
    refused = [f"r{i}@example.com" for i in range(1001)]
    with SmtpServer(Recorder(reject=set(refused), pipelining=True)) as server:
        url = proxy.url(server.port)
        rec = page.session(
            port=server.port,
            options={"proxy": url},
            envelopes=[{"from": "a@example.com", "to": [*refused, "good@example.com"]}],
        )
    assert rec["errors"] == [] and rec["done"] == [True]
    assert rec["ready"] == [refused]
    (results,) = rec["results"]
    assert rec["lastResults"] == results and len(results) == 1002
    assert results[0] == {
        "recipient": "good@example.com",
        "accepted": True,
        "code": 250,
        "message": "2.0.0 OK: queued",
        "enhanced": "2.0.0",
    }
    assert results[1] == {
        "recipient": "r0@example.com",
        "accepted": False,
        "code": 550,
        "message": "5.1.1 <r0@example.com>: recipient rejected",
        "enhanced": "5.1.1",
    }
    assert {r["recipient"] for r in results if not r["accepted"]} == set(refused)
    (message,) = server.recorder.messages
    assert message.rcpt_tos == ["good@example.com"]


def test_auth_plain_login_xoauth2_cram_md5(page: Page, proxy: PysmtpProxy) -> None:
    # Without TLS: in the page, PLAIN, LOGIN and XOAUTH2 in cleartext take allowInsecureAuth
    # (CRAM-MD5 puts no password on the wire), whatever the host.
    recorder = Recorder(users={USER: PASSWORD}, tokens={USER: TOKEN})
    with SmtpServer(recorder) as server:
        url = proxy.url(server.port)
        for auth, method in [
            ({"user": USER, "pass": PASSWORD}, "PLAIN"),
            ({"user": USER, "pass": PASSWORD}, "LOGIN"),
            ({"user": USER, "pass": PASSWORD}, "CRAM-MD5"),
            ({"user": USER, "xoauth2": TOKEN}, None),
        ]:
            options = {
                "proxy": url,
                "auth": auth,
                "allowInsecureAuth": method != "CRAM-MD5",
                **({"authMethod": method} if method else {}),
            }
            rec = page.session(port=server.port, options=options)
            assert rec["errors"] == [] and rec["done"] == [True], rec
            transcript = "\n".join(rec["log"])
            assert PASSWORD not in transcript and TOKEN not in transcript
    assert recorder.commands == ["AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "AUTH XOAUTH2"]
    assert [m.login for m in recorder.messages] == [USER] * 4


@pytest.mark.both_modes
def test_auth_failure_reaches_js_as_an_error_with_codes(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(users={USER: PASSWORD})) as server:
        rec = page.session(
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "auth": {"user": USER, "pass": "wrong"},
                "authMethod": "PLAIN",
                "allowInsecureAuth": True,
            },
        )
    (error,) = rec["errors"]
    assert error["isError"] is True and error["name"] == "SmtpAuthError" and error["undefinedFields"] == []
    assert error["code"] == 535 and error["enhanced"] == "5.7.8" and error["stage"] == "AUTH"
    assert error["fatal"] is True and rec["order"] == ["error:SmtpAuthError", "close:true"]


def test_lmtp_per_recipient_results(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(lmtp_fail={"full@example.com"}), lmtp=True) as server:
        rec = page.session(
            port=server.port,
            options={"proxy": proxy.url(server.port), "lmtp": True},
            envelopes=[{"from": "a@example.com", "to": ["ok@example.com", "full@example.com"]}],
        )
    assert rec["errors"] == [] and rec["done"] == [True]
    (results,) = rec["results"]
    assert {r["recipient"]: (r["accepted"], r["code"], r["enhanced"]) for r in results} == {
        "ok@example.com": (True, 250, "2.1.5"),
        "full@example.com": (False, 550, "5.2.1"),
    }


def test_require_tls_refused_when_the_server_has_no_starttls(page: Page, proxy: PysmtpProxy) -> None:
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder) as server:
        rec = page.session(
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "requireTLS": True,
                "auth": {"user": USER, "pass": PASSWORD},
            },
        )
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "requireTLS" in error["message"]
    assert rec["closed"] is True and recorder.commands == ["STARTTLS"] and recorder.messages == []
    assert not any("AUTH" in line for line in client_lines(rec))


def test_twenty_megabytes_in_64k_chunks_with_ondrain_arrive_byte_identical(
    page: Page, proxy: PysmtpProxy
) -> None:
    count = 20 * 1024 * 1024 // 76
    with SmtpServer(Recorder(pipelining=True)) as server:
        rec = page.session(
            port=server.port, options={"proxy": proxy.url(server.port)}, lines=count, chunkSize=65536
        )
    assert rec["errors"] == [] and rec["done"] == [True]
    expected = expected_lines(count)
    received = server.recorder.messages[0].content
    assert len(received) == len(expected) == rec["sent"]
    assert hashlib.sha256(received).digest() == hashlib.sha256(expected).digest()
    assert rec["drains"] > 0  # send() said "full" and ondrain said "go on"


def test_envelope_errors_and_wrong_calls_are_clear(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        url = proxy.url(server.port)
        for envelope, message in [
            ({"from": "a@example.com", "to": []}, "Can't send mail - no recipients defined"),
            ({"from": "a@example.com", "to": "x@example.com\r\nDATA"}, "invalid to address"),
            # (web/src/client.js passes the usual envelope as plain values, the rest as an object:
            # both get the engine's checks)
            ({"to": ["b@example.com", 5]}, "invalid to address 5: not a string"),
            ({"from": "a@example.com", "to": "b@example.com", "size": 1.5}, "envelope.size must be"),
            ({"from": "a@example.com", "to": "b@example.com", "size": -1}, "envelope.size must be"),
            ({"to": "b@example.com", "cc": "c@example.com"}, "unknown envelope field"),
        ]:
            rec = page.session(port=server.port, options={"proxy": url}, envelopes=[envelope])
            (error,) = rec["errors"]
            assert error["name"] == "SmtpEnvelopeError" and message in error["message"]
            assert error["stage"] == "envelope" and error["code"] is None and error["enhanced"] is None
            assert error["undefinedFields"] == [] and error["fatal"] is True
            assert rec["order"] == ["error:SmtpEnvelopeError", "close:true"]
            assert [line for line in rec["log"] if line.startswith("C: ")][-1] == "C: QUIT"
    assert server.recorder.messages == []
    thrown = page.run(
        """
        const api = await window.smtp;
        const out = {};
        try {
          new api.SmtpClient("localhost", 25, { requireTls: true });
        } catch (e) {
          out.option = [e.name, e.message];
        }
        const client = new api.SmtpClient("localhost", 25, { proxy: "ws://127.0.0.1:1/" });
        try { client.send("x"); } catch (e) { out.send = [e.name, e.message, e instanceof Error]; }
        try { client.send(42); } catch (e) { out.number = [e.name, e.message]; }
        client.onclose = (isError) => { out.closed = isError; };
        client.close();  // never connected: closes at once and releases its Python side
        out.state = client.state;
        try { client.connect(); } catch (e) { out.connectAfterClose = e.name; }
        return out;
        """
    )
    assert thrown["option"][0] == "SmtpUsageError" and "unknown option 'requireTls'" in thrown["option"][1]
    assert thrown["send"][0] == "SmtpUsageError" and thrown["send"][2] is True
    assert thrown["number"] == ["SmtpUsageError", "send() takes a string, a Uint8Array or an ArrayBuffer"]
    assert thrown["closed"] is False and thrown["state"] == "closed"
    assert thrown["connectAfterClose"] == "SmtpUsageError"


def test_the_envelope_s_size_and_a_default_sender_reach_the_server(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        url = proxy.url(server.port)
        rec = page.session(
            port=server.port,
            options={"proxy": url, "name": "client.example"},
            envelopes=[
                {"from": "a@example.com", "to": "b@example.com", "size": 40},
                {"to": ["c@example.com"]},
            ],
        )
    assert rec["errors"] == [] and rec["done"] == [True, True]
    mail = [line for line in rec["log"] if line.startswith("C: MAIL FROM:")]
    assert mail == [
        "C: MAIL FROM:<a@example.com> SIZE=40 BODY=8BITMIME",
        "C: MAIL FROM:<anonymous@client.example> BODY=8BITMIME",
    ]
    assert [m.rcpt_tos for m in server.recorder.messages] == [["b@example.com"], ["c@example.com"]]


def test_the_writes_of_one_turn_leave_as_one_websocket_message(page: Page, proxy: PysmtpProxy) -> None:
    """A message's text and its end written in one turn of the page (send() then end() after
    awaiting onready) leave as one WebSocket message; in two turns (end() after a timer), as two.
    Nothing is lost either way (web/src/socket.js gathers writes up to the end of a turn)."""
    with SmtpServer() as server:
        url = proxy.url(server.port)
        sizes = page.run(
            r"""
            const api = await window.smtp;
            const sent = [];
            const original = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
              sent.push(data.byteLength ?? data.length);
              return original.call(this, data);
            };
            try {
              const client = new api.SmtpClient("localhost", args[0], { proxy: args[1] });
              const text = "Subject: one turn\r\n\r\n" + ("x".repeat(70) + "\r\n").repeat(15);
              const perMessage = [];
              let mark = 0;
              await new Promise((resolve, reject) => {
                let message = 0;
                client.onerror = (e) => reject(e);
                client.onidle = () => {
                  if (message === 2) return client.quit();
                  message += 1;
                  client.useEnvelope({ from: "a@example.com", to: ["b@example.com"] });
                };
                client.onready = async () => {
                  mark = sent.length;
                  await null; // (as a page that awaits onready: outside the socket's event)
                  client.send(text);
                  if (message === 1) client.end();
                  else setTimeout(() => client.end(), 20);
                };
                client.ondone = (success) => perMessage.push([success, ...sent.slice(mark)]);
                client.onclose = () => resolve();
                client.connect();
              });
              return { perMessage, textBytes: text.length };
            } finally {
              WebSocket.prototype.send = original;
            }
            """,
            server.port,
            url,
        )
        received = server.recorder.messages
    text_bytes = sizes["textBytes"]
    # one turn: the text and ".\r\n" together; two turns: the text, then ".\r\n"
    assert sizes["perMessage"] == [[True, text_bytes + 3], [True, text_bytes, 3]], sizes
    assert [len(m.content) for m in received] == [text_bytes, text_bytes]
    assert all(m.content.endswith(b"x" * 70 + b"\r\n") for m in received)


# Text of every width: UTF-8 of 2 and 3 bytes, with continuation bytes in 0x80-0x9F (where
# latin-1 and windows-1252, the Web's "latin1", differ), and a NUL.
WIDE = "ünïcödé 日本語 \u0080\u009f\u00ff €\x00end"


@pytest.mark.both_modes
def test_every_byte_crosses_the_socket_unchanged_in_short_and_long_segments(
    page: Page, proxy: PysmtpProxy
) -> None:
    """Segments and writes of up to 256 bytes cross between the socket and Python as binary
    strings, longer ones as buffers (web/src/socket.js TEXT_MAX): the server's UTF-8 reaches the
    transcript and the results, and the client's UTF-8 reaches the server, byte for byte, both
    ways and at both sizes."""
    wide = WIDE.encode()
    # MAIL FROM of 263 bytes (a buffer), RCPT TO short (a binary string, as the answer to MAIL's
    # reply); the message's text, written as the answer to DATA's reply, over 256 bytes too.
    sender = "ř" * 30 + "@" + ".".join(["ü" + "d" * 50] * 3) + ".example"
    recipient = "jörg@exämple.org"
    text = "Subject: " + WIDE.replace("\x00", "") + "\r\n\r\n" + "ü" * 200 + "\r\nbody\r\n"
    got: dict[str, bytes] = {}

    def script(conn: Conn) -> None:
        conn.send(b"220 " + wide + b"\r\n")  # short: a binary string
        assert conn.line().startswith(b"EHLO ")  # type: ignore[union-attr]
        # long (> 256 bytes): the buffer
        conn.send(
            b"250-host " + wide + b"\r\n250-X-PAD " + b"p" * 300 + b"\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        )
        got["mail"] = conn.line() or b""
        conn.send(b"250 2.1.0 " + wide + b"\r\n")
        got["rcpt"] = conn.line() or b""
        conn.send(b"250 2.1.5 " + wide + b" " + b"q" * 300 + b"\r\n")  # long
        assert conn.line() == b"DATA"
        conn.send(b"354 go\r\n")
        got["data"] = conn.until(b"\r\n.\r\n")
        conn.send(b"250 2.0.0 " + wide + b"\r\n")
        assert conn.line() == b"QUIT"
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        rec = page.session(
            port=server.port,
            options={"proxy": proxy.url(server.port)},
            envelopes=[{"from": sender, "to": [recipient]}],
            body=text,
        )
    assert server.errors == [] and rec["errors"] == [], (server.errors, rec["errors"])
    assert rec["done"] == [True]
    assert got["mail"] == f"MAIL FROM:<{sender}> BODY=8BITMIME SMTPUTF8".encode() and len(got["mail"]) > 256
    assert got["rcpt"] == f"RCPT TO:<{recipient}>".encode()
    assert got["data"] == text.encode()[:-2] and len(got["data"]) > 256
    server_lines = [line for line in rec["log"] if line.startswith("S: ")]
    assert server_lines[0] == "S: 220 " + WIDE
    assert server_lines[1] == "S: 250-host " + WIDE
    assert "S: 250 2.1.0 " + WIDE in server_lines
    assert "S: 250 2.1.5 " + WIDE + " " + "q" * 300 in server_lines
    ((result,),) = rec["results"]
    assert result["recipient"] == recipient and result["message"] == "2.0.0 " + WIDE, result


def test_a_lone_surrogate_is_our_error_in_the_page(page: Page, proxy: PysmtpProxy) -> None:
    """JS strings may hold lone surrogates (WebDriver's JSON cannot carry them, so they are made
    here): an address, a header and a password with one are the library's own errors, with the
    reason; nothing of them reaches the server."""
    with SmtpServer() as server:
        out = page.run(
            r"""
            const [port, proxy] = args;
            const api = await window.smtp;
            const out = {};
            try {
              new api.SmtpClient("localhost", port, { proxy, auth: { user: "u", pass: "p\ud800" } });
            } catch (e) { out.credentials = [e.name, e.message]; }
            const client = new api.SmtpClient("localhost", port, { proxy });
            out.envelope = await new Promise((resolve) => {
              let error = null;
              client.onidle = () => client.useEnvelope({ from: "a\udc00@example.com", to: "b@example.com" });
              client.onerror = (e) => { error = [e.name, e.message, e.stage]; };
              client.onclose = () => resolve(error);
              client.connect();
            });
            const mailer = new api.SmtpClient("localhost", port, { proxy });
            try {
              const headers = { "X-A": "x\ud800" };
              await mailer.sendMail({ from: "a@example.com", to: "b@example.com", headers });
            } catch (e) { out.header = [e.name, e.message]; }
            mailer.close();
            return JSON.stringify(out);  // (well-formed: a lone surrogate comes back escaped)
            """,
            server.port,
            proxy.url(server.port),
        )
    out = json.loads(out)
    assert (
        out["credentials"][0] == "SmtpUsageError"
        and "auth.pass is not valid Unicode" in out["credentials"][1]
    )
    assert out["envelope"][0] == "SmtpEnvelopeError" and "not valid Unicode" in out["envelope"][1], out
    assert out["envelope"][2] == "envelope"
    assert (
        out["header"][0] in ("SmtpEnvelopeError", "SmtpUsageError")
        and "not valid Unicode" in out["header"][1]
    )
    assert server.recorder.messages == [] and server.recorder.commands == []


# Configuration errors, each made into a thrown SmtpUsageError when the client is made (in-page:
# Python asks the socket's checks; worker mode: the page asks them itself), not an error at
# connect() naming internal classes. Shared with tests/test_browser_worker.py.
CONFIGURATION_ERRORS = r"""
const api = await window.smtp;
const attempt = (host, options) => {
  try { new api.SmtpClient(host, 25, options); return null; }
  catch (e) { return [e.name, e.message, e.fatal, e.code, e.enhanced, e.stage]; }
};
const proxy = "ws://127.0.0.1:1/";
return {
  noProxy: attempt("localhost", {}),
  http: attempt("localhost", { proxy: "http://127.0.0.1:8080/" }),
  notUrl: attempt("localhost", { proxy: "127.0.0.1:8080" }),
  thrower: attempt("localhost", { proxy: () => { throw new Error("no proxy for you"); } }),
  ca: attempt("localhost", { proxy, ca: "not a certificate" }),
  caKey: attempt("localhost", { proxy, ca: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----" }),
  caBase64: attempt("localhost", { proxy, ca: "-----BEGIN CERTIFICATE-----\n%%\n-----END CERTIFICATE-----" }),
  caDer: attempt("localhost", { proxy, ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----" }),
  nul: attempt("localhost\0.evil.example", { proxy }),
  engine: attempt("localhost", { proxy, tlsEngine: "subtls" }),
};
"""


def check_configuration_errors(out: dict[str, Any]) -> None:
    for name, row in out.items():
        assert row is not None and row[0] == "SmtpUsageError" and row[2] is False, (name, row)
        assert row[3:] == [None, None, None], (name, row)  # code, enhanced, stage: null
    assert out["noProxy"][1].startswith("option proxy is missing: give the WebSocket URL"), out
    assert 'the WebSocket URL of that address is "ws://127.0.0.1:8080/"' in out["http"][1], out
    assert 'option proxy "127.0.0.1:8080" is not a URL' in out["notUrl"][1], out
    assert out["thrower"][1] == "option proxy: the function threw: no proxy for you", out
    assert out["ca"][1].startswith("option ca holds no PEM certificate"), out
    assert out["caKey"][1].endswith("; it holds a PRIVATE KEY"), out
    assert out["caBase64"][1] == "option ca holds a PEM block that is not valid base64 (certificate 1)", out
    assert out["caDer"][1].startswith("option ca holds a PEM block that is not a certificate"), out
    # (In-page the engine's own check of the host may come first, in its words: a usage error either way.)
    assert "host" in out["nul"][1], out
    assert out["engine"][1] == "option tlsEngine must be one of 'auto', 'openssl', 'forge', not 'subtls'", out
    assert not any("PySmtpSocket" in row[1] for row in out.values()), out  # no internal class named


@pytest.mark.both_modes
def test_configuration_errors_throw_at_construction_in_words_a_user_knows(page: Page) -> None:
    check_configuration_errors(page.run(CONFIGURATION_ERRORS))


# -- TLS -----------------------------------------------------------------------------------------


def implicit_tls(proxy: PysmtpProxy, port: int, cert: Certificate) -> dict[str, Any]:
    """Options for implicit TLS with node-forge (chosen: the servers here speak TLS 1.1 only) and
    trust pinned to ``cert``. (OpenSSL, the default, is tested in tests/test_browser_tls.py.)"""
    return {"proxy": proxy.url(port), "useSecureTransport": True, "ca": cert.cert_pem, "tlsEngine": "forge"}


@pytest.mark.both_modes
def test_implicit_tls_with_the_certificate_pinned(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    with SmtpServer(implicit_tls=legacy_tls_context(rsa_cert)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options=implicit_tls(proxy, server.port, rsa_cert),
        )
    assert rec["errors"] == [] and rec["done"] == [True]
    assert server.recorder.messages[0].tls is True
    connected = [line for line in rec["log"] if line.startswith("*: connected with ")]
    assert len(connected) == 1 and "TLS 1.1" in connected[0] and "(forge)" in connected[0], rec["log"]


@pytest.mark.both_modes
def test_starttls_with_the_certificate_pinned_then_auth(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=legacy_tls_context(rsa_cert), auth_require_tls=True) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "ca": [rsa_cert.cert_pem],
                "auth": {"user": USER, "pass": PASSWORD},
                "tlsEngine": "forge",  # a TLS 1.1 server: the page's choice
            },
        )
    assert rec["errors"] == [] and rec["done"] == [True]
    assert recorder.commands == ["STARTTLS", "AUTH PLAIN"]
    assert recorder.messages[0].tls is True and recorder.messages[0].login == USER


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_pinning_mismatch_is_refused_before_any_smtp_byte(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate, tmp_path: Path, mode: str
) -> None:
    impostor = self_signed(tmp_path)  # same name, another key: not the pinned certificate
    recorder = Recorder(users={USER: PASSWORD})
    tls = legacy_tls_context(impostor)
    kwargs = {"implicit_tls": tls} if mode == "implicit" else {"starttls": tls}
    with SmtpServer(recorder, **kwargs) as server:  # type: ignore[arg-type]
        rec = page.session(
            host="localhost",
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "useSecureTransport": mode == "implicit",
                "ca": rsa_cert.cert_pem,
                "auth": {"user": USER, "pass": PASSWORD},
                "tlsEngine": "forge",
            },
        )
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not trusted" in error["message"]
    assert rec["closed"] is True and rec["idles"] == 0
    # Implicit TLS: not one SMTP command; STARTTLS: nothing after STARTTLS.
    expected = [] if mode == "implicit" else ["C: EHLO localhost", "C: STARTTLS"]
    assert client_lines(rec) == expected
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"]) and recorder.messages == []


def test_unknown_ca_is_refused_against_the_bundled_root_store(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    with SmtpServer(implicit_tls=legacy_tls_context(rsa_cert)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options={"proxy": proxy.url(server.port), "useSecureTransport": True, "tlsEngine": "forge"},
        )
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not trusted" in error["message"]
    assert client_lines(rec) == [] and server.recorder.messages == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_tls_1_2_only_server_is_refused_by_node_forge_with_a_clear_error(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate, mode: str
) -> None:
    # The default engine reaches this server with OpenSSL (test_browser_tls.py); node-forge alone cannot.
    tls = modern_tls_context(rsa_cert)  # Python's default server settings
    kwargs = {"implicit_tls": tls} if mode == "implicit" else {"starttls": tls}
    with SmtpServer(**kwargs) as server:  # type: ignore[arg-type]
        rec = page.session(
            host="localhost",
            port=server.port,
            options={
                "proxy": proxy.url(server.port),
                "useSecureTransport": mode == "implicit",
                "ca": rsa_cert.cert_pem,
                "tlsEngine": "forge",
                "timeoutGreeting": 20000,
            },
        )
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError"
    assert "TLS 1.2" in error["message"] and "node-forge" in error["message"]
    assert rec["closed"] is True and server.recorder.messages == []


# -- failures of the path --------------------------------------------------------------------------


def test_the_proxy_going_away_mid_message(page: Page, tmp_path: Path) -> None:
    with SmtpServer() as server, PysmtpProxy(tmp_path) as dying:
        page.start(port=server.port, options={"proxy": dying.url(server.port)}, lines=3_000_000, pauseMs=2)
        for _ in range(600):
            progress = page.run("await new Promise((r) => setTimeout(r, 50)); return window.current.sent;")
            if progress > 1_000_000:
                break
        assert progress > 1_000_000, "the message did not start streaming"
        dying.kill()
        rec = page.finish()
    assert rec["done"] == [] and rec["closed"] is True
    assert rec["errors"] and rec["errors"][-1]["fatal"] is True
    assert rec["errors"][-1]["name"] == "SmtpConnectionError"
    assert "the connection to the proxy was lost" in rec["errors"][-1]["message"], rec["errors"]
    assert server.recorder.messages == []


def test_a_target_that_refuses_is_a_connection_error(page: Page, websockify: Websockify) -> None:
    # websockify opens the WebSocket, then fails to connect to its target (close 1011). It chose
    # the target (here by the token), so the message sends the reader to it and to the proxy's log,
    # and does not present the page's host:port as the server that was tried. (pysmtp-wasm-proxy
    # names the target and the reason: tests/test_proxy_browser.py.)
    port = free_port()
    url = websockify.url(port)
    rec = page.session(host="smtp.example.com", port=25, options={"proxy": url})
    (error,) = rec["errors"]
    assert error["name"] == "SmtpConnectionError" and error["stage"] == "connect", error
    assert f"the proxy at {url} could not connect to its SMTP server" in error["message"], error
    assert "Failed to connect to downstream server" in error["message"] and "proxy's log" in error["message"]
    assert "smtp.example.com" not in error["message"], error
    assert rec["closed"] is True


# -- the page and the boundary ------------------------------------------------------------------------


def test_python_in_the_same_pyodide_uses_the_client_directly(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        url = proxy.url(server.port)
        result = page.run(
            """
            const api = await window.smtp;
            return (await api.pyodide.runPythonAsync(args[0])).toJs();  // a Python list, as JS
            """,
            f"""
import asyncio
from pysmtp_wasm import SmtpClient

async def main():
    client = SmtpClient("localhost", {server.port}, {{"proxy": {url!r}}})
    closed = asyncio.get_running_loop().create_future()
    outcome = []
    def onidle():
        if outcome:
            client.quit()
        else:
            client.useEnvelope({{"from": "py@example.com", "to": ["rcpt@example.com"]}})
    def onready(failed):
        client.send(b"Subject: from Python in Pyodide\\r\\n\\r\\nhi\\r\\n")
        client.end()
    client.onidle = onidle
    client.onready = onready
    client.ondone = outcome.append
    client.onclose = closed.set_result
    client.connect()
    is_error = await closed
    return [outcome, is_error, type(client._transport).__name__]

result = await main()
del main
result
""",
        )
    assert result == [[True], False, "BrowserTransport"]
    assert server.recorder.messages[0].mail_from == "py@example.com"


PYTHON_OBJECTS = """
const api = await window.smtp;
return api.pyodide.runPython(`
import gc
from pysmtp_wasm import SmtpClient
from pysmtp_wasm._browser import BrowserTransport
from pysmtp_wasm._jsapi import JsClient
gc.collect()
[sum(isinstance(o, cls) for o in gc.get_objects()) for cls in (SmtpClient, BrowserTransport, JsClient)]
`).toJs();
"""


def test_no_proxy_leaks_per_message_or_per_connection(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(pipelining=True)) as server:
        url = proxy.url(server.port)
        before = page.stats()
        objects_before = page.run(PYTHON_OBJECTS)
        for _ in range(5):
            rec = page.session(
                port=server.port,
                options={"proxy": url},
                envelopes=[{"from": "a@example.com", "to": "b@example.com"}] * 4,
            )
            assert rec["done"] == [True] * 4
        after = page.stats()
        objects = page.run(PYTHON_OBJECTS)
    assert len(server.recorder.messages) == 20
    assert before == after == {"socketProxies": 0, "clients": 0, "jsClients": 0}
    # Nothing of a connection outlives it (SmtpClient, BrowserTransport); a JsClient is the
    # Python side of one JS client for its whole life (a sendMail after the close connects
    # again through it): one per JS client at most, freed with it (Pyodide's finalizer).
    assert objects[:2] == [0, 0] and objects[2] - objects_before[2] <= 5, (objects_before, objects)


def test_a_page_that_hears_onclose_finds_the_connection_released(page: Page, proxy: PysmtpProxy) -> None:
    """The socket's callback proxies are destroyed before onclose reaches the page: the
    counters read inside onclose (after a QUIT, and after a close() of the page's own) are back
    at zero, not zero a moment later."""
    with SmtpServer() as server:
        url = proxy.url(server.port)
        seen = page.run(
            """
            const api = await window.smtp;
            const inside = [];
            for (const ending of ["quit", "close"]) {
              await new Promise((resolve, reject) => {
                const client = new api.SmtpClient("localhost", args[0], { proxy: args[1] });
                client.onerror = (e) => reject(e);
                const envelope = { from: "a@example.com", to: ["b@example.com"] };
                client.onidle = () => (ending === "quit" ? client.quit() : client.useEnvelope(envelope));
                client.onready = () => { client.send("Subject: x\\r\\n\\r\\nx\\r\\n"); client.end(); };
                client.ondone = () => client.close();
                client.onclose = () => { inside.push(api.stats().socketProxies); resolve(); };
                client.connect();
              });
            }
            return inside;
            """,
            server.port,
            url,
        )
    assert seen == [0, 0]


def test_the_page_needs_nothing_but_its_own_origin(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate
) -> None:
    # Every engine runs on a closed network (tests/browsers.py, conftest): a fetch from a CDN
    # would fail. Here: a TLS session with each engine (each loads it lazily: node-forge for a
    # TLS 1.1 server, OpenSSL for a modern one), then every resource the page loaded must have
    # come from dist/ on the page's own origin.
    with SmtpServer(implicit_tls=legacy_tls_context(rsa_cert)) as server:
        rec = page.session(
            host="localhost", port=server.port, options=implicit_tls(proxy, server.port, rsa_cert)
        )
    assert rec["done"] == [True]
    with SmtpServer(implicit_tls=modern_tls_context(rsa_cert)) as server:
        options = {**implicit_tls(proxy, server.port, rsa_cert), "tlsEngine": "openssl"}
        rec = page.session(host="localhost", port=server.port, options=options)
    assert rec["done"] == [True]
    resources = page.run("return performance.getEntriesByType('resource').map((e) => e.name);")
    names = {r.rsplit("/", 1)[-1] for r in resources}
    assert {"pysmtp-wasm.js", "pyodide.js", "pyodide.asm.wasm", "python_stdlib.zip", "forge.min.js"} <= names
    assert {"openssl-tls.js", "openssl-tls.wasm"} <= names, names
    assert any(name.startswith("pysmtp_wasm-") and name.endswith(".whl") for name in names), names
    # No snapshot was built (./build.sh snapshot): the page does not ask for one (no 404).
    assert "pysmtp-snapshot.bin" not in names
    assert all(r.startswith(page.base_url + "/") for r in resources), resources


def test_the_browser_reaches_nothing_but_loopback(page: Page) -> None:
    # The closed network of every engine (tests/browsers.py): with "no-cors" a reachable host
    # would give an opaque response; here each fetch must fail as a network error.
    out = page.run(
        """
        const out = {};
        const urls = ["http://example.com/", "https://cdn.jsdelivr.net/npm/pyodide/", "http://10.0.0.1/"];
        for (const url of urls) {
          try { await fetch(url, { mode: "no-cors", cache: "no-store" }); out[url] = "reached"; }
          catch (e) { out[url] = e.name; }
        }
        return out;
        """
    )
    assert set(out.values()) == {"TypeError"}, out


def test_a_pinned_certificate_for_another_host_name_is_refused(
    page: Page, proxy: PysmtpProxy, tmp_path: Path
) -> None:
    other = self_signed(tmp_path, "mail.example.net")  # trusted (pinned), but not for "localhost"
    with SmtpServer(implicit_tls=legacy_tls_context(other)) as server:
        rec = page.session(
            host="localhost",
            port=server.port,
            options=implicit_tls(proxy, server.port, other),
        )
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "is for mail.example.net" in error["message"]
    assert "not localhost" in error["message"]
    assert client_lines(rec) == [] and server.recorder.messages == []


def test_the_es_module_entry(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        url = proxy.url(server.port)
        result = page.run(
            """
            const mod = await import(new URL("pysmtp-wasm.mjs", location.href).href);
            const booted = await window.smtp;
            const api = await mod.load({ pyodide: booted.pyodide });  // reuse this page's Pyodide
            return await new Promise((resolve) => {
              const client = new api.SmtpClient("localhost", args[0], { proxy: args[1] });
              const seen = [];
              client.onidle = () => (seen.includes("done") ? client.quit()
                : client.useEnvelope({ from: "esm@example.com", to: "rcpt@example.com" }));
              client.onready = () => { client.send("Subject: esm\\r\\n\\r\\nhi\\r\\n"); client.end(); };
              client.ondone = (ok) => seen.push(ok ? "done" : "refused");
              client.onclose = (isError) => resolve({ seen, isError, version: mod.default.version,
                                                      same: mod.load === mod.default.load });
              client.connect();
            });
            """,
            server.port,
            url,
        )
    assert result == {"seen": ["done"], "isError": False, "version": "0.1.0", "same": True}
    assert server.recorder.messages[0].mail_from == "esm@example.com"


# -- preconnect --------------------------------------------------------------------------------------

PRECONNECT = """
PySmtp.Socket.preconnect("localhost", args[0], args[1]);
await new Promise((resolve) => setTimeout(resolve, 500));  // as if Python were still booting
"""


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "implicit-tls"])
def test_a_preconnected_socket_is_taken_over_by_the_first_matching_client(
    page: Page, proxy: PysmtpProxy, rsa_cert: Certificate, tls: bool
) -> None:
    context = legacy_tls_context(rsa_cert) if tls else None
    with SmtpServer(implicit_tls=context) as server:
        options = {"proxy": proxy.url(server.port)}
        if tls:
            options |= {"useSecureTransport": True, "ca": rsa_cert.cert_pem, "tlsEngine": "forge"}
        count = server.recorder.connections_total  # (the server's own readiness probe)
        page.run(PRECONNECT, server.port, options)
        # The connection (and the TLS handshake) happened before any client existed.
        assert server.recorder.connections_total == count + 1
        first = page.session(port=server.port, options=options)
        assert server.recorder.connections_total == count + 1  # it took that one over
        # A client with other options (here: another proxy URL) gets a connection of its own.
        other = page.session(port=server.port, options={**options, "proxy": proxy.url(server.port) + "&x=1"})
        second = page.session(port=server.port, options=options)
    assert first["done"] == other["done"] == second["done"] == [True]
    assert first["errors"] == [] and first["closed"] is False
    assert server.recorder.connections_total == count + 3 and len(server.recorder.messages) == 3
    # The greeting that arrived while the socket waited is the first thing the client read.
    assert [line for line in first["log"] if line.startswith("S: ")][0].startswith("S: 220 ")


def test_an_unclaimed_preconnected_socket_is_closed(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:
        count = server.recorder.connections_total
        page.run(
            "PySmtp.Socket.PARK_MS = 300;" + PRECONNECT + "PySmtp.Socket.PARK_MS = 30000;",
            server.port,
            {"proxy": proxy.url(server.port)},
        )
        deadline = time.monotonic() + 10
        while server.recorder.connections_open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.recorder.connections_total == count + 1 and server.recorder.connections_open == 0
        rec = page.session(port=server.port, options={"proxy": proxy.url(server.port)})
    assert rec["done"] == [True] and server.recorder.connections_total == count + 2


# -- the high-level API --------------------------------------------------------------------------------


def test_send_mail_with_bcc_utf8_and_a_binary_attachment(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(pipelining=True)) as server:
        out = page.run(
            """
            const api = await window.smtp;
            const bytes = new Uint8Array(200000);
            for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + (i >> 8)) & 255;
            const digest = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
                                      (b) => b.toString(16).padStart(2, "0")).join("");
            const client = new api.SmtpClient("localhost", args[0], { proxy: args[1] });
            const progress = [];
            const result = await client.sendMail({
              from: "Zoë <zoe@example.com>",
              to: ["Ana <ana@example.com>"],
              cc: "carol@example.com",
              bcc: ["hidden@example.com", "secret@example.com"],
              subject: "Grüße — ünïcödé ✓",
              text: "Héllo wörld 日本語\\n.dot line\\n",
              html: "<p>Héllo <b>wörld</b></p>",
              attachments: [{ filename: "blob.bin", content: bytes }],
            }, { onprogress: (sent, total) => progress.push([sent, total]) });
            const closed = new Promise((resolve) => (client.onclose = resolve));
            client.quit();
            await closed;
            await new Promise((r) => setTimeout(r, 10));  // proxies are destroyed just after onclose
            const stats = api.stats();
            const last = client.lastResults.map((r) => r.recipient).sort();
            return { result, digest, progress, stats, last };
            """,
            server.port,
            proxy.url(server.port),
        )
    result = out["result"]
    assert sorted(result["accepted"]) == [
        "ana@example.com", "carol@example.com", "hidden@example.com", "secret@example.com",
    ]  # fmt: skip
    assert result["rejected"] == [] and result["messageId"].endswith("@example.com>")
    (received,) = server.recorder.messages
    assert sorted(received.rcpt_tos) == sorted(result["accepted"])
    assert b"hidden@example.com" not in received.content and b"Bcc:" not in received.content
    message = message_from_bytes(received.content, policy=email_policy.default)
    assert message["Subject"] == "Grüße — ünïcödé ✓" and str(message["From"]) == "Zoë <zoe@example.com>"
    assert (
        message.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Héllo wörld 日本語\n.dot line\n"
    )
    (attachment,) = list(message.iter_attachments())
    data = attachment.get_content()
    assert attachment.get_filename() == "blob.bin" and len(data) == 200000
    assert hashlib.sha256(data).hexdigest() == out["digest"]
    assert out["progress"][-1] == [result["size"], result["size"]]
    assert out["stats"] == {"socketProxies": 0, "clients": 0, "jsClients": 0}
    assert out["last"] == sorted(result["accepted"])  # sendMail set lastResults, kept after quit()


def test_send_mail_rejections_reach_js_as_errors(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer(Recorder(reject={"x@example.com"})) as server:
        out = page.run(
            """
            const api = await window.smtp;
            const client = new api.SmtpClient("localhost", args[0], { proxy: args[1] });
            const caught = [];
            try {
              await client.sendMail({ from: "a@example.com" });
            } catch (e) { caught.push([e.name, e.message]); }
            try {
              await client.sendMail({ from: "a@example.com", to: "x@example.com", subject: "s", text: "t" });
            } catch (e) { caught.push([e.name, e.message, e.code, e.enhanced]); }
            return caught;
            """,
            server.port,
            proxy.url(server.port),
        )
    assert out[0] == ["SmtpEnvelopeError", "Can't send mail - no recipients defined"]
    assert out[1] == ["SmtpRecipientsError", "Can't send mail - all recipients were rejected", 550, "5.1.1"]


SEND_MAIL_AGAIN = r"""
const [port, proxy] = args;
const api = await window.smtp;
const client = new api.SmtpClient("localhost", port, { proxy });
const order = [];
const mail = (to) => ({ from: "a@example.com", to, subject: to, text: "hello" });
let retried = null;
client.onerror = (e) => {
  order.push("error:" + e.name);
  // At once, from onerror, while the connection is still closing: it waits, then connects anew.
  retried ??= client.sendMail(mail("in-onerror@example.com"));
  retried.then((r) => order.push("resolved:" + r.accepted));
};
client.onclose = (isError) => order.push("close:" + isError);
try {
  await client.sendMail(mail("x@example.com"));
} catch (e) {
  order.push("rejected:" + e.name);
}
await retried;
const third = await client.sendMail(mail("third@example.com"));
order.push("resolved:" + third.accepted);
client.quit();
while (order[order.length - 1] !== "close:false") await new Promise((r) => setTimeout(r, 10));
await new Promise((r) => setTimeout(r, 10));  // proxies are destroyed just after onclose
return { order, stats: api.stats() };
"""


def test_send_mail_rejects_after_onclose_and_the_next_call_connects_again(
    page: Page, proxy: PysmtpProxy
) -> None:
    with SmtpServer(Recorder(reject={"x@example.com"})) as server:
        before = server.recorder.connections_total
        out = page.run(SEND_MAIL_AGAIN, server.port, proxy.url(server.port))
        connections = server.recorder.connections_total - before
    assert out["order"] == [
        "error:SmtpRecipientsError",
        "close:true",
        "rejected:SmtpRecipientsError",
        "resolved:in-onerror@example.com",
        "resolved:third@example.com",
        "close:false",
    ]
    assert [m.rcpt_tos for m in server.recorder.messages] == [
        ["in-onerror@example.com"],
        ["third@example.com"],
    ]
    assert connections == 2  # the refused one, then one for both messages
    assert out["stats"] == {"socketProxies": 0, "clients": 0, "jsClients": 0}
