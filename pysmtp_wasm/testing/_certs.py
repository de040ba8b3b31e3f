"""A private CA and a server certificate, made by trustme."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme

# The names a test server answers to: what a page or a client may call it.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


class Certs:
    """A CA made for this test run and a leaf it signed for ``localhost``, ``127.0.0.1`` and
    ``::1``. A client trusts the servers by pinning ``ca_pem`` (the ``ca`` option).

    ``cert_path`` (the leaf, then its chain) and ``key_path`` are files, for servers that read
    them; ``server_context()`` is Python's default server TLS (TLS 1.2 and 1.3) with them.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="pysmtp-certs-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert(*SERVER_NAMES)
        self.ca_pem: str = self.ca.cert_pem.bytes().decode()
        self.ca_path = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.cert_path = self.directory / "localhost.crt"
        self.key_path = self.directory / "localhost.key"
        self.cert_path.write_bytes(b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems))
        self.leaf.private_key_pem.write_to_path(str(self.key_path))

    def server_context(self) -> ssl.SSLContext:
        """A new server context: Python's defaults, this leaf."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaf.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (for CPython clients)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context
