"""The test stack for pages (and programs) that send mail with pysmtp-wasm, on 127.0.0.1:

- :class:`SmtpServer`: aiosmtpd that keeps what it receives (:class:`Received`, with the
  envelope and the message parsed as an ``email.message.EmailMessage``);
- :class:`PysmtpProxy`: the WebSocket-to-TCP proxy a page needs (pysmtp-wasm's own,
  ``pysmtp-wasm-proxy``), reaching only the servers it is given; :class:`Websockify`, the same
  with websockify in token mode;
- :class:`Certs`: a private CA and a server certificate for ``localhost`` and ``127.0.0.1``;
- :class:`DistServer`: a static web server for ``dist/`` (and the test's own pages).

The pytest fixtures over them are in :mod:`pysmtp_wasm.pytest_plugin`, which pytest loads by
itself wherever pysmtp-wasm is installed. This subpackage needs the ``testing`` extra
(aiosmtpd, trustme, websockify, and the proxy's websockets and prometheus-client): the wheel
``./build.sh`` built, ``pip install "dist/pysmtp_wasm-<version>-py3-none-any.whl[testing]"``.
It says so when it is missing; ``import pysmtp_wasm`` never imports it.
"""

from __future__ import annotations

import importlib.util

MISSING_EXTRA = (
    'pysmtp_wasm.testing needs the "testing" extra: install the wheel from pysmtp-wasm\'s dist/ '
    'with it, pip install "dist/pysmtp_wasm-<version>-py3-none-any.whl[testing]" '
    "(aiosmtpd, trustme, websockify, websockets and prometheus-client)"
)


def _missing() -> list[str]:
    missing = []
    for name in ("aiosmtpd", "trustme", "websockify", "websockets", "prometheus_client"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ValueError:  # in sys.modules without a spec: None when an import was blocked
            found = False
        if not found:
            missing.append(name)
    return missing


if _missing():
    raise ImportError(f"{MISSING_EXTRA}; missing: {', '.join(_missing())}")

from ._certs import Certs  # noqa: E402
from ._http import DistRequestHandler, DistServer  # noqa: E402
from ._net import free_port, wait_for_port  # noqa: E402
from ._proxy import PysmtpProxy, Websockify  # noqa: E402
from ._smtp import Received, Recorder, SmtpServer, permissive_client_context  # noqa: E402

__all__ = [
    "MISSING_EXTRA",
    "Certs",
    "PysmtpProxy",
    "DistRequestHandler",
    "DistServer",
    "Received",
    "Recorder",
    "SmtpServer",
    "Websockify",
    "free_port",
    "permissive_client_context",
    "wait_for_port",
]
