"""The demo stack, all on 127.0.0.1: run by ``./build.sh serve [FLAGS]`` with the venv's Python.

- an HTTP server for dist/ (``index.html`` is the demo page) that also answers a small JSON API:
  ``/api/config`` (the SMTP targets the page may use), ``/api/messages`` (what the embedded
  server received, newest first) and ``/api/messages/<id>.eml`` (one message, as received);
- an embedded aiosmtpd that keeps every message in a store directory, on two ports: plain SMTP
  offering STARTTLS, and implicit TLS. Its TLS is Python's default server TLS (TLS 1.2/1.3,
  a certificate from a private CA made at start-up, which the page pins), what the page's default
  engine (OpenSSL) speaks, and it accepts AUTH PLAIN/LOGIN for a demo user without requiring it;
- pysmtp-wasm-proxy (``pysmtp_wasm.proxy``), whose targets file names only those targets (or the
  one real server given with ``--smtp-host``): the page picks a token, never a host, so the
  proxy cannot reach anything else. It also accepts WebSockets only from the demo page's own
  origin (``--allow-origin``), so that other pages open in the same browser cannot use it; its
  JSON log (one line per session) is ``proxy.log`` in the demo's temporary directory.

The server, the proxy, the certificates and the static files are the pieces of the pytest
fixtures (``pysmtp_wasm.testing``); what is the demo's own is the store on disk and the API.

Stop it with Ctrl-C (SIGINT) or SIGTERM: everything it started stops with it.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import functools
import json
import logging
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # the package from the source tree (not installed in the venv)
from pysmtp_wasm.testing import (  # noqa: E402
    Certs,
    DistRequestHandler,
    PysmtpProxy,
    Recorder,
    SmtpServer,
)

DIST = ROOT / "dist"
DEMO_USER, DEMO_PASSWORD = "demo", "demo"
# What the embedded server announces as SIZE and accepts: enough for a few attachments.
DATA_SIZE_LIMIT = 32 * 1024 * 1024
# A message id is made here (time and random hex); anything else in a URL is refused.
MESSAGE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")


# -- the embedded SMTP server ---------------------------------------------------------------------


def summarize(content: bytes) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """The headers the page shows (RFC 2047 decoded) and the attachments' names and sizes."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    headers: dict[str, str | None] = {}
    for name in HEADERS:
        try:
            value = message.get(name)
            headers[name] = None if value is None else str(value)
        except Exception:  # a malformed header: show it raw rather than lose the message
            raw = message.get_all(name, failobj=[None])
            headers[name] = None if raw[0] is None else str(raw[0])
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if filename is None and part.get_content_disposition() != "attachment":
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            payload = b""
        attachments.append(
            {"filename": filename, "content_type": part.get_content_type(), "size": len(payload)}
        )
    return headers, attachments


class Store:
    """Messages as ``<id>.eml`` (the bytes as received) and ``<id>.json`` (envelope, metadata)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, *, mail_from: str, rcpt_tos: list[str], content: bytes, tls: bool,
            login: str | None, via: str) -> dict[str, Any]:  # fmt: skip
        now = datetime.now(UTC)
        message_id = f"{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"
        (self.directory / f"{message_id}.eml").write_bytes(content)
        headers, attachments = summarize(content)
        meta = {
            "id": message_id,
            "received": now.isoformat(timespec="milliseconds"),
            "via": via,
            "mail_from": mail_from,
            "rcpt_tos": rcpt_tos,
            "size": len(content),
            "tls": tls,
            "login": login,
            "headers": headers,
            "attachments": attachments,
        }
        # Written last and renamed into place: a listed message is always a complete one.
        partial = self.directory / f".{message_id}.json.tmp"
        partial.write_text(json.dumps(meta, indent=1))
        partial.replace(self.directory / f"{message_id}.json")
        return meta

    def list(self) -> list[dict[str, Any]]:
        messages = []
        for path in self.directory.glob("*.json"):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and MESSAGE_ID.fullmatch(str(meta.get("id", ""))):
                messages.append(meta)
        messages.sort(key=lambda meta: (str(meta.get("received", "")), meta["id"]), reverse=True)
        return messages

    def raw(self, message_id: str) -> Path | None:
        if not MESSAGE_ID.fullmatch(message_id):
            return None
        path = self.directory / f"{message_id}.eml"
        return path if path.is_file() else None


class Handler(Recorder):
    """aiosmtpd's handler: the fixtures' (AUTH for the demo user), storing each message on disk."""

    def __init__(self, store: Store, via: str) -> None:
        super().__init__(users={DEMO_USER: DEMO_PASSWORD})
        self.store = store
        self.via = via

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        login = session.auth_data
        if isinstance(login, bytes):
            login = login.decode(errors="replace")
        meta = self.store.add(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=envelope.original_content or envelope.content,
            tls=server.transport.get_extra_info("ssl_object") is not None,
            login=login,
            via=self.via,
        )
        print(
            f"received {meta['id']}: {meta['mail_from']} -> {', '.join(meta['rcpt_tos'])}, "
            f"{meta['size']} bytes, {'TLS' if meta['tls'] else 'no TLS'}, "
            f"{'login ' + login if login else 'no login'}",
            flush=True,
        )
        return f"250 2.0.0 OK: stored as {meta['id']}"


# -- the HTTP server ------------------------------------------------------------------------------


@dataclass
class Site:
    config: dict[str, Any]
    store: Store | None
    allowed_hosts: set[str]


class RequestHandler(DistRequestHandler):
    """dist/ as the fixtures serve it (types, no-cache), and the API. The page polls the API
    every 2 s: only failures are logged."""

    site: Site  # set on a subclass by serve()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/api" or path.startswith("/api/"):
            self.api(path)
        else:
            super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if self.path.startswith("/api"):
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
        else:
            super().do_HEAD()

    def api(self, path: str) -> None:
        # Only pages of this origin may read the API (a DNS-rebinding page names another host).
        if self.headers.get("Host", "") not in self.site.allowed_hosts:
            self.send_json({"error": "forbidden host"}, HTTPStatus.FORBIDDEN)
            return
        store = self.site.store
        if path == "/api/config":
            self.send_json(self.site.config)
        elif path == "/api/messages":
            self.send_json(store.list() if store else [])
        elif match := re.fullmatch(r"/api/messages/([^/]+)\.eml", path):
            raw = store.raw(match.group(1)) if store else None
            if raw is None:
                self.send_json({"error": "no such message"}, HTTPStatus.NOT_FOUND)
                return
            body = raw.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "message/rfc822")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Disposition", f'attachment; filename="{raw.name}"')
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# -- putting it together --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./build.sh serve",
        description="The pysmtp-wasm demo: dist/ with its JSON API, an embedded SMTP server and "
        "pysmtp-wasm-proxy for exactly its targets, all on 127.0.0.1.",
    )
    parser.add_argument("--http-port", type=int, default=8000, help="the page and the API (8000)")
    parser.add_argument("--ws-port", type=int, default=8001, help="the WebSocket proxy (8001)")
    parser.add_argument(
        "--smtp-port", type=int, default=None,
        help="the embedded server's plain/STARTTLS port (2525); with --smtp-host, the real "
        "server's port (default 465 for tls, 587 for starttls, 25 for none)",
    )  # fmt: skip
    parser.add_argument("--smtps-port", type=int, default=2465, help="the embedded implicit TLS port (2465)")
    parser.add_argument("--store", type=Path, help="keep received messages here (default: a temporary dir)")
    parser.add_argument("--smtp-host", help="use this real SMTP server instead of the embedded one")
    parser.add_argument(
        "--smtp-security", choices=("starttls", "tls", "none"), default=None,
        help="with --smtp-host: starttls (default), tls (implicit) or none",
    )  # fmt: skip
    parser.add_argument("--smtp-ca", type=Path, help="with --smtp-host: PEM certificate(s) to pin")
    parser.add_argument("--no-build", action="store_true", help="(build.sh: do not rebuild dist/ first)")
    args = parser.parse_args(argv)
    if args.smtp_host is None:
        if args.smtp_security or args.smtp_ca:
            parser.error("--smtp-security and --smtp-ca need --smtp-host")
        args.smtp_port = args.smtp_port or 2525
    else:
        if args.store:
            parser.error("--store is for the embedded server: not with --smtp-host")
        args.smtp_security = args.smtp_security or "starttls"
        args.smtp_port = args.smtp_port or {"tls": 465, "starttls": 587, "none": 25}[args.smtp_security]
    return args


def serve(args: argparse.Namespace, stopping: threading.Event) -> int:
    if not (DIST / "pysmtp-wasm.js").is_file() or not (DIST / "index.html").is_file():
        print("dist/ is not built: run ./build.sh serve (without --no-build)", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="pysmtp-wasm-demo-"))
        stack.callback(shutil.rmtree, workdir, True)
        ws_url = f"ws://127.0.0.1:{args.ws_port}/?token="
        store: Store | None = None

        if args.smtp_host is None:
            if args.store:
                store = Store(args.store.resolve())
            else:
                store = Store(workdir / "store")
            certs = Certs(workdir / "certs")
            ca = certs.ca_pem
            for port, via, starttls, implicit in (
                (args.smtp_port, "smtp", certs.server_context(), None),
                (args.smtps_port, "smtps", None, certs.server_context()),
            ):
                # AUTH is offered without TLS too: a demo on 127.0.0.1 lets "none" show it.
                server = SmtpServer(
                    Handler(store, via), starttls=starttls, implicit_tls=implicit, port=port,
                    data_size_limit=DATA_SIZE_LIMIT,
                )  # fmt: skip
                try:
                    server.start()
                except Exception as error:
                    raise RuntimeError(f"the embedded SMTP server cannot listen on {port}: {error}") from None
                stack.callback(server.stop)
            tokens = {"smtp": ("127.0.0.1", args.smtp_port), "smtps": ("127.0.0.1", args.smtps_port)}
            targets = [
                {"name": "embedded SMTP (STARTTLS)", "host": "localhost", "port": args.smtp_port,
                 "security": "starttls", "proxy": ws_url + "smtp", "ca": ca},
                {"name": "embedded SMTPS (implicit TLS)", "host": "localhost", "port": args.smtps_port,
                 "security": "tls", "proxy": ws_url + "smtps", "ca": ca},
            ]  # fmt: skip
            config: dict[str, Any] = {
                "targets": targets, "embedded": True, "user": DEMO_USER, "password": DEMO_PASSWORD,
            }  # fmt: skip
        else:
            pinned = args.smtp_ca.read_text() if args.smtp_ca else None
            tokens = {"smtp": (args.smtp_host, args.smtp_port)}
            targets = [
                {"name": f"{args.smtp_host}:{args.smtp_port}", "host": args.smtp_host, "port": args.smtp_port,
                 "security": args.smtp_security, "proxy": ws_url + "smtp", "ca": pinned},
            ]  # fmt: skip
            config = {"targets": targets, "embedded": False}

        page_hosts = [f"127.0.0.1:{args.http_port}", f"localhost:{args.http_port}"]
        origins = [f"http://{h}" for h in page_hosts]
        proxy = PysmtpProxy(workdir, port=args.ws_port, tokens=tokens, origins=origins)
        stack.callback(proxy.stop)
        proxy.start()

        handler = type(
            "DemoRequestHandler", (RequestHandler,), {"site": Site(config, store, set(page_hosts))}
        )
        try:
            httpd = ThreadingHTTPServer(
                ("127.0.0.1", args.http_port), functools.partial(handler, directory=str(DIST))
            )
        except OSError as error:
            raise RuntimeError(f"the HTTP server cannot listen on {args.http_port}: {error}") from None
        httpd.daemon_threads = True
        stack.callback(httpd.server_close)
        http_thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
        http_thread.start()
        stack.callback(http_thread.join, 5)
        stack.callback(httpd.shutdown)

        print(f"\n  pysmtp-wasm demo: open http://127.0.0.1:{args.http_port}/\n", flush=True)
        if store is not None:
            print(f"  embedded SMTP:  localhost:{args.smtp_port} (STARTTLS), "
                  f"localhost:{args.smtps_port} (implicit TLS); TLS 1.2/1.3")  # fmt: skip
            print(f"  demo login:     user {DEMO_USER!r}, password {DEMO_PASSWORD!r} (optional)")
            kept = "" if args.store else " (temporary: removed at exit; --store DIR keeps it)"
            print(f"  messages:       {store.directory}{kept}")
        else:
            print(f"  SMTP server:    {args.smtp_host}:{args.smtp_port} ({args.smtp_security})")
        print(f"  proxy:          ws://127.0.0.1:{args.ws_port}/ (tokens: {', '.join(tokens)}; "
              f"log: {proxy.log_path})")  # fmt: skip
        print("\n  Ctrl-C stops it.\n", flush=True)

        while not stopping.wait(0.5):
            if proxy.process is not None and proxy.process.poll() is not None:
                print(f"the proxy exited unexpectedly:\n{proxy.log_tail()}", file=sys.stderr)
                return 1
        print("stopping…", flush=True)
    print("stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # aiosmtpd warns about its own deprecated internals on every login: keep errors only.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        return serve(args, stopping)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
