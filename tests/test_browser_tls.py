"""TLS engines in the browser: subtls (TLS 1.3 over WebCrypto) and node-forge (TLS 1.0/1.1), each
against the servers it can reach, through websockify to aiosmtpd. "Default options" means no
``tlsEngine``: the page tries TLS 1.3 and falls back to node-forge on a new connection only when
the server refuses the protocol version."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Page
from .servers import (
    Certificate,
    Chain,
    Recorder,
    SmtpServer,
    Websockify,
    legacy_tls_context,
    make_chain,
    modern_tls_context,
)

USER, PASSWORD = "alice", "s3cret-pass"


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Chain]:
    directory = tmp_path_factory.mktemp("chains")
    return {kind: make_chain(directory, kind) for kind in ("rsa", "ec")}


@pytest.fixture(scope="module")
def leaves(chains: dict[str, Chain]) -> dict[str, Certificate]:
    return {kind: chain.issue() for kind, chain in chains.items()}


def client_lines(rec: dict[str, Any]) -> list[str]:
    return [line for line in rec["log"] if line.startswith("C: ")]


def server_kwargs(mode: str, context: ssl.SSLContext) -> dict[str, Any]:
    return {"implicit_tls": context} if mode == "implicit" else {"starttls": context}


def tls12_only_context(cert: Certificate) -> ssl.SSLContext:
    context = modern_tls_context(cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def session(page: Page, proxy: Websockify, server: SmtpServer, mode: str, **options: Any) -> dict[str, Any]:
    return page.session(
        host="localhost",
        port=server.port,
        options={"proxy": proxy.url(server.port), "useSecureTransport": mode == "implicit", **options},
    )


# -- default options reach modern and legacy servers ------------------------------------------------


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_default_options_reach_a_server_with_pythons_default_tls(
    page: Page,
    proxy: Websockify,
    chains: dict[str, Chain],
    leaves: dict[str, Certificate],
    kind: str,
    mode: str,
) -> None:
    # TLS 1.2/1.3, a chain root -> intermediate -> leaf, RSA or ECDSA P-256: node-forge can do
    # none of it, so this is TLS 1.3 by subtls, on the first connection.
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, modern_tls_context(leaves[kind]))) as server:
        rec = session(page, proxy, server, mode, ca=chains[kind].root_pem)
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert recorder.messages[0].tls is True
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"])  # no retry


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_default_options_reach_a_tls_1_1_only_server(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate], mode: str
) -> None:
    # TLS 1.1 only: the TLS 1.3 try gets a protocol_version alert; node-forge on a new connection
    # (for STARTTLS: greeting, EHLO and STARTTLS replayed) verifies the RSA chain to the pinned root.
    recorder = Recorder()
    with SmtpServer(recorder, **server_kwargs(mode, legacy_tls_context(leaves["rsa"]))) as server:
        rec = session(page, proxy, server, mode, ca=chains["rsa"].root_pem)
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert recorder.messages[0].tls is True
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
    assert rec["errors"] == [] and rec["done"] == [True], rec["errors"]
    assert recorder.commands[-1] == "AUTH PLAIN" and recorder.messages[0].login == USER
    assert recorder.commands.count("STARTTLS") == (1 if server_tls == "modern" else 2)
    assert PASSWORD not in "\n".join(rec["log"])


def test_a_tls_1_2_only_server_is_refused_clearly_by_default(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # subtls speaks only TLS 1.3 and node-forge only 1.0/1.1: the fallback (with TLS_FALLBACK_SCSV)
    # is refused as well, and the error says why.
    with SmtpServer(implicit_tls=tls12_only_context(leaves["rsa"])) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "TLS 1.2" in error["message"], error
    assert rec["closed"] is True and client_lines(rec) == [] and server.recorder.messages == []


# -- refusals, for every engine -------------------------------------------------------------------------


def engine_server(engine: str, cert: Certificate) -> ssl.SSLContext:
    """The server each engine can speak to (auto: the modern one, so that it never falls back)."""
    return legacy_tls_context(cert) if engine == "forge" else modern_tls_context(cert)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("engine", ["subtls", "forge", "auto"])
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
    assert rec["closed"] is True and rec["idles"] == 0
    assert client_lines(rec) == ([] if mode == "implicit" else ["C: EHLO localhost", "C: STARTTLS"])
    # One STARTTLS: a certificate failure is never a reason to try another engine.
    assert recorder.commands == ([] if mode == "implicit" else ["STARTTLS"]) and recorder.messages == []


@pytest.mark.parametrize("engine", ["subtls", "forge", "auto"])
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
        assert "is not valid for localhost" in message, message
    assert recorder.commands == ["STARTTLS"] and recorder.messages == []


@pytest.mark.parametrize("engine", ["subtls", "forge", "auto"])
def test_an_expired_certificate_is_refused(
    page: Page, proxy: Websockify, chains: dict[str, Chain], engine: str
) -> None:
    expired = chains["rsa"].issue(expired=True)
    with SmtpServer(implicit_tls=engine_server(engine, expired)) as server:
        rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem, tlsEngine=engine)
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "not valid now" in error["message"], error
    assert client_lines(rec) == [] and server.recorder.messages == []


# -- without `ca`: a root store, with the host name checked -------------------------------------------


@pytest.fixture
def test_root_store(page: Page, chains: dict[str, Chain]) -> Iterator[None]:
    """The page's root store (dist/roots.pem) replaced by our test root, for one test."""
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


@pytest.mark.parametrize("engine", ["subtls", "forge"])
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


def test_the_bundled_root_store_refuses_an_unknown_ca_with_subtls(
    page: Page, proxy: Websockify, leaves: dict[str, Certificate]
) -> None:
    with SmtpServer(implicit_tls=modern_tls_context(leaves["ec"])) as server:
        rec = session(page, proxy, server, "implicit")
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "does not chain to any of the" in error["message"], error
    assert "roots.pem" in error["message"] and client_lines(rec) == []


# -- WebCrypto ------------------------------------------------------------------------------------------


def test_without_webcrypto_the_error_says_a_secure_context_is_needed(
    page: Page, proxy: Websockify, chains: dict[str, Chain], leaves: dict[str, Certificate]
) -> None:
    # This page is on localhost (a secure context); hide crypto.subtle as an http:// page would.
    page.run(
        """
        window.savedSubtle = Object.getOwnPropertyDescriptor(Crypto.prototype, "subtle");
        Object.defineProperty(Crypto.prototype, "subtle", { get: () => undefined, configurable: true });
        """
    )
    try:
        with SmtpServer(implicit_tls=modern_tls_context(leaves["rsa"])) as server:
            rec = session(page, proxy, server, "implicit", ca=chains["rsa"].root_pem)
    finally:
        page.run('Object.defineProperty(Crypto.prototype, "subtle", window.savedSubtle);')
    (error,) = rec["errors"]
    assert error["name"] == "SmtpTlsError" and "secure context" in error["message"], error
    assert "https" in error["message"] and "forge" in error["message"]
    assert client_lines(rec) == [] and server.recorder.messages == []
