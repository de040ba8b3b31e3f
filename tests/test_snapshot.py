"""The optional memory snapshot (`./build.sh snapshot`), end to end: made from a copy of dist/
by web/make_snapshot.py, a page boots from it with pysmtp_wasm already imported (the wheel is
never fetched) and sends a message through websockify to aiosmtpd."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from pysmtp_wasm.pytest_plugin import SmtpProxy
from pysmtp_wasm.testing import DistServer, SmtpServer

from .servers import CHROME_FLAGS

ROOT = Path(__file__).resolve().parent.parent

SESSION = """
const [port, proxy, done] = arguments;
window.smtp.then((api) => {
  const client = new api.SmtpClient("localhost", port, { proxy });
  const seen = [];
  client.onidle = () => seen.length ? client.quit()
    : client.useEnvelope({ from: "snap@example.com", to: "rcpt@example.com" });
  client.onready = () => { client.send("Subject: from a snapshot\\r\\n\\r\\nhi\\r\\n"); client.end(); };
  client.ondone = (ok) => seen.push(ok);
  client.onerror = (e) => seen.push(e.name + ": " + e.message);
  client.onclose = (isError) => done({
    seen, isError,
    resources: performance.getEntriesByType("resource")
      .map((e) => [e.name.split("/").pop(), e.responseStatus]),
  });
  client.connect();
}, (error) => done({ error: String(error) }));
"""


@pytest.fixture
def snapshot_dist(tmp_path: Path) -> Iterator[str]:
    """A copy of dist/ with a snapshot made for it, served over HTTP; yields its URL."""
    dist = tmp_path / "dist"
    shutil.copytree(ROOT / "dist", dist, ignore=shutil.ignore_patterns("pysmtp-snapshot.bin"))
    made = subprocess.run(
        [sys.executable, str(ROOT / "web" / "make_snapshot.py"), "--dist", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    with DistServer(dist) as server:  # what the pysmtp_dist fixture serves, for this copy
        yield server.url.rstrip("/")


def test_a_page_boots_from_the_snapshot_and_sends(
    snapshot_dist: str, smtp_server: SmtpServer, smtp_proxy: SmtpProxy, tmp_path: Path
) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.set_script_timeout(120)
        driver.get(f"{snapshot_dist}/minimal.html")
        result: dict[str, Any] = driver.execute_async_script(SESSION, smtp_server.port, smtp_proxy.url)
    finally:
        driver.quit()
    assert "error" not in result, result
    assert result["seen"] == [True] and result["isError"] is False
    assert smtp_server.messages[0].mail_from == "snap@example.com"
    resources = dict(result["resources"])
    assert resources.get("pysmtp-snapshot.bin") == 200  # booted from it ...
    assert not any(name.endswith(".whl") for name in resources)  # ... with our package in it
