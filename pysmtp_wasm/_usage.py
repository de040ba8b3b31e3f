"""Which of the seed's calls each state allows, and which options the constructor takes, as
data: for the page's side of a Worker.

In worker mode (``PySmtp.load({worker: true})``) the engine runs in a Worker and the page
cannot ask it anything synchronously, yet a call in the wrong state must still throw at once,
and so must a constructor argument the engine refuses (``requireTls``, a typo). So the page is
given two tables when the Worker has booted:

* for every state, every call's :class:`SmtpUsageError` message and stage (the engine's own, from
  the table it enforces: ``_state.CALLS``) or, when the call is allowed, the
  state the page should assume until the Worker's next event says otherwise;
* the options' grammar: each name's kind and allowed values, and the engine's own words for
  each refusal (got by asking :func:`parse_options` with probe values).

The rules stay in Python; JavaScript only looks them up. What the page cannot tell from the
grammar, the Worker still refuses, and a connection already asked for then ends in ``onerror``
and ``onclose``.
"""

from __future__ import annotations

from typing import Any

from ._options import _BOOLS, _CREDENTIAL_FORBIDDEN, _KEYS, _NUMBERS, TRANSPORT_VALUES, parse_options
from ._sasl import MECHANISMS
from ._state import BEFORE_CONNECT, CALLS, CONNECT_AGAIN, State
from .errors import SmtpUsageError

# (the SmtpUsageError's message and stage, or None and None; the next state, or None)
Rule = tuple[str | None, str | None, str | None]


def usage_rules() -> dict[str, dict[str, Rule]]:
    """``{state: {call: (error message, its stage, next state)}}`` for the seed's calls
    that depend on the state (``close()`` never does), ``"new"`` being a client not yet
    connected."""
    rules: dict[str, dict[str, Rule]] = {
        "new": {
            "connect": (None, None, State.CONNECTING.value),
            **{call: (BEFORE_CONNECT.format(call=call), None, None) for call in CALLS},
        }
    }
    for state in State:
        rule: dict[str, Rule] = {"connect": (CONNECT_AGAIN, None, None)}
        for call, table in CALLS.items():
            error = table.refusal(state)
            if error is not None:
                rule[call] = (str(error), error.stage, None)
            else:
                after = table.allowed[state]
                rule[call] = (None, None, after.value if after is not None else None)
        rules[state.value] = rule
    return rules


# A value the engine's messages quote, replaced by a placeholder in the templates below.
_PROBE = "zz-probe-zz"


def _refusal(raw: dict[str, Any], transport_keys: frozenset[str]) -> str:
    """The engine's words refusing ``raw`` (each probe below is one it refuses)."""
    try:
        parse_options(raw, transport_keys)
    except SmtpUsageError as error:
        return str(error)
    raise AssertionError(f"parse_options accepted {raw!r}: _usage.option_grammar is out of date")


def option_grammar(transport_keys: frozenset[str]) -> dict[str, Any]:
    """``{"kinds": {option: kind}, "choices": {option: [values]}, "upper": [options],
    "messages": {...}, "contradictions": [[a, b, message]], "credentialForbidden": {char:
    name}}`` for ``new SmtpClient(host, port,
    options)``.

    Kinds: "boolean" (any value, taken for its truth), "milliseconds", "choice" (one of
    ``choices``; compared in upper case for the options in ``upper``), "name" (the EHLO name),
    "ca", "auth", and "proxy" (the page checks the URL itself: ``PySmtpSocket.check``). Each
    message is the engine's own: ``{key}``, ``{value}`` and ``{fields}`` mark where it quotes
    the option, the value (as Python's ``repr``) or the unknown auth fields.
    """

    def refusal(raw: dict[str, Any]) -> str:
        return _refusal(raw, transport_keys)

    probe = repr(_PROBE)
    kinds: dict[str, str] = {}
    messages: dict[str, str] = {
        "unknown": refusal({_PROBE: 1}).replace(probe, "{key}"),
        "name": refusal({"name": _PROBE + " "}).replace(repr(_PROBE + " "), "{value}"),
        "ca": refusal({"ca": 1}),
        "auth": refusal({"auth": 1}),
        "auth.fields": refusal({"auth": {"user": "u", "pass": "p", _PROBE: 1}}).replace(_PROBE, "{fields}"),
        "auth.user": refusal({"auth": {"user": 1, "pass": "p"}}),
        "auth.pass": refusal({"auth": {"user": "u", "pass": 1}}),
        "auth.xoauth2": refusal({"auth": {"user": "u", "xoauth2": 1}}),
        "auth.secret": refusal({"auth": {"user": "u"}}),
        # A credential with a character that would end or split the AUTH line, or a lone
        # surrogate: {field} is "user", "pass" or "xoauth2", {what} the character's name.
        "auth.forbidden": refusal({"auth": {"user": "u", "pass": "p\r"}})
        .replace("auth.pass", "auth.{field}")
        .replace(_CREDENTIAL_FORBIDDEN["\r"], "{what}"),
        "auth.surrogate": refusal({"auth": {"user": "u", "pass": "p\ud800"}}).replace(
            "auth.pass", "auth.{field}"
        ),
    }
    choices: dict[str, list[str]] = {"authMethod": list(MECHANISMS)}
    for key, attr in _KEYS.items():
        if attr in _BOOLS:
            kinds[key] = "boolean"
        elif attr in _NUMBERS:
            kinds[key] = "milliseconds"
            messages[key] = refusal({key: -1})
        elif key in ("name", "ca"):
            kinds[key] = key
        elif key == "authMethod":
            kinds[key] = "choice"
            messages[key] = refusal({key: _PROBE}).replace(probe, "{value}")
        else:  # pragma: no cover - an option added to _options without a kind here
            raise AssertionError(f"option {key} has no kind in _usage.option_grammar")
    kinds["auth"] = "auth"
    for key in sorted(transport_keys):
        if key in TRANSPORT_VALUES:
            kinds[key] = "choice"
            choices[key] = list(TRANSPORT_VALUES[key])
            messages[key] = refusal({key: _PROBE}).replace(probe, "{value}")
        else:
            kinds[key] = "proxy" if key == "proxy" else "any"
    return {
        "kinds": kinds,
        "credentialForbidden": dict(_CREDENTIAL_FORBIDDEN),
        "choices": choices,
        "upper": ["authMethod"],
        "messages": messages,
        "contradictions": [["ignoreTLS", "requireTLS", refusal({"ignoreTLS": True, "requireTLS": True})]],
    }
