"""TLS in the browser: OpenSSL (TLS 1.2/1.3, compiled to WebAssembly; the default) and node-forge
(TLS 1.0/1.1, for legacy servers), each against the servers it can reach, through websockify to
aiosmtpd. "Default options" means no ``tlsEngine``: OpenSSL first, node-forge on a new connection
only when the server refuses the protocol version. What was negotiated is read from the
transcript ("* connected with TLS 1.3, ... (openssl)" for implicit TLS, "* TLS 1.2, ..." after
STARTTLS), which the socket fills in from the engine."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from .browsers import insecure_host
from .conftest import Page
from .mta import Postfix, skip_unless_installed, strip_trace
from .servers import (
    Certificate,
    Chain,
    Recorder,
    SmtpServer,
    Websockify,
    legacy_tls_context,
    make_chain,
    make_self_signed_leaf,
    modern_tls_context,
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
    """The transcript's line that says which TLS was negotiated (the last one: after a retry)."""
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
    page: Page, proxy: Websockify, server: SmtpServer, mode: str, host: str = "localhost", **options: Any
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
    proxy: Websockify,
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
    proxy: Websockify,
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
def test_a_chain_made_by_trustme_as_it_makes_them(page: Page, proxy: Websockify, mode: str) -> None:
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate], host: str
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate], host: str
) -> None:
    seen: list[str | None] = []
    context = modern_tls_context(leaves["rsa"])
    context.sni_callback = lambda _sslobj, name, _context: seen.append(name)  # type: ignore[assignment,misc]
    with SmtpServer(implicit_tls=context) as server:
        rec = session(page, proxy, server, "implicit", host=host, ca=chains["rsa"].root_pem)
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert seen[-1] == ("localhost" if host == "localhost" else None)  # RFC 6066 3: no IP literal


def test_an_ip_address_not_in_the_certificate_is_refused(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    with SmtpServer(implicit_tls=modern_tls_context(leaves["rsa"])) as server:
        rec = session(page, proxy, server, "implicit", host="127.0.0.2", ca=chains["rsa"].root_pem)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "IP address mismatch" in error["message"], error
    assert "127.0.0.2" in error["message"] and "127.0.0.1" in error["message"], error  # what it is for
    assert client_lines(rec) == [] and server.recorder.messages == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_pinned_self_signed_leaf_that_is_not_a_ca(
    page: Page, proxy: Websockify, tmp_path: Path, mode: str
) -> None:
    leaf = make_self_signed_leaf(tmp_path)
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, modern_tls_context(leaf))) as server:
        rec = session(page, proxy, server, mode, ca=leaf.cert_pem)
    assert_delivered(rec, recorder)


def test_an_intermediate_may_be_pinned(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
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


# -- legacy servers: node-forge, through the version-only retry ---------------------------------------------


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_default_options_reach_a_tls_1_1_only_server(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate], mode: str
) -> None:
    # TLS 1.1 only: OpenSSL's try is refused for its version; node-forge on a new connection (for
    # STARTTLS: greeting, EHLO and STARTTLS replayed) verifies the RSA chain to the pinned root.
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, legacy_tls_context(leaves["rsa"]))) as server:
        rec = session(page, proxy, server, mode, ca=chains["rsa"].root_pem)
    assert_delivered(rec, recorder)
    assert "TLS 1.1" in negotiated(rec) and "(forge)" in negotiated(rec), negotiated(rec)
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS", "STARTTLS"])
    # The SMTP session above saw one connection: one EHLO before STARTTLS, one after.
    assert (
        client_lines(rec)[:3] == ["C: EHLO localhost", "C: STARTTLS", "C: EHLO localhost"]
        or mode == "implicit"
    )


@pytest.mark.parametrize("server_tls", ["modern", "legacy"])
def test_auth_after_starttls(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate], server_tls: str
) -> None:
    recorder = Recorder(users={USER: PASSWORD})
    context = (modern_tls_context if server_tls == "modern" else legacy_tls_context)(leaves["rsa"])
    with SmtpServer(recorder, starttls=context, auth_require_tls=True) as server:
        rec = session(
            page, proxy, server, "starttls", ca=chains["rsa"].root_pem, auth={"user": USER, "pass": PASSWORD}
        )
    assert_delivered(rec, recorder)
    assert recorder.commands[-1] == "AUTH PLAIN" and recorder.messages[0].login == USER
    assert recorder.commands.count("STARTTLS") == (1 if server_tls == "modern" else 2)
    assert PASSWORD not in "\n".join(rec["log"])


def test_forge_alone_refuses_a_modern_server_and_says_what_to_choose(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], tmp_path: Path, engine: str, mode: str
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], engine: str
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], engine: str
) -> None:
    expired = chains["rsa"].issue(expired=True)
    with SmtpServer(implicit_tls=engine_server(engine, expired)) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem, tlsEngine=engine)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not valid now" in error["message"], error
    if engine != "forge":
        assert "certificate has expired" in error["message"], error
    assert client_lines(rec) == [] and server.recorder.messages == []


def test_a_plaintext_port_is_named_as_such(page: Page, proxy: Websockify) -> None:
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate],
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
    page: Page, proxy: Websockify, leaves: dict[str, Certificate], mode: str
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
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
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


# -- a real Postfix (Debian's package, run by tests/mta.py) --------------------------------------------


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
    page: Page, proxy: Websockify, postfixes: dict[str, tuple[Postfix, Chain]], mode: str, version: str
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
