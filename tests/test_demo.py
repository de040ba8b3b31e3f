"""The main job, end to end: `./build.sh serve` starts the demo stack (page, proxy, embedded
SMTP server); a browser (Chromium, Firefox and WebKit in turn) fills the compose page and sends;
the message is found intact in the embedded server's store; Ctrl-C stops everything.

``PYSMTP_SCREENSHOT=docs/demo.png ./build.sh test -k demo`` also saves the screenshot the README shows.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest

from . import browsers
from .servers import free_port, skip_missing, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SUBJECT = "Grüße aus Köln — ünïcödé ✓"


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        self.http, self.ws, self.smtp, self.smtps = (free_port() for _ in range(4))
        self.store = tmp_path / "store"
        self.log = (tmp_path / "serve.log").open("wb")
        self.process = subprocess.Popen(
            ["./build.sh", "serve", "--no-build", "--store", str(self.store),
             "--http-port", str(self.http), "--ws-port", str(self.ws),
             "--smtp-port", str(self.smtp), "--smtps-port", str(self.smtps)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.http, 60, self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}/"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=10) as response:
            body = response.read()
        return json.loads(body) if path.startswith("api/") and not path.endswith(".eml") else body

    def stop(self) -> int:
        """Ctrl-C, as a person would; then nothing of it may be left."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(30)
        self.log.close()
        return code

    def leftovers(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        # A test that failed left it running: Ctrl-C first, so that serve.py stops what it
        # started (the proxy runs in a session of its own, which a SIGKILL of this group
        # would leave behind); SIGKILL only if that does not end it.
        if running.process.poll() is None:
            os.killpg(running.process.pid, signal.SIGINT)
            try:
                running.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait()


@contextmanager
def browser(
    engine: str, request: pytest.FixtureRequest, runtime: str, web_server_main: Any, playwright_browsers: Any
) -> Iterator[Any]:
    """A new browser of ``engine``: Chromium through pytest-pyodide, the others tests/browsers.py's."""
    if engine != "chromium":
        with browsers.driver(engine) as driver:
            yield driver
        return
    from pytest_pyodide.fixture import selenium_common

    with selenium_common(
        request, runtime, web_server_main, load_pyodide=False, browsers=playwright_browsers
    ) as sel:
        yield sel.driver


@pytest.mark.parametrize("engine", browsers.ENGINES)
def test_the_demo_stack_sends_from_the_compose_page(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest, runtime: str, web_server_main: Any,
    playwright_browsers: Any, engine: str,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if reason := browsers.missing(engine):
        skip_missing(f"{engine}: {reason}")
    attachment = tmp_path / "report.bin"
    attachment.write_bytes(bytes(range(256)) * 1000 + "✓ tail".encode())
    config = stack.api("api/config")
    assert config["embedded"] is True and [t["security"] for t in config["targets"]] == ["starttls", "tls"]

    with browser(engine, request, runtime, web_server_main, playwright_browsers) as driver:
        driver.set_window_size(1400, 1500)
        driver.get(stack.url)
        wait_for_state(driver, "ready", 120)
        # The footer names the TLS the page uses; the Target select shows its longest name whole.
        footer = driver.execute_script("return document.querySelector('footer').textContent")
        assert "OpenSSL" in footer and "node-forge" not in footer, footer
        fits = driver.execute_script(TARGET_FITS)
        assert fits["room"] >= fits["text"], fits
        fill = {
            "from": "Zoë <zoe@example.com>",
            "to": "ana@example.com",
            "cc": "carol@example.com",
            "bcc": "hidden@example.com",
            "subject": SUBJECT,
            "text": "Héllo wörld\n.a line with a leading dot\n",
        }
        for field, value in fill.items():
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value.replace("\n", Keys.ENTER))  # WebKit types no "\n"
        driver.find_element(By.ID, "attachments").send_keys(str(attachment))
        driver.find_element(By.ID, "send").click()
        state = wait_for_state(driver, ("sent", "error"), 60)
        assert state == "sent", driver.find_element(By.ID, "status").text
        # One "time\ndirection\ntext" per line, as Chromium renders its text; WebKitWebDriver's
        # element text runs the flex items of a line together, so it is read from the DOM.
        transcript = driver.execute_script(TRANSCRIPT)
        time.sleep(2.5)  # the received-messages view refreshes every 2 s
        screenshot = tmp_path / "demo.png"
        driver.save_screenshot(str(screenshot))
        if (target := os.environ.get("PYSMTP_SCREENSHOT")) and engine == "chromium":
            shutil.copy(screenshot, ROOT / target)

    # The page fills in the demo login: AUTH follows STARTTLS, masked in the transcript.
    assert "\nC\nSTARTTLS" in transcript and "\nC\nAUTH PLAIN ****" in transcript
    assert re.search(r"\nTLS 1\.3, TLS_\w+ \(openssl\)\n", transcript), transcript  # the default engine
    assert base64.b64encode(b"\0demo\0demo").decode() not in transcript
    (meta,) = stack.api("api/messages")
    assert meta["tls"] is True and meta["login"] == "demo" and meta["mail_from"] == "zoe@example.com"
    assert sorted(meta["rcpt_tos"]) == ["ana@example.com", "carol@example.com", "hidden@example.com"]
    assert meta["headers"]["Subject"] == SUBJECT
    raw = stack.api(f"api/messages/{meta['id']}.eml")
    assert raw == (stack.store / f"{meta['id']}.eml").read_bytes()
    message = message_from_bytes(raw, policy=email_policy.default)
    assert message["Subject"] == SUBJECT and "Bcc" not in message and b"hidden@" not in raw
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == fill["text"]
    (part,) = list(message.iter_attachments())
    assert part.get_filename() == "report.bin" and part.get_content() == attachment.read_bytes()

    assert stack.stop() == 0
    assert not stack.leftovers()


TRANSCRIPT = """
return Array.from(document.querySelectorAll("#transcript .line"),
                  (line) => Array.from(line.children, (cell) => cell.textContent).join("\\n")).join("\\n");
"""


# The width the Target select gives its text, and the width of its longest option's text in the
# select's own font (a select does not wrap: what is wider is cut off).
TARGET_FITS = """
const select = document.getElementById("target");
const style = getComputedStyle(select);
const context = document.createElement("canvas").getContext("2d");
context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
const text = Math.max(...[...select.options].map((o) => context.measureText(o.text).width));
const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
return { text, room };
"""


def wait_for_state(driver: Any, states: str | tuple[str, ...], timeout: float) -> str:
    wanted = (states,) if isinstance(states, str) else states
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = driver.execute_script("return document.body.dataset.state")
        if state in wanted:
            return str(state)
        time.sleep(0.1)
    raise AssertionError(f"the page stayed in state {state!r}, not {wanted}")
