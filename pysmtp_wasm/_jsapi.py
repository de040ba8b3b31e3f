"""The Python side of the JavaScript ``SmtpClient`` class (web/src/loader.js).

One :class:`JsClient` per JS client. JS calls its methods with JS values; it converts them
once at the boundary (objects to dicts, ``Uint8Array`` to bytes) and calls the page's ``on*``
callbacks on the JS object with JS values (arrays, plain objects, ``Error`` objects carrying
``code``, ``enhanced``, ``stage`` and ``fatal``). The JS object holds this one as a PyProxy
and destroys it after ``onclose``; Python holds the JS object, so no cycle outlives the
connection.

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
from ._client import SmtpClient, _noop
from ._events import RecipientResult
from ._usage import option_grammar as _option_grammar
from ._usage import usage_rules as _usage_rules
from .errors import SmtpError, SmtpUsageError

# JsClient objects alive (not yet released after onclose), for leak checks.
live_clients = 0

_from_entries = js.Object.fromEntries  # looked up once: each js.<name> is an FFI call


def _py(value: Any) -> Any:
    """A JS value as Python: objects to dicts, arrays to lists, functions kept as they are."""
    # (Not isinstance(value, JsProxy): that check runs Python code in Pyodide's metaclass.)
    to_py = getattr(value, "to_py", None)
    if to_py is not None and not callable(value):
        return to_py()
    return value


def js_error(error: BaseException) -> Any:
    """A JS ``Error`` for a Python error, with the SMTP evidence as properties: ``code``,
    ``enhanced`` and ``stage`` are ``null`` where there is none (as the README and the .d.ts
    say), and ``proxyReason`` is there when a proxy said why it refused."""
    err = js.Error.new(str(error))
    err.name = type(error).__name__
    if isinstance(error, SmtpError):
        err.fatal = error.fatal
        for field in ("code", "enhanced", "stage"):
            value = getattr(error, field)
            setattr(err, field, jsnull if value is None else value)
        reason = getattr(error, "proxy_reason", None)
        if reason is not None:
            err.proxyReason = reason
    return err


def _results(results: list[RecipientResult]) -> Any:
    return to_js(
        [
            {
                "recipient": r.recipient,
                "accepted": r.accepted,
                "code": r.code,
                "message": r.message,
                "enhanced": r.enhanced,
            }
            for r in results
        ],
        dict_converter=_from_entries,
    )


def create_client(host: Any, port: Any, options: Any, target: Any) -> Any:
    """A :class:`JsClient` for the JS object ``target``, or the JS Error if the arguments are wrong."""
    try:
        client = SmtpClient(host or "localhost", port or None, _py(options) or {})
    except SmtpError as error:
        return js_error(error)
    except (TypeError, ValueError) as error:
        return js_error(SmtpUsageError(f"new SmtpClient(host, port, options): {error}"))
    return JsClient(client, target)


class JsClient:
    """Holds a :class:`SmtpClient` for one JS ``SmtpClient`` (``target``)."""

    def __init__(self, client: SmtpClient, target: Any) -> None:
        global live_clients
        live_clients += 1
        self._client = client
        self._target = target
        self._tasks: set[asyncio.Future[None]] = set()
        # target._fire(name, ...args) calls the page's current callback of that name: one FFI
        # call, where target.onidle() would be two (the lookup, then the call).
        fire = self._fire = target._fire
        client.onidle = lambda: fire("onidle")
        client.onready = lambda failed: fire("onready", to_js(failed))
        client.ondone = lambda success: fire("ondone", success, _results(client.lastResults))
        client.onerror = lambda error: fire("onerror", js_error(error))
        client.ondrain = lambda: fire("ondrain")
        client.onclose = self._onclose

    def set_logging(self, on: bool) -> None:
        """The page set (or removed) ``onlog``: only then does each transcript line cross to JS."""
        fire = self._fire
        if on and self._target is not None:
            self._client.onlog = lambda direction, text: fire("onlog", direction, text)
        else:
            self._client.onlog = _noop

    def _onclose(self, is_error: bool) -> None:
        global live_clients
        live_clients -= 1
        target, self._target = self._target, None
        try:
            target.onclose(is_error)
        finally:
            target._release()  # the JS side destroys its proxy of us

    # -- the seed's methods, called from JS: each returns a JS Error instead of raising ------

    def connect(self) -> Any:
        return _returning_errors(self._client.connect)

    def useEnvelope(self, envelope: Any) -> Any:  # noqa: N802 - the seed's name
        return _returning_errors(lambda: self._client.useEnvelope(_py(envelope)))

    def send(self, chunk: Any) -> Any:
        # The JS side turns strings into a Uint8Array, so this is a JS buffer's proxy.
        # (A JS number arrives as int, which has a to_bytes() of its own.)
        try:
            if isinstance(chunk, (int, float)):
                raise TypeError
            data = chunk.to_bytes()
        except Exception:
            return js_error(SmtpUsageError("send() takes a string, a Uint8Array or an ArrayBuffer"))
        return _returning_errors(lambda: self._client.send(data))

    def end(self) -> Any:
        return _returning_errors(self._client.end)

    def quit(self) -> Any:
        return _returning_errors(self._client.quit)

    def close(self) -> Any:
        return _returning_errors(self._client.close)

    def send_mail(self, mail: Any, options: Any, resolve: Any, reject: Any) -> Any:
        """``sendMail(mail, {onprogress})``: build the MIME message with Python's ``email``
        package, send it, and settle the JS promise through ``resolve``/``reject``."""
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
        task = asyncio.ensure_future(self._send_mail(message, onprogress, dsn, resolve, reject))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _send_mail(self, message: Any, onprogress: Any, dsn: Any, resolve: Any, reject: Any) -> None:
        progress = (lambda sent, total: onprogress(sent, total)) if onprogress is not None else None
        try:
            result = await self._client.send_message(message, progress=progress, dsn=dsn)
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
        return self._client.state

    @property
    def lastResults(self) -> Any:  # noqa: N802 - the seed's style of name
        """The last message's results, one per recipient (what ``ondone`` gets)."""
        return _results(self._client.lastResults)


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
