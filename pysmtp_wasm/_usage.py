"""Which of the seed's calls each state allows, as data: for the page's side of a Worker.

In worker mode (``PySmtp.load({worker: true})``) the engine runs in a Worker and the page
cannot ask it anything synchronously, yet a call in the wrong state must still throw at once.
So the page is given this table when the Worker has booted: for every state, every call's
:class:`SmtpUsageError` message (the engine's own words, got by asking a throwaway sans-IO
engine, which has no I/O to do) or, when the call is allowed, the state the page should
assume until the Worker's next event says otherwise. The rules stay in Python; JavaScript
only looks them up.
"""

from __future__ import annotations

from ._engine import SmtpEngine, State
from ._options import parse_options
from .errors import SmtpUsageError

# A call that is allowed: the state the page assumes after it (None: unchanged).
_NEXT: dict[str, dict[str, str]] = {
    "useEnvelope": {"idle": State.ENVELOPE.value},
    "end": {"data": State.DATA_END.value},
    "quit": {"idle": State.QUIT.value},
}
_PROBE_ENVELOPE = {"from": "probe@example.com", "to": ["probe@example.com"]}

# (the SmtpUsageError's message and stage, or None and None; the next state, or None)
Rule = tuple[str | None, str | None, str | None]


def _probe(state: State, call: str) -> SmtpUsageError | None:
    """The engine's SmtpUsageError for ``call`` in ``state``, or None if it is allowed."""
    engine = SmtpEngine(parse_options({}), host="localhost")
    engine.state = state
    try:
        if call == "useEnvelope":
            engine.use_envelope(_PROBE_ENVELOPE)
        elif call == "send":
            engine.send(b"")
        elif call == "end":
            engine.end()
        else:
            engine.quit()
    except SmtpUsageError as error:
        return error
    except Exception:  # noqa: BLE001 - past the state check, on an engine with no session
        return None
    return None


def usage_rules() -> dict[str, dict[str, Rule]]:
    """``{state: {call: (error message, its stage, next state)}}`` for the seed's calls
    that depend on the state (``close()`` never does), ``"new"`` being a client not yet
    connected."""
    rules: dict[str, dict[str, Rule]] = {
        "new": {
            "connect": (None, None, State.CONNECTING.value),
            **{
                call: (f"{call}() before connect()", None, None)
                for call in ("useEnvelope", "send", "end", "quit")
            },
        }
    }
    for state in State:
        rule: dict[str, Rule] = {
            "connect": ("connect() was already called; make a new SmtpClient to connect again", None, None)
        }
        for call in ("useEnvelope", "send", "end", "quit"):
            error = _probe(state, call)
            if error is not None:
                rule[call] = (str(error), error.stage, None)
            else:
                rule[call] = (None, None, _NEXT.get(call, {}).get(state.value))
        rules[state.value] = rule
    return rules
