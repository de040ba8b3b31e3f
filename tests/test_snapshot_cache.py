"""The snapshot cache (issue 22; web/src/snapshot-cache.js), in each engine, one browser profile
kept across visits: the first visit boots as usual and, after its first onidle, a Worker makes a
memory snapshot and stores it in IndexedDB; the return visit boots from it
(``PySmtp.bootKind === "snapshot-cache"``), in-page and in worker mode, and sends (plain and
TLS) through the real proxy to aiosmtpd. A corrupted or truncated image, an image this engine
cannot restore, a new dist/ version, storage refused, ``snapshotCache: false`` and
``clearSnapshotCache()``: never worse than the ordinary boot. Two restores draw different random
numbers, MIME boundaries and Message-IDs. And the same under a strict Content-Security-Policy
sent with the page and with the Worker scripts.

The site: two copies of dist/ (``v1`` as built, ``v2`` with a different wheel, so a different
key) on one origin, each with ``cache.html`` (no inline script: the CSP forbids it); paths under
``/csp/`` are the same files sent with the policy."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pysmtp_wasm.testing import Certs

from . import browsers
from .servers import PysmtpProxy, SmtpServer

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>snapshot cache</title>
<script src="pysmtp-wasm.js"></script>
<script src="cache.js"></script>
"""

# ?worker, ?nocache (snapshotCache: false), ?refuse (IndexedDB refused, as a browser that refuses
# storage: the getter throws)
SCRIPT = """
const q = new URLSearchParams(location.search);
if (q.has("refuse")) {
  Object.defineProperty(globalThis, "indexedDB", {
    configurable: true,
    get() { throw new DOMException("storage refused", "SecurityError"); },
  });
}
window.smtp = PySmtp.load({ worker: q.has("worker"), snapshotCache: !q.has("nocache") });
window.smtp.catch(() => {});
"""

# One session with sendMail: [port, proxy, tls ca or null] -> what happened, and how Python booted.
SESSION = """
const [port, proxy, ca, done] = arguments;
window.smtp.then(async (api) => {
  const options = ca ? { proxy, ca, requireTLS: true } : { proxy };
  const client = new api.SmtpClient("localhost", port, options);
  const errors = [];
  client.onerror = (e) => errors.push(e.name + ": " + e.message);
  const mail = { from: "cache@example.com", to: "rcpt@example.com", subject: "after a restore",
                 text: "plain", html: "<p>html</p>" };
  let sent = null;
  try { sent = await client.sendMail(mail); } catch (e) { errors.push(String(e)); }
  client.quit();
  let draw = null;
  if (api.pyodide) draw = api.pyodide.runPython("str(__import__('random').getrandbits(64))");
  done({ bootKind: PySmtp.bootKind, apiBootKind: api.bootKind, job: !!PySmtp.snapshotCacheJob,
         accepted: sent && sent.accepted, errors, draw });
}, (error) => done({ error: String(error) }));
"""

# A first draw of random right after the boot, before anything else ran in Python (in-page).
DRAW = """
const done = arguments[arguments.length - 1];
window.smtp.then((api) => done({ bootKind: PySmtp.bootKind,
  draw: api.pyodide.runPython("str(__import__('random').getrandbits(64))"),
  hash: api.pyodide.runPython("str(hash('pysmtp'))") }), (e) => done({ error: String(e) }));
"""

JOB = """
const done = arguments[arguments.length - 1];
(PySmtp.snapshotCacheJob || Promise.resolve(null)).then(done, (e) => done({ error: String(e) }));
"""

# The stored images: [key, bytes, has a digest, the sizes of its parts add up]
ENTRIES = """
const done = arguments[arguments.length - 1];
const open = indexedDB.open("pysmtp-wasm-snapshot-cache", 1);
open.onupgradeneeded = () => open.result.createObjectStore("images");
open.onerror = () => done({ error: String(open.error) });
open.onsuccess = () => {
  const db = open.result;
  const out = [];
  const sizes = {};
  const cursor = db.transaction("images").objectStore("images").openCursor();
  cursor.onsuccess = () => {
    const c = cursor.result;
    if (!c) {
      db.close();
      done(out.map(([key, bytes, digest]) => [key, bytes, digest, sizes[key] === bytes]));
      return;
    }
    // (a part is an ArrayBuffer, or the whole image as one Blob)
    if (Array.isArray(c.key)) sizes[c.key[0]] = (sizes[c.key[0]] || 0) + (c.value.byteLength ?? c.value.size);
    else out.push([c.key, c.value.bytes, !!c.value.digest]);
    c.continue();
  };
};
"""

# Damage the one stored image (one Blob, or ArrayBuffer parts where the engine refuses a Blob):
# "garbage" (its bytes replaced: the digest no longer matches), "truncated" (its last part
# shortened, the record unchanged), "unrestorable" (other bytes, and a record that agrees: size
# and digest match, so only Pyodide's restore can refuse it).
DAMAGE = """
const [how, done] = arguments;
const open = indexedDB.open("pysmtp-wasm-snapshot-cache", 1);
open.onerror = () => done({ error: String(open.error) });
open.onsuccess = async () => {
  const db = open.result;
  const ask = (request) => new Promise((resolve) => (request.onsuccess = () => resolve(request.result)));
  const keys = await ask(db.transaction("images").objectStore("images").getAllKeys());
  const key = keys.find((k) => typeof k === "string");
  const parts = keys.filter((k) => Array.isArray(k));
  const record = await ask(db.transaction("images").objectStore("images").get(key));
  const last = await ask(db.transaction("images").objectStore("images").get(parts[parts.length - 1]));
  let whole = null;
  if (how !== "truncated") {
    whole = new Uint8Array(record.bytes);
    for (let i = 0; i < whole.length; i += 65536) crypto.getRandomValues(whole.subarray(i, i + 65536));
    if (how === "unrestorable") {
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", whole));
      record.digest = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    }
  }
  const tx = db.transaction("images", "readwrite");
  const store = tx.objectStore("images");
  const blob = last instanceof Blob;
  const half = (blob ? last.size : last.byteLength) >> 1;
  if (how === "truncated") store.put(last.slice(0, half), parts[parts.length - 1]);
  else if (blob) {
    store.put(new Blob([whole]), parts[0]);
    store.put(record, key);
  } else {
    let offset = 0;
    for (const part of parts) {
      const size = part === parts[parts.length - 1] ? whole.length - offset : 2 * 1024 * 1024;
      store.put(whole.slice(offset, offset + size).buffer, part);
      offset += size;
    }
    store.put(record, key);
  }
  tx.oncomplete = () => { db.close(); done({ key }); };
  tx.onerror = () => done({ error: String(tx.error) });
};
"""

CLEAR = """
const done = arguments[arguments.length - 1];
PySmtp.clearSnapshotCache().then(done, (e) => done({ error: String(e) }));
"""


class _Site(http.server.SimpleHTTPRequestHandler):
    """The site; under /csp/ the same files, sent with the strict policy."""

    csp = ""
    requested: list[str] = []

    def translate_path(self, path: str) -> str:
        if path.startswith("/csp/"):
            path = path[len("/csp") :]
        return super().translate_path(path)

    def end_headers(self) -> None:
        if self.path.startswith("/csp/"):
            self.send_header("Content-Security-Policy", self.csp)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requested.append(self.path.split("?")[0])

    def log_message(self, format: str, *args: object) -> None:
        pass


def _copy_dist(target: Path) -> None:
    """dist/ with its large folders linked, not copied."""
    target.mkdir(parents=True)
    for item in DIST.iterdir():
        if item.name in ("pyodide", "openssl"):
            (target / item.name).symlink_to(item)
        elif item.is_file():
            shutil.copy2(item, target / item.name)
    (target / "cache.html").write_text(PAGE)
    (target / "cache.js").write_text(SCRIPT)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, proxy: PysmtpProxy) -> Iterator[str]:
    if not (DIST / "pysmtp-wasm-snapshot-worker.js").exists():
        pytest.fail("dist/ is not built: run ./build.sh test (it builds before testing)")
    root = tmp_path_factory.mktemp("cache-site")
    _copy_dist(root / "v1")
    _copy_dist(root / "v2")
    # v2: another wheel (a zip comment changes its hash), the loaders built again for it
    wheel = next((root / "v2").glob("pysmtp_wasm-*.whl"))
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.comment = b"v2"
    subprocess.run(["node", str(ROOT / "web" / "build.mjs"), "--dist", str(root / "v2")], check=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Site, directory=str(root)))
    _Site.csp = (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
        f"connect-src 'self' ws://127.0.0.1:{proxy.port}; worker-src 'self'"
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module", params=browsers.ENGINES)
def browser(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One browser per engine, one profile for the whole module (the visits share its storage)."""
    engine: str = request.param
    if reason := browsers.missing(engine):
        pytest.skip(f"{engine}: {reason}")
    with browsers.driver(engine, tmp_path_factory.mktemp(f"profile-{engine}")) as driver:
        driver.set_script_timeout(300)
        driver.engine = engine
        yield driver


def visit(driver: Any, url: str, port: int, proxy: str, ca: str | None = None) -> dict[str, Any]:
    driver.get("about:blank")
    driver.get(url)
    result: dict[str, Any] = driver.execute_async_script(SESSION, port, proxy, ca)
    assert "error" not in result, result
    assert result["errors"] == [] and result["accepted"] == ["rcpt@example.com"], result
    return result


def job(driver: Any) -> dict[str, Any] | None:
    report: dict[str, Any] | None = driver.execute_async_script(JOB)
    return report


def entries(driver: Any) -> list[list[Any]]:
    out: list[list[Any]] = driver.execute_async_script(ENTRIES)
    assert not isinstance(out, dict), out
    return out


def fresh_then_stored(driver: Any, url: str, proxy: PysmtpProxy) -> dict[str, Any]:
    """A visit that boots as usual and stores an image after its first onidle: the report."""
    with SmtpServer() as server:
        first = visit(driver, url, server.port, proxy.url(server.port))
        assert first["bootKind"] == "fresh" and first["job"] is True, first
        report = job(driver)
    assert report and report["stored"] is True, report
    return report


def restored(driver: Any, url: str, proxy: PysmtpProxy, **kw: Any) -> dict[str, Any]:
    with SmtpServer() as server:
        result = visit(driver, url, server.port, proxy.url(server.port), **kw)
        assert server.recorder.messages[0].mail_from == "cache@example.com"
    assert result["bootKind"] == result["apiBootKind"] == "snapshot-cache", result
    assert result["job"] is False, result
    return result


def test_first_visit_stores_and_the_return_visit_restores(
    browser: Any, site: str, proxy: PysmtpProxy
) -> None:
    url = f"{site}/v1/cache.html"
    report = fresh_then_stored(browser, url, proxy)
    assert report["bytes"] > 10_000_000, report
    # One Blob (read back off the main thread); WebKit refuses a Blob in IndexedDB: parts there.
    assert report["blob"] is (browser.engine != "webkit"), report
    stored = entries(browser)
    assert len(stored) == 1 and stored[0][1] == report["bytes"] and stored[0][3] is True, stored
    assert (
        stored[0][0].startswith("pyodide ")
        and browser.execute_script("return navigator.userAgent") in stored[0][0]
    )
    restored(browser, url, proxy)
    restored(browser, url + "?worker", proxy)  # the Worker reads the same entry


def test_a_send_after_a_restore_with_starttls(
    browser: Any, site: str, proxy: PysmtpProxy, smtp_certs: Certs
) -> None:
    url = f"{site}/v1/cache.html"
    if not entries(browser):
        fresh_then_stored(browser, url, proxy)
    ca = smtp_certs.ca.cert_pem.bytes().decode()
    for mode in ("", "?worker"):
        with SmtpServer(starttls=smtp_certs.server_context()) as server:
            result = visit(browser, url + mode, server.port, proxy.url(server.port), ca)
            assert server.recorder.messages[0].tls is True
        assert result["bootKind"] == "snapshot-cache", result


def _random_parts(content: bytes) -> tuple[str, str]:
    """A message's MIME boundary and the random part of its Message-ID."""
    boundary = re.search(rb'boundary="([^"]+)"', content)
    msgid = re.search(rb"Message-ID: <\d+\.\d+\.(\d+)@", content, re.IGNORECASE)
    assert boundary and msgid, content[:600]
    return boundary.group(1).decode(), msgid.group(1).decode()


def test_two_restores_draw_different_random_numbers(browser: Any, site: str, proxy: PysmtpProxy) -> None:
    url = f"{site}/v1/cache.html"
    if not entries(browser):
        fresh_then_stored(browser, url, proxy)
    draws, hashes = [], []
    for _ in range(2):
        browser.get("about:blank")
        browser.get(url)
        out = browser.execute_async_script(DRAW)
        assert out["bootKind"] == "snapshot-cache", out
        draws.append(out["draw"])
        hashes.append(out["hash"])
    assert draws[0] != draws[1], draws
    # str hashes: the image's own seed (documented: the same for every restore of one image)
    assert hashes[0] == hashes[1]
    parts = []
    for mode in ("", "?worker", "", "?worker"):
        with SmtpServer() as server:
            result = visit(browser, url + mode, server.port, proxy.url(server.port))
            assert result["bootKind"] == "snapshot-cache"
            parts.append(_random_parts(server.recorder.messages[0].content))
    boundaries = {p[0] for p in parts}
    msgids = {p[1] for p in parts}
    assert len(boundaries) == len(msgids) == 4, parts


@pytest.mark.parametrize("how", ["garbage", "truncated", "unrestorable"])
def test_a_damaged_image_falls_back_and_is_replaced(
    browser: Any, site: str, proxy: PysmtpProxy, how: str
) -> None:
    url = f"{site}/v1/cache.html"
    browser.get(url + "?nocache")  # the site's origin (run alone, the browser is on about:blank)
    if not entries(browser):
        fresh_then_stored(browser, url, proxy)
    browser.get(url)
    browser.execute_async_script("const d = arguments[0]; window.smtp.then(() => d(), () => d());")
    damaged = browser.execute_async_script(DAMAGE, how)
    assert "error" not in damaged, damaged
    # the ordinary boot, the bad entry deleted, then a good one made
    report = fresh_then_stored(browser, url, proxy)
    stored = entries(browser)
    assert len(stored) == 1 and stored[0][1] == report["bytes"] and stored[0][3] is True
    restored(browser, url, proxy)


def test_a_new_version_does_not_use_the_old_image_and_removes_it(
    browser: Any, site: str, proxy: PysmtpProxy
) -> None:
    v1, v2 = f"{site}/v1/cache.html", f"{site}/v2/cache.html"
    if not entries(browser):
        fresh_then_stored(browser, v1, proxy)
    (old_key, *_), *_ = entries(browser)
    fresh_then_stored(browser, v2, proxy)
    stored = entries(browser)
    assert len(stored) == 1 and stored[0][0] != old_key, stored
    restored(browser, v2, proxy)
    restored(browser, v2 + "?worker", proxy)
    # and back: v1 makes its own again (the one key stored is always the last made)
    fresh_then_stored(browser, v1, proxy)
    assert [e[0] for e in entries(browser)] == [old_key]


def test_storage_refused_off_and_cleared(browser: Any, site: str, proxy: PysmtpProxy) -> None:
    url = f"{site}/v1/cache.html"
    if not entries(browser):
        fresh_then_stored(browser, url, proxy)
    with SmtpServer() as server:
        refused = visit(browser, url + "?refuse", server.port, proxy.url(server.port))
        off = visit(browser, url + "?nocache", server.port, proxy.url(server.port))
        off_worker = visit(browser, url + "?nocache&worker", server.port, proxy.url(server.port))
    assert (refused["bootKind"], refused["job"]) == ("fresh", False), refused
    assert (off["bootKind"], off["job"]) == ("fresh", False), off
    assert (off_worker["bootKind"], off_worker["job"]) == ("fresh", False), off_worker
    assert browser.execute_async_script(CLEAR) is True
    assert entries(browser) == []
    with SmtpServer() as server:
        after = visit(browser, url, server.port, proxy.url(server.port))
    assert after["bootKind"] == "fresh" and after["job"] is True
    assert job(browser)["stored"] is True


def test_under_a_strict_content_security_policy(browser: Any, site: str, proxy: PysmtpProxy) -> None:
    # Sent with the page and with every file of it, the Workers' scripts included. The first
    # visit (a fresh profile's origin: storage is per origin, and /csp/ is the same origin, so
    # clear it first) makes the image under the policy; the next ones boot from it.
    url = f"{site}/csp/v1/cache.html"
    browser.get(url)
    assert browser.execute_async_script(CLEAR) is True
    _Site.requested.clear()
    report = fresh_then_stored(browser, url, proxy)
    assert report["stored"] is True
    for mode in ("", "?worker"):
        restored(browser, url + mode, proxy)
    with SmtpServer() as server:
        worker_fresh = visit(browser, url + "?worker&nocache", server.port, proxy.url(server.port))
    assert worker_fresh["bootKind"] == "fresh"
    served = set(_Site.requested)
    assert {"/csp/v1/pysmtp-wasm-snapshot-worker.js", "/csp/v1/pysmtp-wasm-worker.js"} <= served, served
    # the policy was in force: an inline script does not run
    blocked = browser.execute_async_script(
        """const done = arguments[0]; window.inlineRan = false;
        const s = document.createElement("script"); s.textContent = "window.inlineRan = true";
        document.head.appendChild(s); setTimeout(() => done(window.inlineRan), 100);"""
    )
    assert blocked is False
