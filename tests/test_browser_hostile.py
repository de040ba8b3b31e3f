"""Hardening in the browser: the same hostile servers as tests/test_hostile.py, reached from the
page through websockify, where the path differs from CPython (the JS socket, node-forge TLS,
the WebSocket proxy); plus a proxy that refuses, and load from one page."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .browsers import insecure_host
from .conftest import Page
from .servers import (
    Certificate,
    Conn,
    Recorder,
    ScriptedServer,
    SmtpServer,
    Websockify,
    free_port,
    legacy_tls_context,
    this_machine,
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
    """One error of that name, then onclose(true), and never ondone(true)."""
    assert len(rec["errors"]) == 1, rec["errors"]
    (error,) = rec["errors"]
    assert error["name"] == name and error["isError"] is True and error["fatal"] is True, error
    assert rec["order"][-2:] == [f"error:{name}", "close:true"], rec["order"]
    assert "done:true" not in rec["order"] and rec["closed"] is True
    return error


def server_lines(rec: dict[str, Any]) -> list[str]:
    return [line for line in rec["log"] if line.startswith("S: ")]


def children(pid: int) -> int:
    """Processes whose parent is ``pid`` (websockify forks one per WebSocket)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            count += 1
    return count


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


def scripted_tls_options(proxy: Websockify, port: int, cert: Certificate) -> dict[str, Any]:
    """STARTTLS against a scripted TLS 1.1 server, pinned, with credentials."""
    return {
        "proxy": proxy.url(port),
        "tlsEngine": "forge",  # a scripted TLS 1.1 server takes one connection: no TLS 1.3 try
        "ca": cert.cert_pem,
        "auth": {"user": USER, "pass": PASSWORD},
    }


def test_starttls_injection_in_the_same_read_is_discarded(
    page: Page, proxy: Websockify, rsa_cert: Certificate
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
    page: Page, proxy: Websockify, rsa_cert: Certificate
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


# -- a man in the middle who strips STARTTLS, between websockify and the server ----------------------


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
    ("host", "extra", "remote_proxy", "authenticates"),
    [
        ("mail.example.com", {}, False, False),  # not loopback: no password in cleartext
        ("mail.example.com", {"allowInsecureAuth": True}, False, True),
        ("127.0.0.1", {}, False, True),  # the SMTP server is the proxy's own machine, and so is the proxy
        # The SMTP server is the proxy's own machine, but ws:// to a proxy that is not this
        # machine would carry the password in the clear on the way there.
        ("127.0.0.1", {}, True, False),
    ],
    ids=["remote", "remote-allowInsecureAuth", "loopback", "loopback-behind-a-remote-ws-proxy"],
)
def test_starttls_stripped_without_require_tls(
    page: Page,
    proxy: Websockify,
    server_tls: ssl.SSLContext,
    host: str,
    extra: dict[str, Any],
    remote_proxy: bool,
    authenticates: bool,
) -> None:
    """The page names an SMTP host; the proxy's token takes it to the man in the middle, who
    deletes the STARTTLS offer. Without requireTLS the session stays in plaintext; AUTH PLAIN
    goes out only to a loopback host behind a proxy on this machine, or with allowInsecureAuth."""
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=server_tls) as server, MitmThread(server.port) as mitm:
        url = proxy.url(mitm.port)
        if remote_proxy:  # the same proxy, under a name that is not loopback
            name = insecure_host(page.engine)
            if page.engine == "webkit" and this_machine()[1] != "127.0.0.1":
                pytest.skip(
                    f"WebKit can reach this proxy (on 127.0.0.1) by a loopback name only; {name} is elsewhere"
                )
            url = url.replace("127.0.0.1", name, 1)
        options = {
            "proxy": url,
            "auth": {"user": USER, "pass": PASSWORD},
            "authMethod": "PLAIN",
        }
        rec = page.session(host=host, port=mitm.port, options={**options, **extra})
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
        assert host in error["message"] and "allowInsecureAuth" in error["message"]
        assert bytes(mitm.from_client) == b"EHLO localhost\r\nQUIT\r\n"  # no AUTH line, no message
        assert recorder.commands == [] and recorder.messages == []


# -- the connection breaks ------------------------------------------------------------------------------


def test_server_closes_mid_reply(page: Page, proxy: Websockify) -> None:
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


def test_server_closes_mid_data(page: Page, proxy: Websockify) -> None:
    def script(conn: Conn) -> None:
        greet_and_accept_envelope(conn)
        conn.read(300_000)

    with ScriptedServer(script) as server:
        rec = page.session(port=server.port, options={"proxy": proxy.url(server.port)}, lines=100_000)
    assert_failed(rec, "SmtpConnectionError")
    assert rec["done"] == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_server_closes_mid_tls_handshake(
    page: Page, proxy: Websockify, rsa_cert: Certificate, mode: str
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


def test_one_byte_a_second_times_out(page: Page, proxy: Websockify) -> None:
    def script(conn: Conn) -> None:
        for byte in b"220 " + b"x" * 60:
            if conn.server.stop.wait(1.0):
                return
            conn.send(bytes([byte]))

    with ScriptedServer(script) as server:
        started = time.monotonic()
        rec = page.session(
            port=server.port, options={"proxy": proxy.url(server.port), "timeoutGreeting": 2500}
        )
        elapsed = time.monotonic() - started
    error = assert_failed(rec, "SmtpTimeoutError")
    assert "greeting" in error["message"] and 2.4 < elapsed < 5


# -- the proxy refuses ----------------------------------------------------------------------------------


def test_the_proxy_refuses_the_websocket(page: Page, proxy: Websockify) -> None:
    with SmtpServer() as server:
        nobody = f"ws://127.0.0.1:{free_port()}/"  # no proxy listening
        unknown = f"ws://127.0.0.1:{proxy.port}/?token=not-in-the-token-file"
        for url in (nobody, unknown):
            rec = page.session(port=server.port, options={"proxy": url})
            error = assert_failed(rec, "SmtpConnectionError")
            assert rec["idles"] == 0 and "cannot reach the WebSocket proxy" in error["message"], url
    assert server.recorder.messages == []
    assert page.stats() == {"socketProxies": 0, "clients": 0, "jsClients": 0}


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
    page: Page, proxy: Websockify
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


def test_a_bad_envelope_is_an_error_then_quit_then_close_and_nothing_is_sent(
    page: Page, proxy: Websockify
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
            for i, bad in enumerate(BAD_ENVELOPES)
        ]
        assert settle(lambda: recorder.connections_open) == 0
    for rec in recs:
        assert rec["order"] == ["done:true", "error:SmtpEnvelopeError", "close:true"], rec["order"]
        (error,) = rec["errors"]
        assert error["fatal"] is True and error["isError"] is True
        sent = [line for line in rec["log"] if line.startswith("C: ")]
        assert sent[-1] == "C: QUIT" and sum(line.startswith("C: MAIL") for line in sent) == 1
        assert "S: 221 Bye" in rec["log"]
        assert not any("victim" in line or "NOTIFY" in line for line in sent)
    assert "SMTPUTF8" in recs[4]["errors"][0]["message"]
    assert [m.rcpt_tos for m in recorder.messages] == [
        [f"ok{i}@example.com"] for i in range(len(BAD_ENVELOPES))
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
    page: Page, proxy: Websockify, envelope: dict[str, Any], name: str, message: str
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


def test_fifty_connections_at_once_from_one_page(page: Page, proxy: Websockify) -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        url = proxy.url(server.port)
        before = (children(proxy.pid), tcp_connections(proxy.port), recorder.connections_total)
        out = page.run(MANY_AT_ONCE, server.port, url, 50)
        assert settle(lambda: recorder.connections_open) == 0
        # websockify's per-connection children and its connections: none more than before (fewer
        # is fine: one of an earlier test may still have been on its way out when counted)
        assert settle(lambda: max(0, children(proxy.pid) - before[0])) == 0
        assert settle(lambda: max(0, tcp_connections(proxy.port) - before[1])) == 0
    assert out["outcomes"] == [[0, [True], False]] * 50
    assert out["stats"] == {"socketProxies": 0, "clients": 0, "jsClients": 0}
    contents = sorted(m.content for m in recorder.messages)
    assert contents == sorted(f"Subject: {i}\r\n\r\nmessage {i}\r\n".encode() for i in range(50))
    assert recorder.connections_total - before[2] == 50


def test_a_thousand_messages_on_one_connection_from_the_page(page: Page, proxy: Websockify) -> None:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        url = proxy.url(server.port)
        before = (children(proxy.pid), tcp_connections(proxy.port), recorder.connections_total)
        envelopes = [{"from": "a@example.com", "to": f"m{i}@example.com"} for i in range(1000)]
        rec = page.session(port=server.port, options={"proxy": url}, envelopes=envelopes)
        assert settle(lambda: recorder.connections_open) == 0
        assert settle(lambda: children(proxy.pid) - before[0]) == 0
        assert settle(lambda: tcp_connections(proxy.port) - before[1]) == 0
    assert rec["errors"] == [] and rec["done"] == [True] * 1000 and rec["closed"] is False
    assert [m.rcpt_tos for m in recorder.messages] == [[f"m{i}@example.com"] for i in range(1000)]
    assert recorder.connections_total - before[2] == 1
    assert settle(lambda: sum(page.stats().values())) == 0
