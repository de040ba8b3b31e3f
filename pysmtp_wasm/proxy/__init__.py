"""pysmtp-wasm's WebSocket-to-TCP proxy: what a page's ``proxy`` URL points at.

One WebSocket from a page is one TCP connection to one SMTP server of a fixed list (the targets
file, websockify's token format); binary frames both ways, as websockify speaks, so pages need
no change. Secure by default: browsers only from the origins given (loopback ones on a loopback
listener), a short-lived ticket from the site's backend when ``--ticket-key`` is given, limits on
sessions in all and per client, every refusal made before any connection to a target and heard
by the page as a close code. Operations: one JSON log line per session, ``/healthz`` and
``/metrics`` on the same port, SIGHUP to reload, SIGTERM to drain, ``--workers N``.

Run it with ``pysmtp-wasm-proxy --targets targets.cfg`` (``pip install "pysmtp-wasm[proxy]"``);
docs/proxy.md has the flags, the ticket format and a deployment behind HAProxy.

Importing this package needs nothing but the standard library: a backend mints tickets with
:func:`make_ticket` without the ``proxy`` extra.
"""

from ._tickets import check_ticket, make_ticket

__all__ = ["check_ticket", "make_ticket", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``pysmtp-wasm-proxy`` command (needs the ``proxy`` extra)."""
    from ._main import main as run

    return run(argv)
