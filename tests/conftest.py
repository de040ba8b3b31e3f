"""Shared fixtures. The browser ones run in three engines (tests/browsers.py): Debian's Chromium
through pytest-pyodide (``--runtime chrome --dist-dir dist``, set by ``./build.sh test``),
firefox-esr over WebDriver BiDi and WebKitGTK. A page is loaded from ``dist/`` (served by
pytest-pyodide's own web server) and talks through the real proxy (``pysmtp-wasm-proxy``; one
test per engine through websockify) to real aiosmtpd servers.

The server, proxy and certificate fixtures are the package's own pytest plugin
(``pysmtp_wasm/pytest_plugin.py``: ``smtp_server``, ``smtp_proxy``, ``smtp_certs``,
``pysmtp_dist``), the same that users get with ``pysmtp-wasm[testing]``; the older names below
(``proxy``, ``ca``, ``server_tls``) are built on the same pieces."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from _pytest.runner import runtestprotocol

from pysmtp_wasm.testing import Certs

from . import browsers
from .certs import Certificate, Chain, make_chain, self_signed
from .mta import Dovecot, Exim, OpenSmtpd, Postfix, skip_unless_installed
from .servers import CHROME_FLAGS, INSECURE_HOST, PysmtpProxy, Websockify, skip_missing, this_machine

# Installed, the wheel's pytest11 entry point loads the plugin; here it is the source tree's.
# pytester runs it in other projects (tests/test_plugin.py).
pytest_plugins = ("pysmtp_wasm.pytest_plugin", "pytester")

DIST = Path(__file__).resolve().parent.parent / "dist"

# pytest-pyodide starts Chrome through Selenium: use Debian's chromedriver (never let Selenium
# download one), and Chromium flags for a closed network. The host resolver rule makes every
# name but localhost unresolvable, so a page that reached for a CDN would fail its tests.
os.environ.setdefault("SE_CHROMEDRIVER", "/usr/bin/chromedriver")
try:
    from pytest_pyodide import get_global_config
    from pytest_pyodide.fixture import selenium_common
except ImportError:  # pragma: no cover - pytest-pyodide is in tests/requirements.txt
    selenium_common = None
else:
    get_global_config().set_flags("chrome", CHROME_FLAGS)


# The page-side harness: one SMTP session, recorded. Tests call it with page.session({...}).
HARNESS = r"""
window.lines = function* (count) {
  // Deterministic 76-column text (CRLF included); every third line starts with a dot.
  for (let i = 0; i < count; i++) {
    const head = (i % 3 === 0 ? "." : "") + "line " + i + " ";
    yield head + "x".repeat(74 - head.length) + "\r\n";
  }
};
window.session = async (spec, rec = {}) => {
  const api = await window.smtp;
  return await new Promise((resolve) => {
    Object.assign(rec, { idles: 0, ready: [], done: [], results: [], errors: [], closed: null, log: [], drains: 0,
                         sent: 0, thrown: null, order: [] });
    let client;
    try {
      const options = { ...(spec.options || {}) };
      if (spec.proxyFor) options.proxy = (host, port) => spec.proxyFor.replace("{port}", String(port));
      client = new api.SmtpClient(spec.host || "localhost", spec.port, options);
    } catch (e) {
      rec.thrown = { name: e.name, message: e.message };
      resolve(rec);
      return;
    }
    const queue = [...(spec.envelopes || [{ from: "sender@example.com", to: "rcpt@example.com" }])];
    let wake = null;
    const next = () => (queue.length ? client.useEnvelope(queue.shift()) : client.quit());
    const stream = async () => {
      const enc = new TextEncoder();
      const chunkSize = spec.chunkSize || 65536;
      let pending = [];
      let size = 0;
      const flush = async () => {
        const chunk = new Uint8Array(size);
        let at = 0;
        for (const part of pending) { chunk.set(part, at); at += part.length; }
        pending = []; size = 0;
        rec.sent += chunk.length;
        if (!client.send(chunk) && spec.honourDrain !== false) await new Promise((r) => (wake = r));
        if (spec.pauseMs) await new Promise((r) => setTimeout(r, spec.pauseMs));
      };
      const source = spec.lines ? window.lines(spec.lines) : [spec.body ?? "Subject: hi\r\n\r\nhello\r\n"];
      for (const text of source) {
        const bytes = enc.encode(text);
        pending.push(bytes); size += bytes.length;
        if (size >= chunkSize) await flush();
        if (rec.closed !== null) return;
      }
      if (size) await flush();
      if (rec.closed === null) client.end();
    };
    client.onidle = () => { rec.idles++; next(); };
    client.onready = (failed) => { rec.ready.push(Array.from(failed)); stream(); };
    client.ondone = (ok, results) => { rec.order.push("done:" + ok); rec.done.push(ok); rec.results.push(Array.from(results, (r) => ({ ...r }))); };
    client.onerror = (e) => {
      rec.order.push("error:" + e.name);
      rec.errors.push({ isError: e instanceof Error, name: e.name, message: e.message, code: e.code ?? null,
                        enhanced: e.enhanced ?? null, stage: e.stage ?? null, fatal: e.fatal,
                        proxyReason: e.proxyReason ?? null,
                        // fields docs/api.md and the .d.ts promise (null when absent, never undefined)
                        undefinedFields: ["code", "enhanced", "stage", "fatal"].filter((f) => e[f] === undefined) });
    };
    client.ondrain = () => { rec.drains++; if (wake) { const w = wake; wake = null; w(); } };
    client.onlog = (d, t) => rec.log.push(d + ": " + t);
    client.onclose = (isError) => {
      rec.order.push("close:" + isError); rec.closed = isError;
      rec.lastResults = Array.from(client.lastResults, (r) => ({ ...r }));  // kept after the close
      if (wake) wake(); resolve(rec);
    };
    client.connect();
  });
};
"""


class Page:
    """A browser tab on dist/minimal.html with PySmtp loaded, in ``engine`` (tests/browsers.py).

    ``opener`` makes the browser (a context manager giving its driver and the base URL), so that
    a browser that died in a test can be replaced by a new one (``reopen``) for the next."""

    def __init__(
        self, opener: Callable[[], AbstractContextManager[tuple[Any, str]]], engine: str = "chromium",
        start: str = "minimal.html",
    ) -> None:  # fmt: skip
        self.engine = engine
        self.first_page = start  # minimal.html, or minimal.html?worker in worker mode
        self.mode = "worker" if start.endswith("?worker") else "page"
        self._opener = opener
        self._browser = ExitStack()
        self.dead = False  # set when a test found the browser gone; the next test gets a new one
        self.driver, self.base_url = self._browser.enter_context(opener())
        self.home()

    def alive(self) -> bool:
        """Whether the browser still answers a script (a crashed one raises, at once)."""
        try:
            return bool(self.driver.execute_script("return 1;") == 1)
        except Exception:  # noqa: BLE001 - whatever the driver raises, the browser is gone
            return False

    def reopen(self) -> None:
        """A new browser in place of one that died, on this tab's first page."""
        self.close()
        self.driver, self.base_url = self._browser.enter_context(self._opener())
        self.dead = False
        self.home()

    def close(self) -> None:
        try:
            self._browser.close()
        except Exception:  # noqa: BLE001 - quitting a dead browser may fail; it is gone either way
            pass

    def driver_log(self) -> str:
        """The end of the driver's log (WebKitWebDriver's and MiniBrowser's output, the Firefox
        bridge's), or "" when the engine keeps none."""
        path = getattr(self.driver, "log_path", None)
        try:
            return Path(path).read_text(errors="replace")[-3000:] if path else ""
        except OSError:
            return ""

    def run(self, body: str, *args: Any) -> Any:
        """Run an async JS function body (``args`` as ``args[0]``...) and return its JSON result."""
        script = (
            "const done = arguments[arguments.length - 1];"
            "const args = Array.from(arguments).slice(0, -1);"
            f"(async () => {{ {body} }})().then("
            "  (value) => done({ ok: true, value: value === undefined ? null : value }),"
            "  (e) => done({ ok: false, error: String(e) + (e && e.stack ? '\\n' + e.stack : '') }));"
        )
        result = self.driver.execute_async_script(script, *args)
        if not result["ok"]:
            raise AssertionError("JavaScript failed: " + result["error"])
        return result["value"]

    def home(self) -> None:
        """Back to this tab's own page (after a test went elsewhere)."""
        self.goto(f"{self.base_url}/{self.first_page}")

    def goto(self, url: str) -> None:
        """Load another page (``minimal.html`` from another origin, say) with the harness."""
        self.driver.get(url)
        self.run("await window.smtp;")
        self.driver.execute_script(HARNESS)

    def session(self, **spec: Any) -> dict[str, Any]:
        """One SMTP session through the page's SmtpClient; returns what happened."""
        return self.run("return await window.session(args[0]);", json.loads(json.dumps(spec)))

    def start(self, **spec: Any) -> None:
        """Start a session in the background; ``progress()`` and ``finish()`` follow it."""
        self.run(
            "window.current = {}; window.currentDone = window.session(args[0], window.current);",
            json.loads(json.dumps(spec)),
        )

    def progress(self) -> dict[str, Any]:
        return self.run("return { sent: window.current.sent, closed: window.current.closed };")

    def finish(self) -> dict[str, Any]:
        return self.run("return await window.currentDone;")

    def stats(self) -> dict[str, int]:
        return self.run("const api = await window.smtp; return api.stats();")


# How a page runs the engine: "page" (Pyodide in the page's own thread, dist/minimal.html) or
# "worker" (PySmtp.load({worker: true}): Pyodide in a Worker, minimal.html?worker).
MODES = ("page", "worker")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``page`` gets its mode as a parameter (so that a page is made anew when
    the mode changes): its module's ``PAGE_MODE`` ("page" when it has none), or each mode for a
    test marked ``both_modes``."""
    if "page" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("both_modes"):
        modes: tuple[str, ...] = MODES
    else:
        modes = (getattr(metafunc.module, "PAGE_MODE", "page"),)
    metafunc.parametrize("page_mode", modes, scope="module")


@pytest.fixture(scope="module", params=browsers.ENGINES)
def page(
    request: pytest.FixtureRequest,
    page_mode: str,
    runtime: str,
    web_server_main: Any,
    playwright_browsers: Any,
) -> Iterator[Page]:
    """One browser of each engine per test module (and mode), Chromium first; every test using
    ``page`` runs in each (``-k firefox`` picks one, ``-k worker`` the worker-mode runs)."""
    if not (DIST / "pysmtp-wasm.js").exists():
        pytest.fail("dist/ is not built: run ./build.sh test (it builds before testing)")
    engine: str = request.param
    if reason := browsers.missing(engine):
        skip_missing(f"{engine}: {reason}")
    start = "minimal.html?worker" if page_mode == "worker" else "minimal.html"
    host, port, _ = web_server_main

    @contextmanager
    def opener() -> Iterator[tuple[Any, str]]:
        if engine == "chromium":
            with selenium_common(
                request, runtime, web_server_main, load_pyodide=False, browsers=playwright_browsers
            ) as sel:
                sel.driver.set_script_timeout(300)
                yield sel.driver, sel.base_url
            return
        with browsers.driver(engine) as driver:
            yield driver, f"http://{host}:{port}"

    tab = Page(opener, engine, start)
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture(autouse=True)
def _live_browser(request: pytest.FixtureRequest) -> None:
    """Before a test that uses ``page``: a new browser in place of one that died before it (see
    ``pytest_runtest_protocol``), and the tab kept where a crash report can find it."""
    if "page" not in request.fixturenames:
        return
    tab: Page = request.getfixturevalue("page")
    request.node.stash[_TAB] = tab
    if tab.dead:
        tab.reopen()


# -- a browser that dies in a test -------------------------------------------------------------------
#
# Now and then a browser dies under a test. In one CI run WebKitGTK's page died in the first test
# of a module ("Could not parse script result", then "session deleted because of page crash or
# hang": what killing its WebKitWebProcess gives), and every later test of the module failed on
# the dead session. So a browser found dead is replaced before the module's next test; and a test
# whose browser died (it failed with anything but a plain assertion, and then the browser did
# not answer ``return 1``) runs once more in a new browser; the run that counts is the second.
# Every such re-run is listed at the end of the run with the driver's log, so none goes unseen.
# A failed assertion, a script timeout or a browser that still answers is never run again.

_TAB = pytest.StashKey[Page]()
_DIED = pytest.StashKey[str]()
_RERUNS = pytest.StashKey[list[tuple[str, str, str, str]]]()
_LOG_SECTION = "died: the end of its driver's log"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    tab = item.stash.get(_TAB, None)
    if report.when != "call" or not report.failed or tab is None or call.excinfo is None:
        return
    if call.excinfo.type is AssertionError or "TimeoutException" in call.excinfo.typename:
        return  # the test's own verdict, or a script that did not finish: never run again
    if "timed out" in str(call.excinfo.value):
        return  # (how the Firefox bridge says a script did not finish: puppeteer's protocolTimeout)
    if not tab.alive():
        tab.dead = True
        item.stash[_DIED] = f"{call.excinfo.typename}: {str(call.excinfo.value).strip()[:300]}"
        report.sections.append((f"{tab.engine} {_LOG_SECTION}", tab.driver_log() or "(empty)"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if "page" not in getattr(item, "fixturenames", ()):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    died = item.stash.get(_DIED, None)
    if died is not None:
        first = next(r for r in reports if r.when == "call")
        log = "".join(text for name, text in first.sections if name.endswith(_LOG_SECTION))
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        again = next((r.outcome for r in reports if r.when == "call"), "failed in its setup")
        item.config.stash.setdefault(_RERUNS, []).append((item.nodeid, died, again, log))
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reruns = config.stash.get(_RERUNS, [])
    if reruns:
        # (tests/test_browser_crash.py kills its browser on purpose, to show that this works)
        deliberate = sum(nodeid.startswith("tests/test_browser_crash.py") for nodeid, *_ in reruns)
        terminalreporter.section(
            f"browsers that died in a test: {len(reruns)} test(s) run again, {deliberate} of them "
            "killed on purpose by tests/test_browser_crash.py"
        )
        for nodeid, died, again, log in reruns:
            terminalreporter.write_line(f"{nodeid}: {again} on the re-run\n  died: {died}")
            for line in log.strip().splitlines()[-20:]:
                terminalreporter.write_line(f"  | {line}")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, web_server_main: Any) -> Iterator[PysmtpProxy]:
    """The proxy of the browser tests: pysmtp-wasm-proxy, for pages from loopback origins (any
    port: the tests' own web servers) and from pytest-pyodide's web server under the two names
    the tests give it that are not loopback."""
    _, port, _ = web_server_main
    origins = ["loopback", *(f"http://{name}:{port}" for name in (INSECURE_HOST, this_machine()[0]))]
    with PysmtpProxy(tmp_path_factory.mktemp("proxy"), origins=origins) as running:
        yield running


@pytest.fixture(scope="module")
def websockify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Websockify]:
    """websockify 0.13 in token mode: the proxy the page was first written for, still supported."""
    with Websockify(tmp_path_factory.mktemp("websockify")) as running:
        yield running


@pytest.fixture(scope="session")
def rsa_cert(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed(tmp_path_factory.mktemp("certs"))


# -- certificates for CPython's ssl (trustme) ------------------------------------------------------


@pytest.fixture(scope="session")
def ca(smtp_certs: Certs) -> trustme.CA:
    """The plugin's test CA; its certificate, as PEM, is what the client pins with ``ca``."""
    return smtp_certs.ca


@pytest.fixture(scope="session")
def server_tls(smtp_certs: Certs) -> ssl.SSLContext:
    """Python's default server TLS with the plugin's certificate for localhost and 127.0.0.1."""
    return smtp_certs.server_context()


def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


# -- real mail servers (tests/mta/) ----------------------------------------------------------

# The users every real server knows; their mailboxes are read back by the tests.
MAIL_USERS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "carol": "carol-pass-3"}
# A mailbox with a non-ASCII name (RFC 6531), at the servers that offer SMTPUTF8.
UTF8_USER = "jörg"


@pytest.fixture(scope="session")
def mail_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """The private CA of the real servers' certificates; clients pin ``mail_chain.root_pem``."""
    return make_chain(tmp_path_factory.mktemp("mail-certs"), "rsa")


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """Dovecot: LMTP on ``dovecot.lmtp_port`` for MAIL_USERS (carol with a 1 KB quota), and SASL."""
    skip_unless_installed(Dovecot)
    with Dovecot(MAIL_USERS, quota={"carol": "1K"}) as server:
        yield server


@pytest.fixture(scope="session")
def postfix(mail_chain: Chain, dovecot: Dovecot) -> Iterator[Postfix]:
    """Postfix with a certificate from ``mail_chain`` for localhost and 127.0.0.1, AUTH through
    ``dovecot``, and a Maildir per MAIL_USERS user at example.test (tests/mta/)."""
    skip_unless_installed(Postfix)
    cert = mail_chain.issue("localhost", label="postfix")
    with Postfix(cert, dovecot=dovecot, mailboxes=(UTF8_USER,)) as server:
        yield server


@pytest.fixture(scope="session")
def exim(mail_chain: Chain) -> Iterator[Exim]:
    """Exim 4 with a certificate from ``mail_chain``, MAIL_USERS at example.test (tests/mta/)."""
    skip_unless_installed(Exim)
    with Exim(
        mail_chain.issue("localhost", label="exim"), {**MAIL_USERS, UTF8_USER: "jörg-pass-4"}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def opensmtpd(mail_chain: Chain) -> Iterator[OpenSmtpd]:
    """OpenSMTPD with a certificate from ``mail_chain``, MAIL_USERS at example.test (tests/mta/)."""
    skip_unless_installed(OpenSmtpd)
    with OpenSmtpd(mail_chain.issue("localhost", label="opensmtpd"), MAIL_USERS) as server:
        yield server
