"""A static web server for dist/ on 127.0.0.1, in a thread."""

from __future__ import annotations

import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class DistRequestHandler(SimpleHTTPRequestHandler):
    """Serves files with the types a page loading Pyodide needs (``.mjs``, ``.wasm``), and asks
    the browser to revalidate each time (a rebuilt dist/ shows at once)."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".pem": "application/x-pem-file",
        ".ts": "text/plain",
        ".whl": "application/zip",
    }

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # only failures are worth a line

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"http: {format % args}\n")


class _Handler(DistRequestHandler):
    pages: dict[str, bytes]

    def do_GET(self) -> None:  # noqa: N802
        body = self.pages.get(self.path.split("?", 1)[0].lstrip("/"))
        if body is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DistServer:
    """``dist/`` on ``http://127.0.0.1:<port>/`` (``url``), plus the pages a test adds with
    ``add_page(name, html)``: a page at the same origin loads ``pysmtp-wasm.js`` by a relative
    URL, as it would on the site that deploys it."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        if not (directory / "pysmtp-wasm.js").is_file():
            raise FileNotFoundError(f"{directory} holds no pysmtp-wasm.js: not a pysmtp-wasm dist/ folder")
        self.directory = directory
        self.pages: dict[str, bytes] = {}
        handler = type("Handler", (_Handler,), {"pages": self.pages})
        self._httpd = ThreadingHTTPServer(
            ("127.0.0.1", port), functools.partial(handler, directory=str(directory))
        )
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread: threading.Thread | None = None

    def add_page(self, name: str, html: str) -> str:
        """Serve ``html`` as ``name`` (beside ``pysmtp-wasm.js``); returns its URL."""
        self.pages[name.lstrip("/")] = html.encode()
        return self.url + name.lstrip("/")

    def start(self) -> DistServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="pysmtp-dist", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DistServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
