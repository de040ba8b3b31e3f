"""The test certificates, from one factory (the ``cryptography`` package): private chains (a
root, an intermediate, leaves: ``make_chain``) and self-signed certificates (``self_signed``),
RSA or ECDSA. (The pytest plugin's ``smtp_certs`` uses trustme, as a user's test would; a few
tests use trustme on purpose, to check a chain exactly as trustme makes it.)"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Certificate:
    """A server certificate: ``cert_pem`` (the leaf) is what a client pins; ``cert_path`` (the
    leaf, then its chain) and ``key_path`` are what a server loads."""

    cert_pem: str
    cert_path: Path
    key_path: Path


def self_signed(
    directory: Path, name: str = "localhost", *, kind: str = "rsa", ca: bool = True
) -> Certificate:
    """A self-signed certificate for ``name`` and 127.0.0.1 (serverAuth). ``ca=True`` (the
    default) marks it a CA, as ``openssl req -x509`` does: pinned, it is its own trust anchor
    for every engine (node-forge parses RSA only). ``ca=False`` is what a small server makes for
    itself: a leaf that is not a CA, which a client can still pin by itself."""
    from cryptography import x509

    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key(kind)
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        _builder(name, subject, key, now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    )
    stem = f"self-signed-{kind}-{name}{'' if ca else '-leaf'}"
    return _write(directory, stem, _sign(builder, key), key)


def _write(directory: Path, stem: str, cert: Any, key: Any, chain_pem: str = "") -> Certificate:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path.write_text(pem + chain_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(pem, cert_path, key_path)


def _eku() -> dict[str, Any]:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass
class Chain:
    """A private CA: ``root_pem`` is what a client pins (``ca``); ``issue()`` makes server certificates."""

    directory: Path
    kind: str
    root_pem: str
    _root: Any
    _root_key: Any
    _intermediate: Any
    _intermediate_key: Any

    def issue(
        self,
        name: str = "localhost",
        *,
        expired: bool = False,
        label: str | None = None,
        usages: tuple[str, ...] = ("serverAuth",),
    ) -> Certificate:
        """A leaf for ``name`` (and 127.0.0.1 and ::1) signed by the intermediate; ``cert_path`` holds
        the leaf then the intermediate (what a server sends), ``cert_pem`` the leaf alone.
        ``usages``: its extended key usages ("serverAuth", "clientAuth")."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - datetime.timedelta(days=60), now - datetime.timedelta(days=30)) if expired else (
            now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))  # fmt: skip
        key = _new_key(self.kind)
        usage = dict.fromkeys(
            ["content_commitment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only"], False)  # fmt: skip
        usage["key_encipherment"] = self.kind == "rsa"
        builder = (
            _builder(name, self._intermediate.subject, key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([_eku()[usage] for usage in usages]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(name),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._intermediate_key.public_key()),
                critical=False,
            )
        )
        cert = _sign(builder, self._intermediate_key)
        stem = label or f"{self.kind}-{name}{'-expired' if expired else ''}"
        intermediate_pem = self._intermediate.public_bytes(serialization.Encoding.PEM).decode()
        return _write(self.directory, stem, cert, key, intermediate_pem)


def _new_key(kind: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":  # under OpenSSL's security level 2 (112 bits)
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(kind)


def _builder(cn: str, issuer: Any, key: Any, start: Any, end: Any) -> Any:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _sign(builder: Any, key: Any) -> Any:
    """SHA-256, or SHA-384 with a P-384 key (as CAs pair them)."""
    from cryptography.hazmat.primitives import hashes

    p384 = getattr(getattr(key, "curve", None), "name", "") == "secp384r1"
    return builder.sign(key, hashes.SHA384() if p384 else hashes.SHA256())


def make_chain(directory: Path, kind: str = "rsa") -> Chain:
    """A root CA and an intermediate CA (``kind``: "rsa" 2048, "ec" P-256 or "ec384" P-384 with
    SHA-384), and ``issue()`` leaves under them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    ca_usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    root_key = _new_key(kind)
    root_name = x509.Name(
        [x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, f"pysmtp-wasm test root ({kind})")]
    )
    root = _sign(
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_usage, critical=True),
        root_key,
    )
    intermediate_key = _new_key(kind)
    intermediate = _sign(
        _builder(f"pysmtp-wasm test intermediate ({kind})", root_name, intermediate_key, start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        ),
        root_key,
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
    (directory / f"{kind}-root.crt").write_text(root_pem)
    return Chain(directory, kind, root_pem, root, root_key, intermediate, intermediate_key)
