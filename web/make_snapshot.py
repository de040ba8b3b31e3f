"""Write dist/pyodide/pysmtp-snapshot.bin: a Pyodide memory snapshot with pysmtp_wasm imported.

    .venv/bin/python web/make_snapshot.py [--dist DIR]   (run by `./build.sh snapshot`, after the build)

A snapshot is the WebAssembly memory of a booted Python: loading it skips Python's start-up
and our imports. It is tied to the exact Pyodide build in dist/pyodide/ and to the wheel in
dist/, which is why it lives in dist/pyodide/ (every build starts that folder afresh). It is
made in the same headless Chromium the tests use: the wheel is unpacked into site-packages
with zipfile (pyodide.loadPackage leaves JS state that cannot be snapshotted), then every
module of pysmtp_wasm is imported, with asyncio and the email package it uses. Last, the
loaders in dist/ are built again, told of the snapshot (``node web/build.mjs --snapshot``: a
build option, PYSMTP_BUILD.snapshot): without it they never ask for the file. (The Worker of
worker mode, pysmtp-wasm-worker.js, has the same loader.)
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

DIST = Path(__file__).resolve().parent.parent / "dist"
SNAPSHOT = "pyodide/pysmtp-snapshot.bin"
BUILD = Path(__file__).resolve().parent / "build.mjs"

# The same list as web/src/snapshot-cache.js (the snapshot cache makes its image the same way).
MODULES = (
    "asyncio, email.message, email.policy, email.utils, email.headerregistry, email.generator, "
    "pysmtp_wasm, pysmtp_wasm._jsapi, pysmtp_wasm._browser, pysmtp_wasm._message"
)

SCRIPT = """
const done = arguments[arguments.length - 1];
(async () => {
  const pyodide = await loadPyodide({ indexURL: "pyodide/", _makeSnapshot: true });
  const wheel = new Uint8Array(await (await fetch(arguments[0])).arrayBuffer());
  pyodide.FS.writeFile("/tmp/pysmtp.whl", wheel);
  pyodide.runPython(`
import os, site, zipfile
zipfile.ZipFile("/tmp/pysmtp.whl").extractall(site.getsitepackages()[0])
os.remove("/tmp/pysmtp.whl")
import ${arguments[1]}
`);
  const image = pyodide.makeMemorySnapshot();
  const parts = [];
  for (let i = 0; i < image.length; i += 32768) {
    parts.push(String.fromCharCode.apply(null, image.subarray(i, i + 32768)));
  }
  return { b64: btoa(parts.join("")) };
})().then(done, (e) => done({ error: String((e && e.stack) || e) }));
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=DIST, help="the built dist/ folder (default: ./dist)")
    dist: Path = parser.parse_args().dist
    out = dist / SNAPSHOT
    wheels = sorted(dist.glob("pysmtp_wasm-*.whl"))
    if not wheels or not (dist / "pyodide" / "pyodide.js").exists():
        print(f"make_snapshot: build {dist} first (./build.sh)", file=sys.stderr)
        return 1
    out.unlink(missing_ok=True)
    (dist / "_snapshot.html").write_text('<!doctype html><script src="pyodide/pyodide.js"></script>\n')
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='snapshot-chrome-')}"):  # fmt: skip
        options.add_argument(flag)
    service = Service(os.environ.get("SE_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_script_timeout(300)
        driver.get(f"http://127.0.0.1:{server.server_port}/_snapshot.html")
        result = driver.execute_async_script(SCRIPT, wheels[-1].name, MODULES)
    finally:
        driver.quit()
        server.shutdown()
        (dist / "_snapshot.html").unlink(missing_ok=True)
    if "error" in result:
        print("make_snapshot: " + result["error"], file=sys.stderr)
        return 1
    out.write_bytes(base64.b64decode(result["b64"]))
    built = subprocess.run(["node", str(BUILD), "--dist", str(dist), "--snapshot", SNAPSHOT], check=False)
    if built.returncode != 0:
        print(f"make_snapshot: {BUILD} --snapshot failed", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB; the loaders in {dist} use it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
