"""pytest fixtures for testing a page (or a program) that sends mail with pysmtp-wasm.

pytest loads this plugin by itself (the ``pytest11`` entry point) once pysmtp-wasm is installed;
the fixtures need the ``testing`` extra (the wheel from ``dist/`` installed with ``[testing]``),
and say so when it is missing. Everything listens on 127.0.0.1 and is stopped when its scope ends.

- ``smtp_server``: aiosmtpd on a free port, keeping what it receives: ``smtp_server.messages``
  (each a :class:`pysmtp_wasm.testing.Received`: ``mail_from``, ``rcpt_tos``, ``content``,
  ``message`` parsed as an ``EmailMessage``), ``smtp_server.port``.
- ``smtp_server_factory(**options)``: more servers, or other options: ``starttls=True``,
  ``implicit_tls=True`` (both with ``smtp_certs``), ``auth={"user": "password"}``,
  ``auth_require_tls``, ``lmtp=True``, ``reject={"addr@example.com"}`` (refused at RCPT),
  ``lmtp_fail`` (failed after DATA), ``size_limit`` (SIZE, in bytes), ``pipelining=True``,
  ``chunking=True`` (CHUNKING: the server reads BDAT; the client sends BDAT only where
  PIPELINING is offered too, so pass ``pipelining=True`` with it).
- ``smtp_proxy``: pysmtp-wasm's WebSocket-to-TCP proxy (``pysmtp-wasm-proxy``) reaching
  ``smtp_server`` and nothing else, for pages from loopback origins: ``smtp_proxy.url`` is the
  page's ``proxy`` (``ws://127.0.0.1:<port>/?token=<token>``), ``smtp_proxy.token`` the token;
  ``smtp_proxy.for_server(other)`` adds another server and returns its URL;
  ``smtp_proxy.sessions()`` its log's session lines. Stopped after the test, with every process
  it started. websockify instead: ``@pytest.mark.parametrize("smtp_proxy", ["websockify"],
  indirect=True)``.
- ``smtp_certs`` (session): a CA and a leaf for ``localhost``, ``127.0.0.1`` and ``::1``;
  ``smtp_certs.ca_pem`` is the client's ``ca``.
- ``pysmtp_dist`` (session): a static server for pysmtp-wasm's ``dist/`` folder,
  ``pysmtp_dist.url``; ``pysmtp_dist.add_page(name, html)`` serves a test's own page beside it.
  The folder is ``--pysmtp-dist DIR``, or the ini option ``pysmtp_dist``, or a ``dist/`` beside
  the installed package (a source checkout).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import Certs, DistServer, PysmtpProxy, SmtpServer, Websockify


def _testing() -> ModuleType:
    """pysmtp_wasm.testing, or a clear failure when the extra is not installed."""
    try:
        from pysmtp_wasm import testing
    except ImportError as error:
        missing = str(error)
    else:
        return testing
    pytest.fail(missing, pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pysmtp-wasm")
    group.addoption(
        "--pysmtp-dist",
        metavar="DIR",
        help="pysmtp-wasm's built dist/ folder, served by the pysmtp_dist fixture",
    )
    parser.addini("pysmtp_dist", "pysmtp-wasm's built dist/ folder (relative to the rootdir)", default="")


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a server certificate for localhost, 127.0.0.1 and ::1; pin ``.ca_pem``."""
    certs: Certs = _testing().Certs(tmp_path_factory.mktemp("pysmtp-certs"))
    return certs


SmtpServerFactory = Callable[..., "SmtpServer"]


@pytest.fixture
def smtp_server_factory(request: pytest.FixtureRequest) -> Iterator[SmtpServerFactory]:
    """Start SMTP (or LMTP) servers with options; all are stopped after the test."""
    testing = _testing()
    started: list[SmtpServer] = []

    def start(
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        auth: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        auth_require_tls: bool = False,
        lmtp: bool = False,
        reject: Iterable[str] = (),
        lmtp_fail: Iterable[str] = (),
        size_limit: int = 64 * 1024 * 1024,
        pipelining: bool = False,
        chunking: bool = False,
    ) -> SmtpServer:
        if starttls and implicit_tls:
            raise ValueError("starttls or implicit_tls: one server does not do both")
        if (starttls or implicit_tls) and tls_context is None:
            tls_context = request.getfixturevalue("smtp_certs").server_context()
        recorder = testing.Recorder(
            users=dict(auth or {}), tokens=dict(tokens or {}), reject=set(reject),
            lmtp_fail=set(lmtp_fail), pipelining=pipelining, chunking=chunking,
        )  # fmt: skip
        server: SmtpServer = testing.SmtpServer(
            recorder,
            starttls=tls_context if starttls else None,
            implicit_tls=tls_context if implicit_tls else None,
            lmtp=lmtp,
            auth_require_tls=auth_require_tls,
            data_size_limit=size_limit,
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: SmtpServerFactory) -> SmtpServer:
    """aiosmtpd on a free port of 127.0.0.1 (no TLS, no AUTH), keeping what it receives."""
    return smtp_server_factory()


# What ``smtp_proxy`` runs: ours unless a test asks for websockify (``indirect`` parametrization).
PROXY_KINDS = ("pysmtp-wasm-proxy", "websockify")


@dataclass
class SmtpProxy:
    """The proxy the ``smtp_proxy`` fixture started: ``kind`` is ``"pysmtp-wasm-proxy"`` (the
    default) or ``"websockify"``, ``proxy`` the running one."""

    proxy: PysmtpProxy | Websockify
    token: str  # the token of the fixture's server
    url: str  # the page's ``proxy`` for that server
    kind: str = PROXY_KINDS[0]

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def pid(self) -> int:
        return self.proxy.pid

    def for_server(self, server: Any, token: str | None = None) -> str:
        """Let the proxy reach ``server`` (``.hostname``, ``.port``) too; returns its URL."""
        url: str = self.proxy.add(server.port, server.hostname, token)
        return url

    def sessions(self) -> list[dict[str, Any]]:
        """pysmtp-wasm-proxy's log lines of the sessions so far (websockify has none)."""
        sessions: list[dict[str, Any]] = []
        if isinstance(self.proxy, _testing().PysmtpProxy):
            sessions = self.proxy.sessions()
        return sessions


@pytest.fixture
def smtp_proxy(
    request: pytest.FixtureRequest, smtp_server: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmtpProxy]:
    """pysmtp-wasm-proxy on 127.0.0.1 reaching ``smtp_server`` only, for pages from loopback
    origins; ``.url`` is the page's ``proxy``. ``indirect`` parametrization with
    ``"websockify"`` runs websockify (token mode) instead."""
    kind = getattr(request, "param", PROXY_KINDS[0])
    if kind not in PROXY_KINDS:
        raise ValueError(f"smtp_proxy: {kind!r} is not one of {', '.join(PROXY_KINDS)}")
    testing = _testing()
    proxy = (testing.PysmtpProxy if kind == PROXY_KINDS[0] else testing.Websockify)(
        tmp_path_factory.mktemp(kind)
    )
    with proxy:
        token = "smtp"
        yield SmtpProxy(proxy, token, proxy.add(smtp_server.port, smtp_server.hostname, token), kind)


def _dist_dir(config: pytest.Config) -> Path:
    option = config.getoption("--pysmtp-dist")
    if option:
        return Path(option).resolve()
    ini = str(config.getini("pysmtp_dist"))
    if ini:
        return (config.rootpath / ini).resolve()
    import pysmtp_wasm

    return Path(pysmtp_wasm.__file__).resolve().parent.parent / "dist"


@pytest.fixture(scope="session")
def pysmtp_dist(request: pytest.FixtureRequest) -> Iterator[DistServer]:
    """pysmtp-wasm's dist/ on http://127.0.0.1:<port>/ (``.url``); ``.add_page()`` adds pages."""
    testing = _testing()
    directory = _dist_dir(request.config)
    try:
        server: DistServer = testing.DistServer(directory)
    except FileNotFoundError as error:
        pytest.fail(
            f"pysmtp_dist: {error}. Build it (./build.sh in pysmtp-wasm) and give it with "
            "--pysmtp-dist DIR or the ini option pysmtp_dist.",
            pytrace=False,
        )
    with server:
        yield server
