"""dist/ as an npm package, as a JavaScript developer uses it: ``npm pack dist`` (the manifest is
made by the build), the tarball installed into a fresh project, the types checked by ``tsc
--noEmit`` on a typed usage file (tests/npm/usage.ts), and a page bundled with esbuild that sends
a message in Chromium, in-page and in worker mode. esbuild and TypeScript are pinned by
tests/npm/package-lock.json (``./build.sh test`` installs them)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from . import browsers
from .servers import PysmtpProxy, SmtpServer

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "npm" / "node_modules" / ".bin"

MAIN = """
import PySmtp, { load } from "pysmtp-wasm";

const q = new URLSearchParams(location.search);
window.result = load({
  worker: q.has("worker"),
  baseURL: new URL("pysmtp-wasm/", location.href).href,  // where the package's files are served
  proxy: q.get("proxy"),
}).then(async (api) => {
  const client = new api.SmtpClient("localhost", Number(q.get("port")));
  const sent = await client.sendMail({
    from: "npm@example.com", to: "rcpt@example.com", subject: "from a bundle", text: "hi",
    attachments: [{ filename: "a.bin", content: new Uint8Array([0, 1, 2, 255]) }],
  });
  await new Promise((resolve) => { client.onclose = resolve; client.quit(); });
  return { accepted: sent.accepted, version: PySmtp.version, same: PySmtp.load === load,
           inPage: api.pyodide !== null };
}).catch((e) => ({ error: String(e && e.stack || e) }));
"""

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext",
        "moduleResolution": "bundler",
        "lib": ["ES2022", "DOM"],
        "types": [],
    },
}


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project with the packed tarball installed (and nothing else)."""
    if not (TOOLS / "esbuild").exists() or not (TOOLS / "tsc").exists():
        pytest.fail("tests/npm is not installed: run ./build.sh test")
    base = tmp_path_factory.mktemp("npm")
    packed = run("npm", "pack", ROOT / "dist", "--pack-destination", base, "--json", cwd=base)
    assert packed.returncode == 0, packed.stderr
    (tarball,) = [base / entry["filename"] for entry in json.loads(packed.stdout)]
    fresh = base / "fresh"
    fresh.mkdir()
    (fresh / "package.json").write_text(json.dumps({"name": "fresh", "version": "1.0.0", "private": True}))
    installed = run("npm", "install", "--no-audit", "--no-fund", tarball, cwd=fresh)
    assert installed.returncode == 0, installed.stderr
    return fresh


def test_the_package_carries_the_licences_of_what_it_ships(project: Path) -> None:
    package = project / "node_modules" / "pysmtp-wasm"
    assert "MIT License" in (package / "LICENSE").read_text()
    assert "Mozilla Public License Version 2.0" in (package / "licenses" / "pyodide-MPL-2.0.txt").read_text()
    assert "Forge" in (package / "licenses" / "node-forge-LICENSE.txt").read_text()
    assert "Apache License" in (package / "openssl" / "LICENSE-openssl.txt").read_text()


def tsc(project: Path, source: str, name: str) -> subprocess.CompletedProcess[str]:
    (project / name).write_text(source)
    (project / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "files": [name]}))
    return run(TOOLS / "tsc", "-p", project, cwd=project)


def test_the_types_check_on_a_typed_use_of_every_option_method_and_callback(project: Path) -> None:
    checked = tsc(project, (ROOT / "tests" / "npm" / "usage.ts").read_text(), "usage.ts")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... and they are the package's: a wrong use fails against them.
    wrong = tsc(project, 'import { load } from "pysmtp-wasm";\nload({ wroker: true });\n', "wrong.ts")
    assert wrong.returncode != 0 and "wroker" in wrong.stdout, wrong.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(project: Path) -> Iterator[str]:
    """The fresh project's page: bundled with esbuild, the package's files copied beside it."""
    (project / "main.js").write_text(MAIN)
    www = project / "www"
    www.mkdir()
    bundled = run(
        TOOLS / "esbuild", "main.js", "--bundle", "--format=esm", "--outfile=www/bundle.js", cwd=project
    )
    assert bundled.returncode == 0, bundled.stderr
    assert "function bootRemote(" in (www / "bundle.js").read_text()  # the package's code is in the bundle
    shutil.copytree(project / "node_modules" / "pysmtp-wasm", www / "pysmtp-wasm")
    (www / "index.html").write_text('<!doctype html><script type="module" src="bundle.js"></script>\n')
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("mode", ["in-page", "worker"])
def test_a_bundled_page_sends_a_message(site: str, proxy: PysmtpProxy, tmp_path: Path, mode: str) -> None:
    with browsers.driver("chromium", tmp_path / "profile") as driver:
        with SmtpServer() as server:
            query = {"port": server.port, "proxy": proxy.url(server.port)} | (
                {"worker": 1} if mode == "worker" else {}
            )
            driver.get(f"{site}/index.html?{urlencode(query)}")
            result: dict[str, Any] = driver.execute_async_script(
                "const done = arguments[0];"
                "(function wait() { window.result ? window.result.then(done) : setTimeout(wait, 20); })();"
            )
    assert "error" not in result, result
    assert result == {
        "accepted": ["rcpt@example.com"],
        "version": "0.1.0",
        "same": True,
        "inPage": mode == "in-page",
    }
    (message,) = server.recorder.messages
    assert message.mail_from == "npm@example.com" and b"from a bundle" in message.content
