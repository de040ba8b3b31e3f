"""Which of the seed's calls each state allows, as data: for the page's side of a Worker.

In worker mode (``PySmtp.load({worker: true})``) the engine runs in a Worker and the page
cannot ask it anything synchronously, yet a call in the wrong state must still throw at once.
So the page is given this table when the Worker has booted: for every state, every call's
:class:`SmtpUsageError` message and stage (the engine's own, from the table it enforces:
``_state.CALLS``) or, when the call is allowed, the state the page should assume until the
Worker's next event says otherwise. The rules stay in Python; JavaScript only looks them up.
"""

from __future__ import annotations

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
