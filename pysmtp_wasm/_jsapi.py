"""The Python side of the JavaScript ``SmtpClient`` class (web/src/loader.js).

One :class:`JsClient` per JS client, for the JS client's whole life: it decides what a call
on a closed client does (``sendMail`` connects again, the rest are refused), so no JavaScript
does. JS calls its methods with JS values; it converts them once at the boundary (objects to
dicts, ``Uint8Array`` to bytes) and calls the page's ``on*`` callbacks on the JS object with
JS values (arrays, plain objects, ``Error`` objects carrying the fields of boundary.json). The
JS object holds this one as a PyProxy (freed with it); this one holds the JS object only while
a connection is live (from the first call to ``onclose``, or the end of a ``sendMail`` that
outlived it), so no cycle outlives the connection.

Expected failures do not cross the boundary as exceptions: a method returns the JS ``Error``
and the JS side throws it. (An exception that reaches JS stays in ``sys.last_exc`` with its
frames, and would keep a closed client alive until the next one.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import js  # type: ignore[import-not-found]
from pyodide.ffi import jsnull, to_js  # type: ignore[import-not-found]

from . import _browser
from ._boundary import ERROR_FIELDS
from ._client import SmtpClient, _noop
from ._events import RecipientResult
from ._usage import option_grammar as _option_grammar
from ._usage import usage_rules as _usage_rules
from .errors import SmtpError, SmtpUsageError

# JsClient objects alive (not yet released after onclose), for leak checks.
live_clients = 0

_from_entries = js.Object.fromEntries  # looked up once: each js.<name> is an FFI call

# At most this many values go to JS as a call's arguments (onready's refused recipients, ondone's
# results: web/src/client.js); more go as one converted array (a JS call's arguments are bounded:
# 65,536 in WebKit).
PLAIN_MAX = 1000


def _py(value: Any) -> Any:
    """A JS value as Python: objects to dicts, arrays to lists, functions kept as they are."""
    # (Not isinstance(value, JsProxy): that check runs Python code in Pyodide's metaclass.)
    to_py = getattr(value, "to_py", None)
    if to_py is not None and not callable(value):
        return to_py()
    return value


def js_error(error: BaseException) -> Any:
    """A JS ``Error`` for a Python error, with the SMTP evidence as properties (the fields of
    boundary.json): ``code``, ``enhanced`` and ``stage`` are ``null`` where there is none (as
    docs/api.md and the .d.ts say), and ``proxyReason`` is there when a proxy said why it refused
    (an attribute only such errors have)."""
    err = js.Error.new(str(error))
    err.name = type(error).__name__
    if isinstance(error, SmtpError):
        for js_field, attribute in ERROR_FIELDS.items():
            if hasattr(error, attribute):
                value = getattr(error, attribute)
                setattr(err, js_field, jsnull if value is None else value)
    return err


def _results(results: list[RecipientResult]) -> Any:
    return to_js(
        [
            {
                "recipient": r.recipient,
                "accepted": r.accepted,
                "code": r.code,
                "message": r.message,
                "enhanced": jsnull if r.enhanced is None else r.enhanced,
            }
            for r in results
        ],
        dict_converter=_from_entries,
    )


def _flat_results(results: list[RecipientResult]) -> list[Any]:
    """The results as five plain values per recipient, for the JS side to make the objects
    (web/src/client.js ``resultsOf``): plain values cross the FFI as they are."""
    flat: list[Any] = []
    for r in results:
        flat += r  # (a named tuple of those five, in that order)
    return flat


def create_client(host: Any, port: Any, options: Any, target: Any) -> Any:
    """A :class:`JsClient` for the JS object ``target``, or the JS Error if the arguments are wrong."""
    # Host and port as given: SmtpClient checks them (a host with a control character, a port
    # that is not a whole number from 1 to 65535) and says what is wrong.
    args = (host or "localhost", port or None, _py(options) or {})
    try:
        client = _make_client(args)
    except SmtpError as error:
        return js_error(error)
    except (TypeError, ValueError) as error:
        return js_error(SmtpUsageError(f"new SmtpClient(host, port, options): {error}"))
    return JsClient(args, client, target)


def _make_client(args: tuple[Any, Any, dict[str, Any]]) -> SmtpClient:
    host, port, options = args
    return SmtpClient(host, port, dict(options))


class JsClient:
    """The Python side of one JS ``SmtpClient`` (``target``), for its whole life: an
    :class:`SmtpClient` per connection, made again by ``sendMail`` after one has closed."""

    def __init__(self, args: tuple[Any, Any, dict[str, Any]], client: SmtpClient, target: Any) -> None:
        self._args = args
        self._client: SmtpClient | None = client
        self._last_results: list[RecipientResult] = []
        self._target: Any = None
        self._fire: Any = None
        self._logging = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._attach(target)

    def _attach(self, target: Any) -> SmtpClient:
        """Hold the JS object while a connection is live (its callbacks are called), with an
        SmtpClient for that connection (a new one after the last closed)."""
        global live_clients
        client = self._client
        if client is None:
            client = self._client = _make_client(self._args)
        if self._target is not None:
            return client
        live_clients += 1
        self._target = target
        # target._fire(name, ...args) calls the page's current callback of that name: one FFI
        # call, where target.onidle() would be two (the lookup, then the call).
        fire = self._fire = target._fire
        client.onidle = lambda: fire("onidle")
        # onready and ondone with plain values only (no to_js, no proxies): web/src/client.js
        # makes the array and the result objects.
        # (Beyond PLAIN_MAX values, as converted arrays: a call's arguments are bounded in JS.)
        ready, done = target._ready, target._done

        def onready(failed: list[str]) -> None:
            if len(failed) <= PLAIN_MAX:
                ready(*failed)
            else:
                fire("onready", to_js(failed))

        def ondone(success: bool) -> None:
            flat = _flat_results(client.lastResults)
            if len(flat) <= PLAIN_MAX:
                done(success, *flat)
            else:
                fire("ondone", success, _results(client.lastResults))

        client.onready = onready
        client.ondone = ondone
        client.onerror = lambda error: fire("onerror", js_error(error))
        client.ondrain = lambda: fire("ondrain")
        client.onclose = self._onclose
        self.set_logging(self._logging)
        target._attached()
        return client

    def _detach(self) -> None:
        """After the connection's onclose: let go of the JS object and of the connection's
        SmtpClient (its lastResults kept): nothing of the page, nor of the connection, is held."""
        global live_clients
        target, self._target = self._target, None
        client, self._client = self._client, None
        self._fire = None
        if client is not None:
            self._last_results = client.lastResults
            client.onidle = client.ondrain = _noop
            client.onready = client.ondone = client.onerror = client.onclose = client.onlog = _noop
        if target is not None:
            live_clients -= 1
            target._released()

    def set_logging(self, on: bool) -> None:
        """The page set (or removed) ``onlog``: only then does each transcript line cross to JS."""
        self._logging = bool(on)
        fire, client = self._fire, self._client
        if client is None:
            return
        if self._logging and fire is not None:
            client.onlog = lambda direction, text: fire("onlog", direction, text)
        else:
            client.onlog = _noop

    def _onclose(self, is_error: bool) -> None:
        target = self._target
        try:
            target.onclose(is_error)
        finally:
            if not self._tasks:  # a sendMail still running settles first (and may connect again)
                self._detach()

    def _live(self, name: str) -> SmtpClient:
        """The connection's client, or the refusal of a call after it closed (sendMail alone
        connects again)."""
        if self._client is None or self._target is None:
            raise SmtpUsageError(f"{name}() is not possible: the connection is closed")
        return self._client

    # -- the seed's methods, called from JS: each returns a JS Error instead of raising ------

    def connect(self) -> Any:
        return _returning_errors(lambda: self._live("connect").connect())

    def useEnvelope(self, envelope: Any) -> Any:  # noqa: N802 - the seed's name
        return _returning_errors(lambda: self._live("useEnvelope").useEnvelope(_py(envelope)))

    def use_envelope_plain(self, sender: str | None, size: int | None, *to: str) -> Any:
        """``useEnvelope`` of the usual envelope, its fields as plain values (web/src/client.js
        ``plainEnvelope``): the same as :meth:`useEnvelope` of that object, without converting it."""
        envelope: dict[str, Any] = {"to": to}  # (a tuple: the engine takes a list or a tuple)
        if sender is not None:
            envelope["from"] = sender
        if size is not None:
            envelope["size"] = size
        # (_returning_errors, inline: a lambda and a call less for the calls of every message)
        try:
            self._live("useEnvelope").useEnvelope(envelope)
        except SmtpError as error:
            return js_error(error)
        return None

    def send(self, chunk: Any) -> Any:
        # The JS side turns strings into a Uint8Array, so this is a JS buffer's proxy.
        # (A JS number arrives as int, which has a to_bytes() of its own.)
        try:
            if isinstance(chunk, (int, float)):
                raise TypeError
            data = chunk.to_bytes()
        except Exception:
            return js_error(SmtpUsageError("send() takes a string, a Uint8Array or an ArrayBuffer"))
        try:
            return self._live("send").send(data)
        except SmtpError as error:
            return js_error(error)

    def end(self) -> Any:
        try:
            self._live("end").end()
        except SmtpError as error:
            return js_error(error)
        return None

    def quit(self) -> Any:
        return _returning_errors(lambda: self._live("quit").quit())

    def close(self) -> Any:
        if self._client is None or self._target is None:
            return None  # closed already: nothing to do
        return _returning_errors(self._client.close)

    def send_mail(self, mail: Any, options: Any, resolve: Any, reject: Any, target: Any) -> Any:
        """``sendMail(mail, {onprogress})``: build the MIME message with Python's ``email``
        package, send it, and settle the JS promise through ``resolve``/``reject``. On a
        closed (or closing) connection, the client connects again once it has closed: the JS
        object ``target`` is held again for that."""
        from ._message import build_message

        fields = _py(mail) or {}
        dsn = fields.pop("dsn", None) if isinstance(fields, dict) else None
        try:
            message = build_message(fields)
        except SmtpError as error:
            return js_error(error)
        except (TypeError, ValueError, AttributeError) as error:
            return js_error(SmtpUsageError(f"sendMail(): {error}", stage="message"))
        onprogress = (_py(options) or {}).get("onprogress")
        # A connection that is ending (an error, quit() or close()) while another sendMail runs
        # on it: this one starts once that one has settled (then the client connects again).
        client = self._client
        ending = client is not None and (client._closed or client.state in ("quit", "closed"))
        after = tuple(self._tasks) if ending else ()
        try:
            self._attach(target)
        except SmtpError as error:
            return js_error(error)
        task = asyncio.ensure_future(
            self._send_mail(message, onprogress, dsn, resolve, reject, target, after)
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return None

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        client = self._client
        if not self._tasks and client is not None and client._closed:  # (SmtpClient: the connection ended)
            self._detach()  # the connection ended while it ran: its onclose has been called

    async def _send_mail(
        self, message: Any, onprogress: Any, dsn: Any, resolve: Any, reject: Any, target: Any, after: Any
    ) -> None:
        progress = (lambda sent, total: onprogress(sent, total)) if onprogress is not None else None
        try:
            if after:
                await asyncio.wait(after)
            client = self._attach(target)  # again, if the one before ended the connection
            result = await client.send_message(message, progress=progress, dsn=dsn)
        except Exception as error:
            reject(js_error(error))
            return
        resolve(
            to_js(
                {
                    "accepted": result.accepted,
                    "rejected": result.rejected,
                    "results": _results(result.results),
                    "messageId": result.message_id,
                    "size": result.size,
                },
                dict_converter=_from_entries,
            )
        )

    @property
    def state(self) -> str:
        return self._client.state if self._client is not None and self._target is not None else "closed"

    @property
    def lastResults(self) -> Any:  # noqa: N802 - the seed's style of name
        """The last message's results, one per recipient (what ``ondone`` gets); kept after
        the connection closed (a new connection starts empty)."""
        client = self._client
        # (A JS array of plain values: web/src/client.js makes the objects, as for ondone.)
        return to_js(_flat_results(client.lastResults if client is not None else self._last_results))


def _returning_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except SmtpError as error:
        return js_error(error)


def counters() -> Any:
    """Live objects at the boundary, for leak checks: socket callback proxies and clients."""
    return to_js(
        {"socketProxies": _browser.live_proxies, "clients": live_clients},
        dict_converter=_from_entries,
    )


def usage_rules() -> Any:
    """For the page's side of a Worker: which call each state allows (``_usage.py``)."""
    return to_js(_usage_rules(), dict_converter=_from_entries)


def option_grammar() -> Any:
    """For the page's side of a Worker: the options the constructor takes (``_usage.py``)."""
    return to_js(_option_grammar(_browser.OPTION_NAMES), dict_converter=_from_entries)
