"""The table of which call each state allows (pysmtp_wasm/_usage.py), which the page's side of a
Worker uses to throw at once: it must say what a real engine does in each state it reaches."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pysmtp_wasm import SmtpUsageError
from pysmtp_wasm._usage import usage_rules

from .script import Harness

CALLS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "useEnvelope": ("use_envelope", ({"from": "a@example.com", "to": ["b@example.com"]},)),
    "send": ("send", (b"x",)),
    "end": ("end", ()),
    "quit": ("quit", ()),
}


def reach(state: str) -> Harness:
    """A real session, played up to ``state``."""
    h = Harness()  # the connection is made: waiting for the greeting
    if state == "greeting":
        return h
    h.feed(b"220 hi\r\n")
    if state == "ehlo":
        return h
    h.feed(b"250 hi\r\n")
    if state == "idle":
        return h
    h.call("use_envelope", {"from": "a@example.com", "to": ["b@example.com"]})
    if state == "envelope":
        return h
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    if state == "data":
        return h
    h.call("end")
    if state == "data_end":
        return h
    h.feed(b"250 queued\r\n")
    h.call("quit")
    assert state == "quit"
    return h


@pytest.mark.parametrize("state", ["greeting", "ehlo", "idle", "envelope", "data", "data_end", "quit"])
@pytest.mark.parametrize("call", list(CALLS))
def test_the_table_says_what_the_engine_does(state: str, call: str) -> None:
    h = reach(state)
    assert h.engine.state.value == state
    message, stage, following = usage_rules()[state][call]
    method, args = CALLS[call]
    engine = copy.deepcopy(h.engine)
    if message is None:
        getattr(engine, method)(*args)  # allowed: no SmtpUsageError
        assert engine.state.value == (following or state)
    else:
        with pytest.raises(SmtpUsageError) as raised:
            getattr(engine, method)(*args)
        assert str(raised.value) == message and raised.value.stage == stage
        assert engine.state.value == state  # and nothing changed


def test_every_state_is_in_the_table() -> None:
    rules = usage_rules()
    assert set(rules) >= {"new", "connecting", "greeting", "idle", "data", "closed"}
    assert rules["new"]["connect"] == (None, None, "connecting")
    assert rules["idle"]["connect"][0] is not None and all(len(r) == 5 for r in rules.values())


# -- the options' grammar ------------------------------------------------------------------------------


def test_the_option_grammar_names_every_option_the_engine_takes() -> None:
    from pysmtp_wasm._options import BY_KEY, parse_options
    from pysmtp_wasm._usage import option_grammar

    keys = frozenset({"proxy", "tlsEngine"})
    grammar = option_grammar(keys)
    assert set(grammar["kinds"]) == {*BY_KEY, "auth", *keys}
    # Each kind is what the engine does with a value: a good one passes, the grammar's message
    # is the engine's for a bad one.
    good = {"boolean": True, "milliseconds": 5, "name": "client.example", "ca": "PEM", "proxy": "ws://x/"}
    for key, kind in grammar["kinds"].items():
        if kind in good:
            parse_options({key: good[kind]}, keys)
        if kind == "milliseconds":
            with pytest.raises(SmtpUsageError, match=f"^{grammar['messages'][key]}$"):
                parse_options({key: -5}, keys)
        if kind == "choice":
            for value in grammar["choices"][key]:
                parse_options({key: value}, keys)
            with pytest.raises(SmtpUsageError) as refused:
                parse_options({key: "nope"}, keys)
            assert str(refused.value) == grammar["messages"][key].replace("{value}", "'nope'")
    with pytest.raises(SmtpUsageError) as refused:
        parse_options({"requireTls": True}, keys)
    assert str(refused.value) == grammar["messages"]["unknown"].replace("{key}", "'requireTls'")
    with pytest.raises(SmtpUsageError) as refused:
        parse_options({"auth": {"user": "u", "pass": "p", "token": "t"}}, keys)
    assert str(refused.value) == grammar["messages"]["auth.fields"].replace("{fields}", "token")


def test_every_stage_is_spelt_from_the_one_table() -> None:
    """SmtpUsageError's stage for each state and call, and each state's stage, come from
    _state.STAGES: commands in capitals, steps in lower case, nothing else (issue 19)."""
    from pysmtp_wasm._state import CALLS, COMMAND_STAGES, STAGES, STEP_STAGES, State

    assert all(c.isupper() for c in COMMAND_STAGES) and all(s.islower() for s in STEP_STAGES)
    assert set(STAGES) == set(State)
    for state in State:
        for rule in CALLS.values():
            error = rule.refusal(state)
            if error is not None:
                assert error.stage == STAGES[state] and error.code is None and error.enhanced is None
    assert STAGES[State.AUTH] == "AUTH" and STAGES[State.TLS] == "tls"
