"""The browser transport: the JS socket adapter (``globalThis.PySmtpSocket``, from web/src/socket.js)
seen from Python inside Pyodide.

The socket speaks raw TCP through a WebSocket-to-TCP proxy (websockify) and does TLS in
JavaScript. This module only moves bytes across the FFI. Up to ``TEXT_MAX`` bytes (a reply, a
command) cross as a binary string, a char a byte: a string crosses with the call itself. More
cross as buffers: out through one reused ``Uint8Array`` per connection (the socket copies what
it is given before ``send`` returns), an ``ArrayBuffer`` in. A read is one call (the socket's
``onreceive``): its bytes in, and the client's first write meanwhile (the next command) back as
its result; later writes of the same call (what the page's callbacks sent) go out through
``send`` or ``sendText``, and the socket gathers them all into one WebSocket message. The
socket's six callbacks are proxies made once per connection and destroyed when it ends
(``live_proxies`` counts them, so tests can show none leak).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import js  # type: ignore[import-not-found]
from pyodide.ffi import JsException, create_proxy, to_js  # type: ignore[import-not-found]

from ._boundary import js_name
from ._transport import LoopTransport, TransportOwner
from .errors import SmtpConnectionError, SmtpError, SmtpTlsError, SmtpUsageError

if TYPE_CHECKING:
    from ._options import Options

# Options this transport reads from SmtpClient's options.
OPTION_NAMES = frozenset({"proxy", "tlsEngine"})

# The initial size of a connection's write buffer (it grows to the largest write), and how
# many views of it (by length) are kept.
WRITE_BUFFER = 64 * 1024
MAX_VIEWS = 32

# Received segments and answers up to this size cross the FFI as binary strings (a char a
# byte): a string crosses with the call itself, where a buffer needs one more call to be read
# (``to_bytes()`` in, ``assign()`` out). (web/src/socket.js TEXT_MAX is the same.)
TEXT_MAX = 256

# Proxies created for socket callbacks and not yet destroyed, in this whole page.
live_proxies = 0


def _negotiated(event: Any) -> str | None:
    """What TLS the socket negotiated, for the transcript: "TLS 1.3, TLS_AES_256_GCM_SHA384 (openssl)"."""
    tls = getattr(event, "tls", None)
    if not tls:
        return None
    cipher = getattr(tls, "cipher", None)
    return f"{tls.protocol}{', ' + str(cipher) if cipher else ''} ({tls.engine})"


def _js_error(event: Any) -> SmtpError:
    """The socket's error as ours. Its message says what happened in its own words (it names
    the proxy, and the server only where the proxy said which). A proxy's reason for refusing
    (close codes 4000-4999) is kept as ``proxy_reason`` (``proxyReason`` in JS)."""
    error = getattr(event, "data", None)
    name = str(getattr(error, "name", "") or "")
    message = str(getattr(error, "message", "") or error or "socket error")
    if name == "TLSError":
        return SmtpTlsError(message, stage="tls")
    result = SmtpConnectionError(message, stage="connect")
    reason = getattr(error, js_name("proxy_reason"), None)
    if reason is not None:
        result.proxy_reason = str(reason)  # type: ignore[attr-defined]
    return result


class BrowserTransport(LoopTransport):
    """A transport on ``PySmtpSocket``; timers run on Pyodide's event loop (setTimeout)."""

    OPTION_NAMES = OPTION_NAMES

    def __init__(self, owner: TransportOwner) -> None:
        self._owner = owner
        self._loop = asyncio.get_event_loop()
        self._socket: Any = None
        self._proxies: list[Any] = []
        self._closed = False
        self._reported = False
        self._host = ""
        self._port = 0
        # The JS buffer each write is copied into: ``to_js(bytes)`` would make a new
        # Uint8Array per write (JS garbage, and a fixed cost several times that of a copy).
        # Views of its first N bytes are kept by N: a session's commands repeat their sizes,
        # and each FFI call saved is a few microseconds of every reply's turnaround.
        self._buffer: Any = None
        self._buffer_size = 0
        self._views: dict[int, Any] = {}
        self._send: Any = None  # the socket's send and sendText, looked up once
        self._send_text: Any = None
        # While a received segment is processed (``_on_receive``), the first write (the answer:
        # the next command) is held here and handed back to the socket as the call's result, a
        # call across the FFI less; a second write sends it first. (The socket gathers the
        # writes of one turn into one WebSocket message either way.)
        self._receiving = False
        self._answer: bytes | None = None

    def open(
        self, host: str, port: int, *, secure: bool, ca: str | list[str] | None, options: dict[str, Any]
    ) -> None:
        self._host, self._port = host, port
        socket_class = getattr(js, "PySmtpSocket", None)
        if socket_class is None:
            self._fail_soon(
                SmtpConnectionError(
                    "no browser socket: load dist/pysmtp-wasm.js (PySmtp.load) before connecting",
                    stage="connect",
                )
            )
            return
        js_options = js.Object.new()  # the socket fills in PySmtpSocket.defaults itself
        for name in OPTION_NAMES:
            if options.get(name) is not None:
                setattr(js_options, name, options[name])
        js_options.useSecureTransport = secure
        if ca is not None:
            js_options.ca = to_js(ca)
        try:
            sock = socket_class.open(host, port, js_options)
        except JsException as error:
            message = str(getattr(error, "message", "") or error)
            self._fail_soon(SmtpConnectionError(f"cannot open a connection: {message}", stage="connect"))
            return
        self._socket = sock
        self._send, self._send_text = sock.send, sock.sendText
        self._listen("onopen", self._on_open)
        self._listen("onreceive", self._on_receive)
        self._listen("onsecure", self._on_secure)
        self._listen("ondrain", self._on_drain)
        self._listen("onerror", self._on_error)
        self._listen("onclose", self._on_close)

    @staticmethod
    def check_options(host: str, port: int, options: Options) -> None:
        """Refuse, when the client is made, what the socket would refuse at ``connect()``: the
        proxy (missing, not a ``ws://``/``wss://`` URL), ``ca`` (no PEM certificate in it), the
        host (a control character), the port. A proxy function is called here, once: its URL
        is what every connection of this client uses."""
        socket_class = getattr(js, "PySmtpSocket", None)
        if socket_class is None:
            return  # connect() reports it
        extra = options.extra
        proxy = extra.get("proxy")
        if proxy is None:
            proxy = getattr(getattr(socket_class, "defaults", None), "proxy", None)
        if callable(proxy):
            try:
                proxy = proxy(host, port)
            except Exception as error:  # noqa: BLE001 - the page's function: any failure is the page's
                message = getattr(error, "message", None) or error
                raise SmtpUsageError(f"option proxy: the function threw: {message}") from None
            extra["proxy"] = proxy
        js_options = js.Object.new()
        if proxy is not None:
            js_options.proxy = proxy
        if extra.get("tlsEngine") is not None:
            js_options.tlsEngine = extra["tlsEngine"]
        if options.ca is not None:
            js_options.ca = to_js(options.ca)
        problem = socket_class.check(host, port, js_options)
        if problem:
            raise SmtpUsageError(str(problem))

    def stays_local(self) -> bool:
        """Never, in the page: where the bytes go is the proxy's choice (its target, or the one
        its token names), not the host the page gives, and the page cannot see it. Cleartext
        AUTH there takes ``allowInsecureAuth: true``."""
        return False

    def write(self, data: bytes) -> bool:
        if self._receiving and self._answer is None:
            self._answer = data
            return True
        if self._socket is None or self._closed:
            return True
        if self._answer is not None:
            self._send_answer()
        return bool(self._transmit(data))

    def _send_answer(self) -> None:
        """Send the held answer now (a second write came, or a close or STARTTLS)."""
        answer, self._answer = self._answer, None
        if answer is not None and self._socket is not None and not self._closed:
            self._transmit(answer)

    def _transmit(self, data: bytes) -> Any:
        """The socket's send of ``data``, in the form :meth:`_wire` gives it."""
        wire = self._wire(data)
        return self._send_text(wire) if type(wire) is str else self._send(wire)

    def _wire(self, data: bytes) -> Any:
        """``data`` as it crosses to the socket: a binary string up to TEXT_MAX bytes, else the
        write buffer's view."""
        return data.decode("latin-1") if len(data) <= TEXT_MAX else self._view(data)

    def _view(self, data: bytes) -> Any:
        """The write buffer's first ``len(data)`` bytes, holding ``data``."""
        size = len(data)
        view = self._views.get(size)
        if view is None:
            if size > self._buffer_size:
                self._buffer_size = max(size, WRITE_BUFFER)
                self._buffer = js.Uint8Array.new(self._buffer_size)
                self._views.clear()
            elif len(self._views) >= MAX_VIEWS:
                self._views.clear()
            view = self._views[size] = self._buffer.subarray(0, size)
        view.assign(data)
        return view

    def start_tls(self) -> None:
        if self._socket is not None and not self._closed:
            self._send_answer()  # (nothing, in SMTP: STARTTLS's reply is the last word)
            self._socket.upgradeToSecure()

    def close(self) -> None:
        if self._socket is not None and not self._closed:
            self._send_answer()  # a QUIT written just before
            self._socket.close()  # onclose follows
        elif self._socket is None:
            self._report_closed()

    # -- the socket's events --------------------------------------------------------------------

    def _listen(self, name: str, handler: Callable[[Any], None]) -> None:
        global live_proxies
        proxy = create_proxy(handler)
        live_proxies += 1
        self._proxies.append(proxy)
        setattr(self._socket, name, proxy)

    def _on_open(self, event: Any) -> None:
        self._owner._transport_open(_negotiated(event))

    def _on_receive(self, data: Any) -> Any:
        """The socket's ``onreceive``: received bytes in (a binary string up to TEXT_MAX bytes,
        else a buffer), the bytes to write in answer out (likewise a binary string or the write
        buffer's view, or None), callbacks fired on the way as ever."""
        self._receiving = True
        try:
            self._owner._transport_data(data.encode("latin-1") if type(data) is str else data.to_bytes())
        finally:
            self._receiving = False
        answer = self._answer
        if answer is None:
            return None
        self._answer = None
        if self._socket is None or self._closed:
            return None
        return self._wire(answer)

    def _on_secure(self, event: Any) -> None:
        self._owner._transport_tls(_negotiated(event))

    def _on_drain(self, event: Any) -> None:
        self._owner._transport_drain()

    def _on_error(self, event: Any) -> None:
        self._owner._transport_error(_js_error(event))

    def _on_close(self, event: Any) -> None:
        self._closed = True
        # The proxy now running is one of ours: they are all destroyed once this call has
        # returned, and only then is the close reported, so that the page, when it hears
        # onclose, finds nothing of the connection left (live_proxies back where it was).
        self._loop.call_soon(self._release_and_report)

    def _release_and_report(self) -> None:
        self._release()
        self._report_closed()

    def _release(self) -> None:
        global live_proxies
        sock, self._socket = self._socket, None
        if sock is not None:
            for name in ("onopen", "onreceive", "onsecure", "ondrain", "onerror", "onclose"):
                setattr(sock, name, None)
        for proxy in self._proxies:
            proxy.destroy()
            live_proxies -= 1
        self._proxies.clear()
        self._buffer = self._send = self._send_text = None
        self._buffer_size = 0
        self._views.clear()

    def _fail_soon(self, error: SmtpError) -> None:
        def fail() -> None:
            self._owner._transport_error(error)
            self._report_closed()

        self._loop.call_soon(fail)

    def _report_closed(self) -> None:
        if not self._reported:
            self._reported = True
            self._owner._transport_closed()
