"""TLS in the browser: OpenSSL (TLS 1.2/1.3, compiled to WebAssembly; the default) and node-forge
(TLS 1.0/1.1, for legacy servers, only when the page chooses it), each against the servers it can
reach, through the proxy to aiosmtpd. "Default options" means no ``tlsEngine``: OpenSSL alone,
which never falls back to node-forge by itself (a refusal of TLS 1.2/1.3 can be forged by anyone
on the path: tested below). What was negotiated is read from the transcript ("* connected with
TLS 1.3, ... (openssl)" for implicit TLS, "* TLS 1.2, ..." after STARTTLS), which the socket
fills in from the engine."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from .browsers import insecure_host
from .certs import Certificate, Chain, make_chain, self_signed
from .conftest import Page
from .mta import Postfix, skip_unless_installed, strip_trace
from .servers import (
    Conn,
    PysmtpProxy,
    Recorder,
    ScriptedServer,
    SmtpServer,
    client_hello_version,
    legacy_tls_context,
    modern_tls_context,
    tls12_context,
    weak_key_context,
)
from .test_interop import Target, crlf, message

USER, PASSWORD = "alice", "s3cret-pass"
KINDS = ["rsa", "ec", "ec384"]  # RSA-2048, ECDSA P-256, ECDSA P-384 (SHA-384): root, intermediate, leaf


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Chain]:
    directory = tmp_path_factory.mktemp("chains")
    return {kind: make_chain(directory, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def leaves(chains: dict[str, Chain]) -> dict[str, Certificate]:
    return {kind: chain.issue() for kind, chain in chains.items()}


def client_lines(rec: dict[str, Any]) -> list[str]:
    return [line for line in rec["log"] if line.startswith("C: ")]


def negotiated(rec: dict[str, Any]) -> str:
    """The transcript's line that says which TLS was negotiated."""
    lines = [line for line in rec["log"] if line.startswith("*: ") and " TLS 1." in f" {line[3:]}"]
    assert lines, rec["log"]
    return lines[-1]


def server_kwargs(mode: str, context: ssl.SSLContext) -> dict[str, Any]:
    return {"implicit_tls": context} if mode == "implicit" else {"starttls": context}


def only(version: ssl.TLSVersion, cert: Certificate) -> ssl.SSLContext:
    context = modern_tls_context(cert)
    context.minimum_version = context.maximum_version = version
    return context


def session(
    page: Page,
    proxy: PysmtpProxy,
    server: SmtpServer | ScriptedServer,
    mode: str,
    host: str = "localhost",
    **options: Any,
) -> dict[str, Any]:
    return page.session(
        host=host,
        port=server.port,
        options={"proxy": proxy.url(server.port), "useSecureTransport": mode == "implicit", **options},
    )


def assert_delivered(rec: dict[str, Any], recorder: Recorder) -> None:
    assert rec["errors"] == [] and rec["done"] == [True] and rec["closed"] is False, rec["errors"]
    assert recorder.messages and recorder.messages[0].tls is True


# -- default options: OpenSSL, TLS 1.2 and 1.3 -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("kind", KINDS)
def test_default_options_reach_a_server_with_pythons_default_tls(
    page: Page,
    proxy: PysmtpProxy,
    chains: dict[str, Chain],
    leaves: dict[str, Certificate],
    kind: str,
    mode: str,
) -> None:
    # Python's default server TLS (1.2 and 1.3), a chain root -> intermediate -> leaf: TLS 1.3
    # by OpenSSL on the first connection, the chain built to the pinned root.
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, modern_tls_context(leaves[kind]))) as server:
        rec = session(page, proxy, server, mode, ca=chains[kind].root_pem)
    assert_delivered(rec, recorder)
    assert "TLS 1.3" in negotiated(rec) and "(openssl)" in negotiated(rec), negotiated(rec)
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"])  # no retry


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_default_options_reach_a_server_that_speaks_one_version_only(
    page: Page,
    proxy: PysmtpProxy,
    chains: dict[str, Chain],
    leaves: dict[str, Certificate],
    mode: str,
    version: str,
) -> None:
    # TLS 1.2 only: Exchange 2016/2019 on Windows Server 2016/2019, OpenSSL 1.0.2 hosts, appliances.
    tls_version = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, only(tls_version, leaves["ec"]))) as server:
        rec = session(page, proxy, server, mode, ca=chains["ec"].root_pem)
    assert_delivered(rec, recorder)
    assert f"TLS {version}," in negotiated(rec) and "(openssl)" in negotiated(rec), negotiated(rec)
    if version == "1.2":
        assert "ECDHE" in negotiated(rec), negotiated(rec)  # forward secrecy
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"])


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_chain_made_by_trustme_as_it_makes_them(page: Page, proxy: PysmtpProxy, mode: str) -> None:
    # trustme's defaults: ECDSA P-256, an intermediate, extendedKeyUsage marked critical.
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert("localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, context)) as server:
        rec = session(page, proxy, server, mode, ca=root.cert_pem.bytes().decode())
    assert_delivered(rec, recorder)
    assert "TLS 1.3" in negotiated(rec), negotiated(rec)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_server_named_by_ip_address(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], host: str
) -> None:
    # The certificate must hold the address as an IP subjectAltName (no SNI is sent for it). The
    # proxy's token decides where the TCP connection goes; the client verifies the name it was given.
    recorder = Recorder()
    with SmtpServer(recorder, starttls=modern_tls_context(leaves["rsa"])) as server:
        rec = session(page, proxy, server, "starttls", host=host, ca=chains["rsa"].root_pem)
    assert_delivered(rec, recorder)
    assert "TLS 1.3" in negotiated(rec)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_sni_names_the_host_and_never_an_address(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], host: str
) -> None:
    seen: list[str | None] = []
    context = modern_tls_context(leaves["rsa"])
    context.sni_callback = lambda _sslobj, name, _context: seen.append(name)  # type: ignore[assignment,misc]
    with SmtpServer(implicit_tls=context) as server:
        rec = session(page, proxy, server, "implicit", host=host, ca=chains["rsa"].root_pem)
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert seen[-1] == ("localhost" if host == "localhost" else None)  # RFC 6066 3: no IP literal


def test_an_ip_address_not_in_the_certificate_is_refused(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    with SmtpServer(implicit_tls=modern_tls_context(leaves["rsa"])) as server:
        rec = session(page, proxy, server, "implicit", host="127.0.0.2", ca=chains["rsa"].root_pem)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "IP address mismatch" in error["message"], error
    assert "127.0.0.2" in error["message"] and "127.0.0.1" in error["message"], error  # what it is for
    assert client_lines(rec) == [] and server.recorder.messages == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_pinned_self_signed_leaf_that_is_not_a_ca(
    page: Page, proxy: PysmtpProxy, tmp_path: Path, mode: str
) -> None:
    leaf = self_signed(tmp_path, kind="ec", ca=False)
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, modern_tls_context(leaf))) as server:
        rec = session(page, proxy, server, mode, ca=leaf.cert_pem)
    assert_delivered(rec, recorder)


def test_an_intermediate_may_be_pinned(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # The server sends leaf + intermediate; pinning the intermediate alone is enough.
    intermediate = (
        leaves["ec"].cert_path.read_text().split("-----END CERTIFICATE-----")[1]
        + "-----END CERTIFICATE-----\n"
    )
    recorder = Recorder()
    with SmtpServer(recorder, implicit_tls=modern_tls_context(leaves["ec"])) as server:
        rec = session(page, proxy, server, "implicit", ca=intermediate.strip())
    assert_delivered(rec, recorder)


@pytest.fixture
def beside_a_pinned_server(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> Callable[[str], tuple[Any, Recorder]]:
    """A function running a JS body in the page while an implicit-TLS server (Python's default
    TLS, the RSA chain's leaf) listens: ``args[0]`` its port, ``args[1]`` the proxy's URL for
    it, ``args[2]`` the root to pin. It returns what the body returned and what the server got."""

    def run(body: str) -> tuple[Any, Recorder]:
        recorder = Recorder()
        with SmtpServer(recorder, implicit_tls=modern_tls_context(leaves["rsa"])) as server:
            out = page.run(body, server.port, proxy.url(server.port), chains["rsa"].root_pem)
        return out, recorder

    return run


def test_a_pinned_cas_openssl_context_is_shared_then_freed_after_its_last_connection(
    beside_a_pinned_server: Callable[[str], tuple[Any, Recorder]],
) -> None:
    # Two clients pinning the same `ca` at once share one SSL_CTX; when both have closed, it is
    # freed (pt_ctx_free), and the next connection makes a new one.
    out, recorder = beside_a_pinned_server(
        """
        const engine = PySmtp.Socket.engines.openssl;
        const count = () => engine.pinnedContexts(PySmtp.Socket.defaults.openssl);
        const options = { proxy: args[1], useSecureTransport: true, ca: args[2] };
        const spec = { port: args[0], options };
        const seen = [];
        let running = true;
        const sample = async () => {
          while (running) {
            seen.push(await count());
            await new Promise((r) => setTimeout(r, 5));
          }
        };
        const sampling = sample();
        const recs = await Promise.all([window.session(spec), window.session(spec)]);
        running = false;
        await sampling;
        const after = await count();
        const again = await window.session(spec);
        return { recs: [...recs, again], most: Math.max(...seen), after, last: await count() };
        """,
    )
    for rec in out["recs"]:
        assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert len(recorder.messages) == 3
    assert out["most"] == 1 and out["after"] == 0 and out["last"] == 0, out


def test_an_openssl_that_trapped_is_never_called_again(
    beside_a_pinned_server: Callable[[str], tuple[Any, Recorder]],
) -> None:
    # A trap (a WebAssembly.RuntimeError) can stop OpenSSL half-way through updating its memory:
    # the connection it happened on ends with a TLSError that says so, nothing calls into that
    # module again, and the next connection gets a new one. (The trap is the test's: the page's
    # module made to throw one in its handshake, then given its handshake back.)
    out, recorder = beside_a_pinned_server(
        """
        const first = await PySmtp.Socket.defaults.openssl();
        const handshake = first._pt_handshake;
        const calls = [];
        for (const name of ["_pt_free", "_pt_ctx_free", "_pt_new", "_pt_feed"]) {
          const call = first[name];
          first[name] = (...a) => { calls.push(name); return call.apply(first, a); };
        }
        let trapAt = null;
        first._pt_handshake = () => {
          trapAt ??= calls.length;
          throw new WebAssembly.RuntimeError("out of bounds memory access (the test's trap)");
        };
        const options = { proxy: args[1], useSecureTransport: true, ca: args[2] };
        const spec = { port: args[0], options };
        const trapped = await window.session(spec);
        first._pt_handshake = handshake;  // a working handshake again, in a module not to be used
        const again = await window.session(spec);
        const now = await PySmtp.Socket.defaults.openssl();
        return { trapped, again, callsAfterTrap: calls.slice(trapAt ?? calls.length),
                 fresh: now !== first, firstTrapped: first.pysmtpTrapped === true };
        """,
    )
    trapped, again = out["trapped"], out["again"]
    assert [e["name"] for e in trapped["errors"]] == ["SmtpTlsError"] and trapped["closed"] is True, trapped
    message = trapped["errors"][0]["message"]
    assert "OpenSSL trapped" in message and "the test's trap" in message, message
    assert again["errors"] == [] and again["done"] == [True], again["errors"]
    assert out["fresh"] and out["firstTrapped"] and out["callsAfterTrap"] == [], out
    assert len(recorder.messages) == 1


# -- legacy servers: node-forge, only when the page chooses it ---------------------------------------------

FORGE_HINT = 'choose tlsEngine: "forge"'


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_tls_1_1_only_server_is_refused_by_default_and_reached_with_forge(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], mode: str
) -> None:
    # By default: one connection, OpenSSL's ClientHello refused for its version, and an error that
    # names the option that reaches such a server. Never a second connection with node-forge.
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, legacy_tls_context(leaves["rsa"]))) as server:
        before = recorder.connections_total
        refused = session(page, proxy, server, mode, ca=chains["rsa"].root_pem)
        # (aiosmtpd counts an implicit-TLS connection once its handshake is done: never, here;
        # the forged-alert test below counts TCP connections for both modes.)
        assert recorder.connections_total - before == (1 if mode == "starttls" else 0)
        reached = session(page, proxy, server, mode, ca=chains["rsa"].root_pem, tlsEngine="forge")
    (error,) = refused["errors"]
    assert error["name"] == "SmtpTlsError" and error["stage"] == "tls", error
    assert "refused TLS 1.2 and 1.3" in error["message"] and FORGE_HINT in error["message"], error
    assert client_lines(refused) == ([] if mode == "implicit" else ["C: EHLO localhost", "C: STARTTLS"])
    # With the explicit choice: TLS 1.1 by node-forge, the RSA chain verified to the pinned root.
    assert_delivered(reached, recorder)
    assert "TLS 1.1" in negotiated(reached) and "(forge)" in negotiated(reached), negotiated(reached)
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS", "STARTTLS"])


# The 7 plaintext bytes a man in the middle sends in answer to the first ClientHello: a TLS 1.2
# record holding a fatal protocol_version alert. Nothing authenticates them.
FORGED_PROTOCOL_VERSION = bytes.fromhex("15030300020246")


def forging_mitm(context: ssl.SSLContext, mode: str) -> Any:
    """A server that speaks TLS 1.0/1.1 with RSA key exchange (and does not enforce
    TLS_FALLBACK_SCSV: its newest version is 1.1), behind a man in the middle who answers any
    ClientHello offering TLS 1.2 or newer with the forged alert and hangs up. Any other
    ClientHello goes through to the server."""

    def script(conn: Conn) -> None:
        if mode == "starttls":
            conn.send(b"220 mx.example.com ESMTP\r\n")
            conn.line()
            conn.send(b"250-mx.example.com\r\n250 STARTTLS\r\n")
            conn.line()
            conn.send(b"220 2.0.0 go ahead\r\n")
        version = client_hello_version(conn.sock)
        if version is None:
            return
        conn.server.commands.append(f"ClientHello {version:#06x}")
        if version >= 0x0303:
            conn.send(FORGED_PROTOCOL_VERSION)
            return
        conn.start_tls(context)
        if mode == "implicit":
            conn.send(b"220 mx.example.com ESMTP\r\n")
        conn.serve_smtp()

    return script


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_forged_protocol_version_alert_never_downgrades_the_default(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], mode: str
) -> None:
    with ScriptedServer(forging_mitm(legacy_tls_context(leaves["rsa"]), mode)) as server:
        rec = session(page, proxy, server, mode, ca=chains["rsa"].root_pem)
        (error,) = rec["errors"]
        assert error["name"] == "SmtpTlsError" and "server alert: protocol_version" in error["message"], error
        assert FORGE_HINT in error["message"] and "forge that refusal" in error["message"], error
        assert rec["closed"] is True and rec["idles"] == 0
        # One connection, one ClientHello (TLS 1.2/1.3): no second try at TLS 1.1.
        assert server.connections == 1 and server.commands == ["ClientHello 0x0303"], server.commands
        assert server.tls_at is None and server.messages == []
        if mode == "starttls":
            assert server.plaintext == b"EHLO localhost\r\nSTARTTLS\r\n"
        # The explicit choice reaches the legacy server behind it (its ClientHello says TLS 1.1).
        forge = session(page, proxy, server, mode, ca=chains["rsa"].root_pem, tlsEngine="forge")
        assert forge["errors"] == [] and forge["done"] == [True], forge["errors"]
        assert "TLS 1.1" in negotiated(forge) and "(forge)" in negotiated(forge)
        assert server.commands[1] == "ClientHello 0x0302" and len(server.messages) == 1


@pytest.mark.parametrize("server_tls", ["modern", "legacy"])
def test_auth_after_starttls(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], server_tls: str
) -> None:
    recorder = Recorder(users={USER: PASSWORD})
    context = (modern_tls_context if server_tls == "modern" else legacy_tls_context)(leaves["rsa"])
    engine = {"tlsEngine": "forge"} if server_tls == "legacy" else {}
    with SmtpServer(recorder, starttls=context, auth_require_tls=True) as server:
        rec = session(
            page, proxy, server, "starttls",
            ca=chains["rsa"].root_pem, auth={"user": USER, "pass": PASSWORD}, **engine,
        )  # fmt: skip
    assert_delivered(rec, recorder)
    assert recorder.commands == ["STARTTLS", "AUTH PLAIN"] and recorder.messages[0].login == USER
    assert PASSWORD not in "\n".join(rec["log"])


def test_forge_alone_refuses_a_modern_server_and_says_what_to_choose(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    with SmtpServer(implicit_tls=modern_tls_context(leaves["rsa"])) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem, tlsEngine="forge")
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "TLS 1.2 or newer" in error["message"], error
    assert '"openssl"' in error["message"] and client_lines(rec) == []


# -- refusals, for every engine -------------------------------------------------------------------------


def engine_server(engine: str, cert: Certificate) -> ssl.SSLContext:
    """The server each engine can speak to (auto: the modern one, so that it never falls back)."""
    return legacy_tls_context(cert) if engine == "forge" else modern_tls_context(cert)


ENGINES = ["openssl", "forge", "auto"]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("engine", ENGINES)
def test_pinning_mismatch_is_refused_and_never_retried(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], tmp_path: Path, engine: str, mode: str
) -> None:
    impostor = make_chain(tmp_path, "rsa").issue()  # valid for localhost, but from another CA
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, **server_kwargs(mode, engine_server(engine, impostor))) as server:
        rec = session(
            page, proxy, server, mode,
            ca=chains["rsa"].root_pem, tlsEngine=engine, auth={"user": USER, "pass": PASSWORD},
        )  # fmt: skip
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not trusted" in error["message"], error
    if engine != "forge":
        assert "unable to get local issuer certificate" in error["message"], error  # OpenSSL's words
    assert rec["closed"] is True and rec["idles"] == 0
    assert client_lines(rec) == ([] if mode == "implicit" else ["C: EHLO localhost", "C: STARTTLS"])
    # One STARTTLS: a certificate failure is never a reason to try another engine.
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"]) and recorder.messages == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wrong_host_name_is_refused(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], engine: str
) -> None:
    other = chains["rsa"].issue("mail.example.net")  # from the pinned CA, but for another name
    recorder = Recorder()
    with SmtpServer(recorder, starttls=engine_server(engine, other)) as server:
        rec = session(page, proxy, server, "starttls", ca=chains["rsa"].root_pem, tlsEngine=engine)
    (error,) = rec["errors"]
    message = error["message"]
    assert error["name"] == "SmtpTlsError" and "localhost" in message, error
    if engine == "forge":
        assert "is for mail.example.net" in message and "not localhost" in message, message
    else:
        assert "not valid for localhost (OpenSSL: hostname mismatch)" in message, message
        assert "DNS:mail.example.net" in message, message
    assert recorder.commands == ["STARTTLS"] and recorder.messages == []


@pytest.mark.parametrize("engine", ENGINES)
def test_an_expired_certificate_is_refused(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], engine: str
) -> None:
    expired = chains["rsa"].issue(expired=True)
    with SmtpServer(implicit_tls=engine_server(engine, expired)) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem, tlsEngine=engine)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not valid now" in error["message"], error
    if engine != "forge":
        assert "certificate has expired" in error["message"], error
    assert client_lines(rec) == [] and server.recorder.messages == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_certificate_for_tls_clients_only_is_refused(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], engine: str
) -> None:
    # From the pinned CA, for localhost, in its dates, but its extended key usage is clientAuth
    # alone: not a server's certificate. OpenSSL refuses it ("unsuitable certificate purpose");
    # node-forge does not check this by itself: our check of its chain does.
    client_only = chains["rsa"].issue(label=f"client-only-{engine}", usages=("clientAuth",))
    recorder = Recorder(users={USER: PASSWORD})
    with SmtpServer(recorder, starttls=engine_server(engine, client_only)) as server:
        rec = session(
            page, proxy, server, "starttls",
            ca=chains["rsa"].root_pem, tlsEngine=engine, auth={"user": USER, "pass": PASSWORD},
        )  # fmt: skip
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "is not for a TLS server" in error["message"], error
    assert "unsuitable certificate purpose" in error["message"], error
    if engine == "forge":
        assert "clientAuth, without serverAuth" in error["message"], error
    assert client_lines(rec) == ["C: EHLO localhost", "C: STARTTLS"]
    assert recorder.commands == ["STARTTLS"] and recorder.messages == []


@pytest.mark.parametrize(
    "ciphers",
    ["AES128-GCM-SHA256:AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384"],
    ids=["rsa-key-exchange", "cbc"],
)
def test_a_tls_1_2_server_without_forward_secret_aead_suites_is_refused(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate], ciphers: str
) -> None:
    # The TLS 1.2 offer is a browser's: ECDHE or DHE, with AES-GCM or ChaCha20-Poly1305. A server
    # that offers only RSA key exchange (no forward secrecy), or only CBC, finds no suite in common.
    recorder = Recorder()
    with SmtpServer(recorder, implicit_tls=tls12_context(leaves["rsa"], ciphers)) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "server alert: handshake_failure" in error["message"], error
    assert "ECDHE or DHE key exchange and AEAD ciphers only" in error["message"], error
    assert "RSA key exchange or CBC ciphers is refused" in error["message"], error
    assert client_lines(rec) == [] and recorder.messages == []


@pytest.mark.parametrize("engine", ["openssl", "auto"])
def test_a_key_under_security_level_2_is_refused(
    page: Page, proxy: PysmtpProxy, tmp_path: Path, engine: str
) -> None:
    # RSA-1024 throughout (root, intermediate, leaf): OpenSSL's level 1 would take it, level 2 not.
    weak = make_chain(tmp_path, "rsa1024")
    recorder = Recorder()
    with SmtpServer(recorder, implicit_tls=weak_key_context(weak.issue())) as server:
        rec = session(page, proxy, server, "implicit", ca=weak.root_pem, tlsEngine=engine)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "key too weak" in error["message"], error
    assert client_lines(rec) == [] and recorder.messages == []


def test_a_host_name_with_a_nul_never_reaches_openssl(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # As a C string, "localhost\0.evil.example" is "localhost": the certificate for localhost
    # would pass. The name is refused when the client is made; no TLS session is verified.
    recorder = Recorder()
    with SmtpServer(recorder, implicit_tls=modern_tls_context(leaves["rsa"])) as server:
        before = recorder.connections_total
        host = "localhost\0.evil.example"
        rec = session(page, proxy, server, "implicit", host=host, ca=chains["rsa"].root_pem)
        assert recorder.connections_total == before  # not even a connection
    assert rec["thrown"] is not None, rec  # at construction
    assert rec["thrown"]["name"] == "SmtpUsageError" and "host" in rec["thrown"]["message"], rec["thrown"]
    assert rec["log"] == [] and recorder.messages == []
    # The socket itself refuses such a name (host or servername), a last line before OpenSSL.
    thrown = page.run(
        """
        const [port, proxy] = args;
        const out = [];
        const cases = [["localhost\\0.evil.example", {}], ["localhost", { servername: "a\\nb" }]];
        for (const [host, options] of cases) {
          try {
            PySmtpSocket.open(host, port, { proxy, useSecureTransport: true, ...options });
            out.push(null);
          } catch (e) {
            out.push([e.name, e.message]);
          }
        }
        return out;
        """,
        server.port,
        proxy.url(server.port),
    )
    assert [t[0] for t in thrown] == ["TypeError", "TypeError"], thrown
    assert "contains a control character (U+0000)" in thrown[0][1] and "servername" in thrown[1][1], thrown


def test_the_openssl_engine_refuses_a_name_with_a_nul_itself(page: Page, chains: dict[str, Chain]) -> None:
    # Behind the socket's check: the engine's own, before the name becomes a C string.
    out = page.run(
        """
        const engine = PySmtpSocket.engines.openssl;
        const error = (name, message) => Object.assign(new Error(message), { name });
        const ctx = { hostPort: "x:1", servername: "localhost\\0.evil.example", ca: [args[0]], rootsUrl: null,
                      openssl: PySmtpSocket.defaults.openssl, error };
        const prepared = await engine.prepare(ctx);
        const written = [];
        return await new Promise((resolve) => {
          engine.connect(prepared, ctx, {
            write: (u8) => written.push(u8.length), data: () => {}, closed: () => {},
            secure: () => resolve({ secure: true }),
            fail: (e) => resolve({ name: e.name, message: e.message, written: written.length }),
          });
        });
        """,
        chains["rsa"].root_pem,
    )
    assert out["name"] == "TLSError" and "U+0000" in out["message"] and out["written"] == 0, out


# The page's OpenSSL module, every call it gets on an SSL* that pt_new did not return or pt_free
# freed recorded in `dead` (in WebAssembly such a call does not fault: it reads and writes the
# module's first bytes, OpenSSL's static data).
CHECKED_OPENSSL = """
const raw = await PySmtpSocket.defaults.openssl();
const live = new Set();
const dead = [];
const takesSsl = new Set(["_pt_free", "_pt_feed", "_pt_pending", "_pt_take", "_pt_handshake", "_pt_read",
                          "_pt_write", "_pt_shutdown", "_pt_version", "_pt_cipher", "_pt_verify_result",
                          "_pt_peer_names"]);
const checked = new Proxy(raw, {
  get(target, key) {
    const value = target[key];
    if (typeof key !== "string" || !key.startsWith("_pt_")) return value;
    return (...a) => {
      if (takesSsl.has(key) && !live.has(a[0])) dead.push(`${key}(${a[0]})`);
      const r = value.apply(target, a);
      if (key === "_pt_new" && r) live.add(r);
      if (key === "_pt_free") live.delete(a[0]);
      return r;
    };
  },
});
"""


def test_a_session_ended_by_its_own_write_calls_openssl_no_more(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # TLS 1.3: the client's Finished is written (io.write) by the call that completes the
    # handshake. An io.write that ends the session (close(): the SSL freed) ends that call too:
    # no pt_version(0), pt_cipher(0), no io.secure.
    with SmtpServer(implicit_tls=modern_tls_context(leaves["ec"])) as server:
        out = page.run(
            CHECKED_OPENSSL
            + """
            const engine = PySmtpSocket.engines.openssl;
            const error = (name, message) => Object.assign(new Error(message), { name });
            const conn = { hostPort: "localhost:" + args[0], servername: "localhost", ca: [args[2]],
                           rootsUrl: null, openssl: checked, error };
            const prepared = await engine.prepare(conn);
            const ws = new WebSocket(args[1], ["binary"]);
            ws.binaryType = "arraybuffer";
            await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
            const events = [];
            let session = null;
            return await new Promise((resolve) => {
              const done = () => {
                ws.close();
                setTimeout(() => resolve({ events, dead, live: live.size }), 100);
              };
              const timer = setTimeout(done, 10000);
              session = engine.connect(prepared, conn, {
                write: (u8) => {
                  events.push("write");
                  ws.send(u8);
                  if (events.length === 2) {  // the ClientHello, then the Finished
                    session.close();
                    clearTimeout(timer);
                    done();
                  }
                },
                data: () => events.push("data"),
                secure: () => events.push("secure"),
                fail: (e) => events.push("fail: " + e.message),
                closed: () => events.push("closed"),
              });
              ws.onmessage = (event) => session.receive(new Uint8Array(event.data));
            });
            """,
            server.port,
            proxy.url(server.port),
            chains["ec"].root_pem,
        )
    assert out == {"events": ["write", "write"], "dead": [], "live": 0}, out


def test_a_root_store_serves_only_the_openssl_module_that_made_it(
    page: Page, chains: dict[str, Chain]
) -> None:
    # Its SSL_CTX* is an address in that module's memory: a second module (options.openssl)
    # with the same rootsUrl makes its own.
    out = page.run(
        """
        const engine = PySmtpSocket.engines.openssl;
        const first = await PySmtpSocket.defaults.openssl();
        const locateFile = (file) => new URL("openssl/" + file, location.href).href;
        const second = await PySmtpOpenSSL({ locateFile });
        const made = new Set();
        const used = [];
        const checked = new Proxy(second, {
          get(target, key) {
            const value = target[key];
            if (key === "_pt_ctx_new") {
              return (...a) => { const r = value.apply(target, a); made.add(r); return r; };
            }
            if (key === "_pt_new") {
              return (...a) => { used.push(made.has(a[0])); return value.apply(target, a); };
            }
            return value;
          },
        });
        const rootsUrl = URL.createObjectURL(new Blob([args[0]], { type: "text/plain" }));
        const error = (name, message) => Object.assign(new Error(message), { name });
        const conn = (openssl) => ({ hostPort: "x:1", servername: "localhost", ca: null, rootsUrl, openssl,
                                     error });
        await engine.prepare(conn(first));  // the root store, in the page's module
        const ctx = conn(checked);
        const prepared = await engine.prepare(ctx);
        const events = [];
        const session = engine.connect(prepared, ctx, {
          write: () => events.push("write"), data: () => {}, secure: () => {}, closed: () => {},
          fail: (e) => events.push("fail: " + e.message),
        });
        session.close();
        await new Promise((resolve) => setTimeout(resolve, 10));
        return { used, made: made.size, events };
        """,
        chains["rsa"].root_pem,
    )
    assert out == {"used": [True], "made": 1, "events": ["write"]}, out


def test_a_plaintext_port_is_named_as_such(page: Page, proxy: PysmtpProxy) -> None:
    with SmtpServer() as server:  # plaintext SMTP: the greeting, where a ServerHello was expected
        rec = session(page, proxy, server, "implicit")
    (error,) = rec["errors"]
    assert "did not answer in TLS" in error["message"] and "220" in error["message"], error


# -- without `ca`: a root store, with the host name checked -------------------------------------------


@pytest.fixture
def test_root_store(page: Page, chains: dict[str, Chain]) -> Iterator[None]:
    """The page's root store (dist/roots.pem) replaced by our test roots, for one test."""
    page.run(
        """
        window.savedRootsUrl = PySmtpSocket.defaults.rootsUrl;
        PySmtpSocket.defaults.rootsUrl = URL.createObjectURL(new Blob([args[0]], { type: "text/plain" }));
        """,
        chains["rsa"].root_pem,
    )
    try:
        yield
    finally:
        page.run("PySmtpSocket.defaults.rootsUrl = window.savedRootsUrl;")


@pytest.mark.parametrize("engine", ["openssl", "forge"])
def test_without_ca_the_root_store_is_used_with_the_host_name_checked(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate],
    test_root_store: None, engine: str,
) -> None:  # fmt: skip
    with SmtpServer(implicit_tls=engine_server(engine, leaves["rsa"])) as server:
        good = session(page, proxy, server, "implicit", tlsEngine=engine)
    assert good["errors"] == [] and good["done"] == [True], good["errors"]
    other = chains["rsa"].issue("mail.example.net", label=f"store-{engine}")
    with SmtpServer(implicit_tls=engine_server(engine, other)) as server:
        bad = session(page, proxy, server, "implicit", tlsEngine=engine)
    (error,) = bad["errors"]
    assert error["name"] == "SmtpTlsError" and "localhost" in error["message"], error
    assert server.recorder.messages == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_the_bundled_root_store_refuses_an_unknown_ca(
    page: Page, proxy: PysmtpProxy, leaves: dict[str, Certificate], mode: str
) -> None:
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, modern_tls_context(leaves["ec"]))) as server:
        rec = session(page, proxy, server, mode)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "does not chain to any of the" in error["message"], error
    assert "roots.pem" in error["message"] and "unable to get local issuer certificate" in error["message"]
    assert client_lines(rec) == ([] if mode == "implicit" else ["C: EHLO localhost", "C: STARTTLS"])
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"]) and recorder.messages == []


# -- any origin: no WebCrypto needed ----------------------------------------------------------------------


def test_the_default_engine_works_on_a_page_that_is_not_a_secure_context(
    page: Page, proxy: PysmtpProxy, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # The same dist/, served from a host name that is not localhost over http://: no crypto.subtle.
    base = urlsplit(page.base_url)
    page.goto(f"http://{insecure_host(page.engine)}:{base.port}/minimal.html")
    try:
        context = page.run("return { secure: window.isSecureContext, subtle: !!(crypto && crypto.subtle) };")
        assert context == {"secure": False, "subtle": False}
        recorder = Recorder()
        with SmtpServer(recorder, starttls=modern_tls_context(leaves["ec384"])) as server:
            rec = session(page, proxy, server, "starttls", ca=chains["ec384"].root_pem)
    finally:
        page.goto(f"{page.base_url}/minimal.html")
    assert_delivered(rec, recorder)
    assert "TLS 1.3" in negotiated(rec) and "(openssl)" in negotiated(rec)


# -- a real Postfix (Debian's package, run by tests/mta/) --------------------------------------------


@pytest.fixture(scope="module")
def postfixes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Postfix, Chain]]]:
    """Two Postfixes with an ECDSA chain of their own: one as configured by default (TLS 1.2 and
    1.3), one capped at TLS 1.2 (as a server on OpenSSL 1.0.2 or Exchange 2016 would be)."""
    skip_unless_installed(Postfix)
    capped = {"smtpd_tls_protocols": "<=TLSv1.2", "smtpd_tls_mandatory_protocols": "<=TLSv1.2"}
    chain = make_chain(tmp_path_factory.mktemp("postfix-chain"), "ec")
    with (
        Postfix(chain.issue("localhost", label="postfix-13"), mailboxes=("bob",)) as modern,
        Postfix(chain.issue("localhost", label="postfix-12"), mailboxes=("bob",), main=capped) as tls12,
    ):
        yield {"1.3": (modern, chain), "1.2": (tls12, chain)}


@pytest.mark.parametrize("version", ["1.3", "1.2"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_real_postfix_with_default_options(
    page: Page, proxy: PysmtpProxy, postfixes: dict[str, tuple[Postfix, Chain]], mode: str, version: str
) -> None:
    # Postfix's own log says which TLS it negotiated; the page's transcript says the same.
    server, chain = postfixes[version]
    port = server.ports["smtps" if mode == "implicit" else "smtp"]
    token = uuid.uuid4().hex
    sessions = len(server.tls_sessions())
    rec = page.session(
        host="localhost",
        port=port,
        options={"proxy": proxy.url(port), "useSecureTransport": mode == "implicit", "ca": chain.root_pem},
        envelopes=[{"from": "alice@example.test", "to": "bob@example.test"}],
        body=message(token).decode(),
    )
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    ((protocol, cipher),) = server.tls_sessions()[sessions:]
    assert protocol == f"TLSv{version}", server.log_text()[-2000:]
    assert f"TLS {version}," in negotiated(rec) and "(openssl)" in negotiated(rec), negotiated(rec)
    if version == "1.3":
        assert f"TLS 1.3, {cipher} (openssl)" in negotiated(rec)  # the same suite, as both name it
    stored = Target("postfix", 0, 0, server.mailbox).wait_for("bob", token)
    assert crlf(strip_trace(stored)) == message(token)
