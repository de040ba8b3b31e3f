"""The benchmark's sinks: a minimal asyncio SMTP server that accepts everything and throws the
message away as it streams (no buffering of DATA), and a raw TCP sink for the path's limit.

    python bench/sink.py CERT KEY      # prints one JSON line with the ports, serves until killed

Listeners (all on 127.0.0.1):
  smtp        plain SMTP, no PIPELINING advertised
  smtp_pipe   plain SMTP with PIPELINING
  smtp_tls    implicit TLS (TLS 1.0/1.1, AES-CBC-SHA: what node-forge speaks), PIPELINING
  smtp_tls_modern  implicit TLS 1.2/1.3, the client's cipher order honoured (as Postfix, Exim and
              Dovecot do by default), PIPELINING
  smtp_tls_server_order  the same with Python's default server settings, which impose the
              server's order (OpenSSL's: AES-256-GCM first)
  smtp_chunking  plain SMTP with PIPELINING and CHUNKING (RFC 3030: BDAT chunks are counted
              and dropped, each answered once its octets are in)
  raw         reads "N\\r\\n", then N bytes, answers "OK\\r\\n" (again and again)
  raw_tls     the same over implicit TLS (TLS 1.0/1.1)
  raw_tls_modern  the same over TLS 1.2/1.3

Every reply is written as soon as the commands in hand are parsed, so PIPELINING works: a
batch of commands gets one batch of replies. DATA is scanned for CRLF.CRLF with a 4-byte carry
and dropped; nothing but a byte counter remains.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import warnings

END = b"\r\n.\r\n"


class SmtpSink(asyncio.Protocol):
    def __init__(self, pipelining: bool, chunking: bool = False) -> None:
        ext = [b"250-sink.localhost", b"250-8BITMIME", b"250-SIZE 2147483647"]
        if pipelining:
            ext.append(b"250-PIPELINING")
        if chunking:
            ext.append(b"250-CHUNKING")
        ext.append(b"250 SMTPUTF8")
        self.ehlo = b"\r\n".join(ext) + b"\r\n"
        self.buf = b""
        self.in_data = False
        self.carry = b""
        self.bdat_left = 0  # octets of the current BDAT chunk still to come
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(b"220 sink.localhost ESMTP\r\n")  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.bdat_left:
            data = self._chunk(data)
            if not data:
                return
            self.buf += data
            self._commands()
        elif self.in_data:
            self._data(data)
        else:
            self.buf += data
            self._commands()

    def _commands(self) -> None:
        out = []
        buf = self.buf
        while True:
            i = buf.find(b"\r\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO" or verb == b"LHLO":
                out.append(self.ehlo)
            elif verb == b"HELO":
                out.append(b"250 sink.localhost\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                out.append(b"250 2.0.0 OK\r\n")
            elif verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                self.in_data = True
                self.carry = b"\r\n"  # the data starts at a line start
                break
            elif verb == b"BDAT":
                self.bdat_left = int(line.split()[1])
                if self.bdat_left == 0:
                    out.append(b"250 2.0.0 OK\r\n")
                    continue
                self.buf = buf
                if out:
                    self.transport.write(b"".join(out))  # type: ignore[union-attr]
                rest, self.buf = self.buf, b""
                rest = self._chunk(rest)
                if rest:
                    self.buf = rest
                    self._commands()
                return
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 bye\r\n")
                self.transport.write(b"".join(out))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
            else:
                out.append(b"500 5.5.2 what?\r\n")
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]
        if self.in_data and self.buf:
            rest, self.buf = self.buf, b""
            self._data(rest)

    def _chunk(self, data: bytes) -> bytes:
        """Take the current BDAT chunk's octets from ``data``; return what follows them."""
        take = min(self.bdat_left, len(data))
        self.bdat_left -= take
        if self.bdat_left == 0:
            self.transport.write(b"250 2.0.0 OK\r\n")  # type: ignore[union-attr]
        return data[take:]

    def _data(self, data: bytes) -> None:
        window = self.carry + data
        i = window.find(END)
        if i < 0:
            self.carry = window[-4:]
            return
        self.in_data = False
        self.carry = b""
        self.transport.write(b"250 2.0.0 OK: discarded\r\n")  # type: ignore[union-attr]
        self.buf = window[i + len(END) :]
        if self.buf:
            self._commands()


class RawSink(asyncio.Protocol):
    """ "N\\r\\n" then N bytes, then "OK\\r\\n"; repeat."""

    def __init__(self) -> None:
        self.head = b""
        self.left = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        while data:
            if self.left < 0:
                self.head += data
                i = self.head.find(b"\r\n")
                if i < 0:
                    return
                self.left = int(self.head[:i])
                data, self.head = self.head[i + 2 :], b""
            take = min(self.left, len(data))
            self.left -= take
            data = data[take:]
            if self.left == 0:
                self.left = -1
                self.transport.write(b"OK\r\n")  # type: ignore[attr-defined]


def legacy_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("AES128-SHA:AES256-SHA:@SECLEVEL=0")
    context.load_cert_chain(cert, key)
    return context


def modern_context(cert: str, key: str, server_order: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if not server_order:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert, key)
    return context


async def main(cert: str, key: str) -> None:
    loop = asyncio.get_running_loop()
    tls = legacy_context(cert, key)
    modern = modern_context(cert, key, server_order=False)
    factories = {
        "smtp": (lambda: SmtpSink(False), None),
        "smtp_pipe": (lambda: SmtpSink(True), None),
        "smtp_tls": (lambda: SmtpSink(True), tls),
        "smtp_tls_modern": (lambda: SmtpSink(True), modern),
        "smtp_tls_server_order": (lambda: SmtpSink(True), modern_context(cert, key, server_order=True)),
        "smtp_chunking": (lambda: SmtpSink(True, chunking=True), None),
        "raw": (RawSink, None),
        "raw_tls": (RawSink, tls),
        "raw_tls_modern": (RawSink, modern),
    }
    ports = {}
    for name, (factory, context) in factories.items():
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=context, backlog=4096)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
