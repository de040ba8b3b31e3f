"""A subset of the interop matrix in the page: the Python engine in Pyodide and the JS socket
through the real proxy to real Postfix, Exim, OpenSMTPD and Dovecot LMTP (tests/mta/),
with what was delivered read back from each server's own store."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from .certs import Chain
from .conftest import MAIL_USERS, Page
from .mta import Dovecot, Exim, OpenSmtpd, Postfix, strip_trace
from .servers import PysmtpProxy
from .test_interop import Target, crlf, message


def body_of(token: str, text: bytes = b"Hello from the page.\r\n.leading dot\r\n") -> str:
    return message(token, text).decode()


def client_lines(rec: dict[str, Any]) -> list[str]:
    return [line[3:] for line in rec["log"] if line.startswith("C: ")]


def test_postfix_starttls_auth_bdat_from_the_page(
    page: Page, proxy: PysmtpProxy, postfix: Postfix, mail_chain: Chain
) -> None:
    token = uuid.uuid4().hex
    sessions = len(postfix.tls_versions())
    port = postfix.ports["submission"]
    options = {
        "proxy": proxy.url(port),
        "ca": mail_chain.root_pem,
        "requireTLS": True,
        "auth": {"user": "alice", "pass": MAIL_USERS["alice"]},
        "authMethod": "PLAIN",
    }
    rec = page.session(
        host="localhost",
        port=port,
        options=options,
        body=body_of(token),
        envelopes=[{"from": "alice@example.test", "to": ["bob@example.test", "nobody-here@example.test"]}],
    )
    assert rec["errors"] == [] and rec["done"] == [True] and rec["closed"] is False, rec
    assert rec["ready"] == [["nobody-here@example.test"]]
    assert any(line.endswith(" LAST") and line.startswith("BDAT") for line in client_lines(rec))
    stored = Target("postfix", 0, 0, postfix.mailbox).wait_for("bob", token)
    assert crlf(strip_trace(stored)) == body_of(token).encode()
    assert b"with ESMTPSA" in stored
    assert postfix.tls_versions(at_least=sessions + 1)[sessions:] == ["TLSv1.3"]


def test_postfix_implicit_tls_from_the_page(
    page: Page, proxy: PysmtpProxy, postfix: Postfix, mail_chain: Chain
) -> None:
    token = uuid.uuid4().hex
    port = postfix.ports["smtps"]
    options = {
        "proxy": proxy.url(port),
        "ca": mail_chain.root_pem,
        "useSecureTransport": True,
        "auth": {"user": "carol", "pass": MAIL_USERS["carol"]},
        "authMethod": "LOGIN",
    }
    rec = page.session(
        host="localhost",
        port=port,
        options=options,
        body=body_of(token),
        envelopes=[{"from": "carol@example.test", "to": "alice@example.test"}],
    )
    assert rec["errors"] == [] and rec["done"] == [True], rec
    stored = Target("postfix", 0, 0, postfix.mailbox).wait_for("alice", token)
    assert crlf(strip_trace(stored)) == body_of(token).encode()


def test_exim_starttls_auth_dsn_and_two_megabytes_from_the_page(
    page: Page, proxy: PysmtpProxy, exim: Exim, mail_chain: Chain
) -> None:
    port = exim.ports["smtp"]
    options = {
        "proxy": proxy.url(port),
        "ca": mail_chain.root_pem,
        "auth": {"user": "bob", "pass": MAIL_USERS["bob"]},
        "authMethod": "LOGIN",
    }
    envid = "page-" + uuid.uuid4().hex[:12]  # Exim's queue is shared by the engines' runs
    dsn = {"notify": ["FAILURE", "DELAY"], "ret": "FULL", "envid": envid}
    # window.lines(n) in the page: 76-byte lines, every third starting with a dot.
    rec = page.session(
        host="localhost",
        port=port,
        options=options,
        lines=27000,
        chunkSize=65536,
        envelopes=[{"from": "bob@example.test", "to": "carol@example.test", "dsn": dsn}],
    )
    assert rec["errors"] == [] and rec["done"] == [True], rec
    sent = client_lines(rec)
    assert f"MAIL FROM:<bob@example.test> BODY=8BITMIME RET=FULL ENVID={envid}" in sent
    assert "RCPT TO:<carol@example.test> NOTIFY=FAILURE,DELAY" in sent
    assert sum(line.startswith("BDAT") for line in sent) >= 2
    expected = "".join(
        ("." if i % 3 == 0 else "")
        + f"line {i} "
        + "x" * (74 - len(("." if i % 3 == 0 else "") + f"line {i} "))
        + "\r\n"
        for i in range(27000)
    ).encode()
    (queued,) = [q for q in exim.wait_for(1) if f"-dsn_envid {envid}" in q.envelope]
    # These lines have no header section: Exim keeps the message with an empty one, so what
    # it would deliver starts with the blank line that ends the (empty) headers.
    got = crlf(strip_trace(queued.message))
    assert got[:2] == b"\r\n" and len(got) == len(expected) + 2
    assert hashlib.sha256(got[2:]).digest() == hashlib.sha256(expected).digest()


def test_opensmtpd_plain_and_its_tls_failure_from_the_page(
    page: Page, proxy: PysmtpProxy, opensmtpd: OpenSmtpd, mail_chain: Chain
) -> None:
    token = uuid.uuid4().hex
    port = opensmtpd.ports["smtp"]
    url = proxy.url(port)
    rec = page.session(
        host="localhost",
        port=port,
        options={"proxy": url, "ignoreTLS": True},
        body=body_of(token),
        envelopes=[{"from": "alice@example.test", "to": "bob@example.test"}],
    )
    assert rec["errors"] == [] and rec["done"] == [True], rec
    assert "DATA" in client_lines(rec)  # no CHUNKING offered
    stored = Target("opensmtpd", 0, 0, opensmtpd.mailbox).wait_for("bob", token)
    assert crlf(strip_trace(stored)) == body_of(token).encode()
    # Debian 12's OpenSMTPD cannot finish a TLS handshake (tests/mta/): a clear error in the page too.
    rec = page.session(host="localhost", port=port, options={"proxy": url, "ca": mail_chain.root_pem})
    assert rec["done"] == [] and rec["closed"] is True
    assert [e["name"] for e in rec["errors"]] == ["SmtpTlsError"], rec["errors"]


def test_dovecot_lmtp_per_recipient_results_from_the_page(
    page: Page, proxy: PysmtpProxy, dovecot: Dovecot
) -> None:
    token = uuid.uuid4().hex
    port = dovecot.lmtp_port
    body = body_of(token, b"p" * 3000 + b"\r\n")  # over carol's 1 KB quota
    to = ["alice@example.test", "nobody-here@example.test", "carol@example.test"]
    rec = page.session(
        host="localhost",
        port=port,
        options={"proxy": proxy.url(port), "lmtp": True},
        body=body,
        envelopes=[{"from": "s@example.test", "to": to}],
    )
    assert rec["errors"] == [] and rec["done"] == [True], rec
    (results,) = rec["results"]
    assert {r["recipient"]: (r["accepted"], r["code"]) for r in results} == {
        "alice@example.test": (True, 250),
        "carol@example.test": (False, 552),
        "nobody-here@example.test": (False, 550),
    }
    stored = Target("dovecot", 0, 0, dovecot.mailbox).wait_for("alice", token)
    assert crlf(strip_trace(stored)) == body.encode()


def test_send_mail_with_dsn_to_postfix_from_the_page(
    page: Page, proxy: PysmtpProxy, postfix: Postfix, mail_chain: Chain
) -> None:
    token = uuid.uuid4().hex
    port = postfix.ports["smtp"]
    out = page.run(
        """
        const api = await window.smtp;
        const client = new api.SmtpClient("localhost", args[0], { proxy: args[1], ca: args[2] });
        const result = await client.sendMail({
          from: "alice@example.test", to: "bob@example.test", subject: "page dsn " + args[3], text: "hi\\n",
          dsn: { notify: ["SUCCESS"], ret: "HDRS", envid: "page " + args[3] },
        });
        const caught = [];
        // The refused DSN ends the connection (onerror, QUIT, onclose(true)); sendMail rejects
        // after onclose, so nothing is left to quit.
        const closed = new Promise((resolve) => (client.onclose = resolve));
        try {
          const dsn = { notify: ["NEVER", "DELAY"] };
          await client.sendMail({ from: "alice@example.test", to: "bob@example.test", dsn });
        } catch (e) { caught.push([e.name, e.message]); }
        caught.push(await closed);
        return { accepted: result.accepted, caught };
        """,
        port,
        proxy.url(port),
        mail_chain.root_pem,
        token,
    )
    assert out["accepted"] == ["bob@example.test"]
    assert out["caught"][0][0] == "SmtpEnvelopeError" and "notify" in out["caught"][0][1]
    assert out["caught"][1:] == [True]  # onclose(true)
    # Postfix's success report to alice, with the envelope id the page gave.
    report = Target("postfix", 0, 0, postfix.mailbox).wait_for_text(
        "alice", f"Original-Envelope-Id: page {token}"
    )
    assert b"Action: delivered" in report
