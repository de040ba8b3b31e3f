"""The three browser engines the page is tested in, each as Debian ships it, on a closed network:

- **chromium**: Debian's ``chromium`` through pytest-pyodide's Selenium runner (``conftest.py``);
- **firefox**: Debian's ``firefox-esr`` over WebDriver BiDi, driven by ``puppeteer-core``
  (``tests/bidi/bridge.mjs``, pinned by its ``package-lock.json``) that this module talks to over
  stdin/stdout, one JSON line each way (no geckodriver: Firefox speaks BiDi itself);
- **webkit**: WebKitGTK's ``MiniBrowser --automation`` through Debian's ``WebKitWebDriver``
  (Selenium's ``webdriver.WebKitGTK``), in an Xvfb display of its own.

Each driver here has the few members of Selenium's WebDriver that the tests use
(``execute_async_script``, ``execute_script``, ``get``, ``find_element(By.ID, ...)``, ...), so
``conftest.Page`` and the demo test run the same test bodies in every engine.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .servers import CHROME_FLAGS, INSECURE_HOST, this_machine

ENGINES = ("chromium", "firefox", "webkit")

FIREFOX = "/usr/bin/firefox-esr"
MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
BIDI = Path(__file__).resolve().parent / "bidi"

# Every engine gets a closed network: all but loopback (and the test's own host names) goes to a
# proxy at 127.0.0.1:9, where nothing listens, so a page that reached for a CDN would fail.
DEAD_PROXY = "127.0.0.1:9"


def missing(engine: str) -> str | None:
    """Why ``engine`` cannot run here, or None."""
    needs = {
        "chromium": ["/usr/bin/chromium", "/usr/bin/chromedriver"],
        "firefox": [FIREFOX, str(BIDI / "node_modules" / "puppeteer-core"), shutil.which("node") or "node"],
        "webkit": [MINIBROWSER, WEBKIT_DRIVER, shutil.which("Xvfb") or "Xvfb"],
    }[engine]
    absent = [path for path in needs if not Path(path).exists()]
    return f"not installed: {', '.join(absent)} (./build.sh test installs it)" if absent else None


def insecure_host(engine: str) -> str:
    """A name for this machine that is not localhost, so a page served from it is not a secure
    context. Chromium and Firefox map INSECURE_HOST to 127.0.0.1 themselves; WebKitGTK cannot,
    so it uses the machine's own host name (which resolves to a loopback address too)."""
    return this_machine()[0] if engine == "webkit" else INSECURE_HOST


class BrowserError(AssertionError):
    """A script failed in the page, or the browser did."""


# -- Firefox over WebDriver BiDi ---------------------------------------------------------------------


class _Element:
    """What the demo test does with an element: Selenium's ``clear``, ``send_keys``, ``click``, ``text``."""

    def __init__(self, driver: Firefox, element_id: str) -> None:
        self.driver, self.selector = driver, f"#{element_id}"

    def clear(self) -> None:
        self.driver.execute_script("document.querySelector(arguments[0]).value = '';", self.selector)

    def _property(self, name: str) -> Any:
        script = f"return document.querySelector(arguments[0]).{name};"
        return self.driver.execute_script(script, self.selector)

    def send_keys(self, text: str) -> None:
        if self._property("type") == "file":
            self.driver.call("upload", selector=self.selector, paths=[text])
        else:
            # Selenium's Keys.ENTER is a new line, as puppeteer types it
            self.driver.call("type", selector=self.selector, text=text.replace("\ue007", "\n"))

    def click(self) -> None:
        self.driver.call("click", selector=self.selector)

    @property
    def text(self) -> str:
        return str(self._property("innerText"))


class Firefox:
    """Debian's firefox-esr through tests/bidi/bridge.mjs (puppeteer-core, WebDriver BiDi)."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="pysmtp-firefox-")
        self._lock = threading.Lock()
        self._ids = 0
        self.log_path = Path(self.profile) / "bridge.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in quit()
        self._process = subprocess.Popen(
            ["node", str(BIDI / "bridge.mjs")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=BIDI,
            env={**os.environ, "TMPDIR": self.profile},
        )  # fmt: skip
        no_proxy = f"localhost, 127.0.0.1, {INSECURE_HOST}"
        prefs = {
            "network.proxy.type": 1,
            "network.proxy.http": DEAD_PROXY.split(":")[0],
            "network.proxy.http_port": int(DEAD_PROXY.split(":")[1]),
            "network.proxy.share_proxy_settings": True,
            "network.proxy.no_proxies_on": no_proxy,
            "network.proxy.allow_hijacking_localhost": False,
            # INSECURE_HOST resolves to loopback, as Chromium's --host-resolver-rules does.
            "network.dns.localDomains": INSECURE_HOST,
            "network.dns.disablePrefetch": True,
            "app.update.enabled": False,
        }
        launched = self.call("launch", executablePath=FIREFOX, prefs=prefs)
        self.capabilities = {"browserName": "firefox", "browserVersion": launched["version"].split("/")[-1]}

    def call(self, op: str, **fields: Any) -> Any:
        with self._lock:
            assert self._process.stdin is not None and self._process.stdout is not None
            self._ids += 1
            self._process.stdin.write(json.dumps({"id": self._ids, "op": op, **fields}).encode() + b"\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise BrowserError(f"the Firefox bridge exited ({op}): {tail}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"Firefox, {op}: {answer['error']}")
        return answer["value"]

    # Selenium's WebDriver, as far as the tests use it
    def get(self, url: str) -> None:
        self.call("get", url=url)

    def execute_async_script(self, script: str, *args: Any) -> Any:
        return self.call("asyncScript", script=script, args=list(args))

    def execute_script(self, script: str, *args: Any) -> Any:
        return self.call("script", script=script, args=list(args))

    def set_script_timeout(self, seconds: float) -> None:
        pass  # the bridge waits up to 420 s for any call (its protocolTimeout), as WebKit does

    def set_window_size(self, width: int, height: int) -> None:
        self.call("setViewport", width=width, height=height)

    def find_element(self, by: str, value: str) -> _Element:
        assert by == "id", by
        return _Element(self, value)

    def save_screenshot(self, path: str) -> None:
        self.call("screenshot", path=path)

    def quit(self) -> None:
        if self._process.poll() is None:
            try:
                self.call("quit")
            finally:
                assert self._process.stdin is not None
                self._process.stdin.close()
                try:
                    self._process.wait(30)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# -- WebKitGTK through WebKitWebDriver -----------------------------------------------------------------

_xvfb: dict[str, Any] = {}


def _display() -> str:
    """An Xvfb display for MiniBrowser, one per test process (stopped at exit)."""
    if "display" not in _xvfb:
        read, write = os.pipe()
        process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1400x1600x24", "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise BrowserError("Xvfb did not start")
        _xvfb.update(display=f":{number}", process=process)
        atexit.register(lambda: (process.terminate(), process.wait()))
    return str(_xvfb["display"])


# Selenium waits for WebKitWebDriver's answer this long at most (a script may take 300 s): a
# MiniBrowser that died or hung fails the test instead of stalling the whole run.
WEBKIT_COMMAND_TIMEOUT = 420
# Now and then MiniBrowser exits as it starts and WebKitWebDriver waits for it forever: a new
# session gets this long (it takes about a second), then a new driver and browser are tried.
WEBKIT_START_TIMEOUT = 60
WEBKIT_START_TRIES = 3


def webkit() -> Any:
    """WebKitGTK's MiniBrowser under WebKitWebDriver, in an Xvfb display, behind the dead proxy."""
    from selenium import webdriver
    from selenium.webdriver.common.proxy import Proxy, ProxyType
    from selenium.webdriver.remote.client_config import ClientConfig
    from selenium.webdriver.remote.file_detector import UselessFileDetector
    from selenium.webdriver.remote.remote_connection import RemoteConnection
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.webkitgtk.service import Service

    class WebKitGTK(WebDriver):  # type: ignore[misc]
        """Selenium's webdriver.WebKitGTK, with a timeout on starting and on every command."""

        def __init__(self, options: Any, service: Service, log_path: Path) -> None:
            self.service = service
            self.log_path = log_path  # WebKitWebDriver's output, and MiniBrowser's with it
            service.start()
            config = ClientConfig(remote_server_addr=service.service_url, timeout=WEBKIT_START_TIMEOUT)
            try:
                super().__init__(command_executor=RemoteConnection(client_config=config), options=options)
            except Exception:
                service.stop()
                raise
            config.timeout = WEBKIT_COMMAND_TIMEOUT  # read at each request
            self.file_detector = UselessFileDetector()  # the driver is local: paths are sent as they are

        def quit(self) -> None:
            try:
                super().quit()
            finally:
                self.service.stop()
                self.log_path.unlink(missing_ok=True)

    options = webdriver.WebKitGTKOptions()
    options.binary_location = MINIBROWSER
    options.add_argument("--automation")
    options.proxy = Proxy(
        {"proxyType": ProxyType.MANUAL, "httpProxy": DEAD_PROXY, "sslProxy": DEAD_PROXY,
         "noProxy": ["localhost", "127.0.0.1", insecure_host("webkit")]}
    )  # fmt: skip
    for attempt in range(1, WEBKIT_START_TRIES + 1):
        fd, log = tempfile.mkstemp(prefix="pysmtp-webkit-", suffix=".log")
        os.close(fd)
        env = {**os.environ, "DISPLAY": _display()}
        try:
            return WebKitGTK(options, Service(WEBKIT_DRIVER, env=env, log_output=log), Path(log))
        except Exception as error:  # WebDriverException, or urllib3 timing out
            Path(log).unlink(missing_ok=True)
            if attempt == WEBKIT_START_TRIES:
                raise BrowserError(f"WebKit did not start in {WEBKIT_START_TRIES} tries: {error}") from error
    raise AssertionError("unreachable")


@contextmanager
def driver(engine: str, profile: Path | None = None) -> Iterator[Any]:
    """A new browser of ``engine``. The suite's Chromium comes from pytest-pyodide; this one (a
    fresh profile in ``profile``) is for the tests that need a browser of their own."""
    made = chromium(profile) if engine == "chromium" else Firefox() if engine == "firefox" else webkit()
    try:
        made.set_script_timeout(300)
        yield made
    finally:
        made.quit()


def chromium(profile: Path | None) -> Any:
    """Debian's Chromium through its chromedriver, with the suite's flags and a new profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = profile or Path(tempfile.mkdtemp(prefix="pysmtp-chromium-"))
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def version(browser: Any) -> str:
    return str(browser.capabilities.get("browserVersion", "?"))


def descendants(root: int, skip: Collection[int] = ()) -> list[int]:
    """The processes under ``root`` (its children, theirs, ...) from /proc, leaving out those of
    ``skip`` and the processes under them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a process that just ended
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in skip:
                found.append(pid)
                todo.append(pid)
    return found


# A page's own processes, by their command lines: Chromium's renderers, Firefox's content
# processes for web pages, WebKitGTK's web process.
_PAGE_PROCESSES = (b"--type=renderer", b"-isForBrowser", b"WebKitWebProcess")


def crash_pages(driver: Any) -> list[int]:
    """Kill the processes that run the pages of ``driver``'s browser, as a crash of the page
    would (the browser and its driver stay); returns the pids killed."""
    service = getattr(driver, "service", None)
    root = service.process.pid if service is not None else driver._process.pid
    killed = []
    for pid in descendants(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if any(mark in command for mark in _PAGE_PROCESSES):
                os.kill(pid, 9)
                killed.append(pid)
        except (OSError, ProcessLookupError):
            pass  # ended meanwhile
    return killed
