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
  each refusal (``_options.OPTIONS`` and ``MESSAGES``, the table :func:`parse_options` reads).

The rules stay in Python; JavaScript only looks them up. What the page cannot tell from the
grammar, the Worker still refuses, and a connection already asked for then ends in ``onerror``
and ``onclose``.
"""

from __future__ import annotations

from typing import Any

from ._options import (
    CONTRADICTIONS,
    CREDENTIAL_FORBIDDEN,
    MESSAGES,
    OPTIONS,
    TRANSPORT_VALUES,
    choice_message,
    fill,
    known_options,
)
from ._state import BEFORE_CONNECT, CALLS, CONNECT_AGAIN, State

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


def option_grammar(transport_keys: frozenset[str]) -> dict[str, Any]:
    """``{"kinds": {option: kind}, "choices": {option: [values]}, "upper": [options],
    "messages": {...}, "contradictions": [[a, b, message]], "credentialForbidden": {char: name}}``
    for ``new SmtpClient(host, port, options)``: ``_options.OPTIONS`` and ``MESSAGES`` as data.

    Kinds: those of :class:`_options.Option`, "auth", "proxy" (the page checks the URL itself:
    ``PySmtpSocket.check``) and "any". Each message is the engine's own, with ``{key}``,
    ``{value}`` (as Python's ``repr``), ``{fields}``, ``{field}`` and ``{what}`` left where the
    page puts in the option, the value, the unknown auth fields, the credential's field and
    the character's name.
    """
    kinds: dict[str, str] = {option.key: option.kind for option in OPTIONS}
    kinds["auth"] = "auth"
    choices = {option.key: list(option.choices) for option in OPTIONS if option.kind == "choice"}
    messages = {
        "unknown": fill(MESSAGES["unknown"], known=known_options(transport_keys)),
        **{name: MESSAGES[name] for name in ("name", "ca", "auth", "auth.fields", "auth.user")},
        **{name: MESSAGES[name] for name in ("auth.pass", "auth.xoauth2", "auth.secret")},
        # A credential with a character that would end or split the AUTH line ({what}: its
        # name in CREDENTIAL_FORBIDDEN), or a lone surrogate; {field}: user, pass or xoauth2.
        **{name: MESSAGES[name] for name in ("auth.forbidden", "auth.surrogate")},
    }
    for option in OPTIONS:
        if option.kind == "milliseconds":
            messages[option.key] = fill(MESSAGES["milliseconds"], key=option.key)
        elif option.kind == "choice":
            messages[option.key] = choice_message(option.key, option.choices)
    for key in sorted(transport_keys):
        if key in TRANSPORT_VALUES:
            kinds[key] = "choice"
            choices[key] = list(TRANSPORT_VALUES[key])
            messages[key] = choice_message(key, TRANSPORT_VALUES[key])
        else:
            kinds[key] = "proxy" if key == "proxy" else "any"
    return {
        "kinds": kinds,
        "credentialForbidden": dict(CREDENTIAL_FORBIDDEN),
        "choices": choices,
        "upper": [option.key for option in OPTIONS if option.upper],
        "messages": messages,
        "contradictions": [[a, b, fill(MESSAGES["contradiction"], a=a, b=b)] for a, b in CONTRADICTIONS],
    }
