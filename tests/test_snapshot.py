"""The optional memory snapshot (`./build.sh snapshot`), end to end: made from a copy of dist/
by web/make_snapshot.py, a page boots from it with pysmtp_wasm already imported (the wheel is
never fetched) and sends a message through the proxy to aiosmtpd; in-page, and in worker mode
(the Worker boots from it)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import browsers
from .servers import PysmtpProxy, SmtpServer, skip_missing

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


class _Recording(http.server.SimpleHTTPRequestHandler):
    """Notes what was asked for (a Worker's requests are not in the page's resource timing)."""

    requested: list[tuple[str, int]] = []

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requested.append((self.path.split("?")[0].rsplit("/", 1)[-1], int(code)))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def snapshot_dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A copy of dist/ with a snapshot made for it, served over HTTP; yields its URL."""
    dist = tmp_path_factory.mktemp("snapshot") / "dist"
    shutil.copytree(ROOT / "dist", dist, ignore=shutil.ignore_patterns("pysmtp-snapshot.bin"))
    made = subprocess.run(
        [sys.executable, str(ROOT / "web" / "make_snapshot.py"), "--dist", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    handler = functools.partial(_Recording, directory=str(dist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


# The snapshot is made in Chromium (web/make_snapshot.py); Firefox boots from the same file.
WEBKIT_CANNOT = (
    "WebKit cannot boot from a snapshot made in Chromium (loadPyodide: 'call_indirect to a signature "
    "that does not match' in _init_pyodide_proxy); the loader fell back to the ordinary boot and sent"
)


@pytest.mark.parametrize("mode", ["in-page", "worker"])
@pytest.mark.parametrize("engine", browsers.ENGINES)
def test_a_page_boots_from_the_snapshot_and_sends(
    snapshot_dist: str, proxy: PysmtpProxy, tmp_path: Path, engine: str, mode: str
) -> None:
    if reason := browsers.missing(engine):
        skip_missing(f"{engine}: {reason}")
    _Recording.requested.clear()
    with browsers.driver(engine, tmp_path / "profile") as driver:
        driver.set_script_timeout(120)
        driver.get(f"{snapshot_dist}/minimal.html" + ("?worker" if mode == "worker" else ""))
        with SmtpServer() as server:
            result: dict[str, Any] = driver.execute_async_script(SESSION, server.port, proxy.url(server.port))
    assert "error" not in result, result
    assert result["seen"] == [True] and result["isError"] is False
    assert server.recorder.messages[0].mail_from == "snap@example.com"
    requested = dict(_Recording.requested)
    if engine == "webkit":
        # WebKit fetches the snapshot, fails to boot from it, and the loader falls back to the
        # ordinary boot, which fetches the wheel.
        # What WebKit can do is shown, and the test passes on it (WEBKIT_CANNOT says why no more).
        assert "pysmtp-snapshot.bin" in requested and any(name.endswith(".whl") for name in requested)
        return
    assert requested.get("pysmtp-snapshot.bin") == 200  # booted from it ...
    assert not any(name.endswith(".whl") for name in requested)  # ... with our package in it
    assert ("pysmtp-wasm-worker.js" in requested) == (mode == "worker")
    if mode == "in-page":  # the page's own view agrees
        assert dict(result["resources"]).get("pysmtp-snapshot.bin") == 200
