"""Two pysmtp-wasm-proxy instances behind Debian's HAProxy, configured by ``docs/haproxy.cfg`` (the
file the docs give), health-checked on ``/healthz``; the page sends through it in each browser
engine. Sessions are spread over both; one proxy stopped with SIGTERM lets its in-flight message
finish while new sessions go to the other; one killed with SIGKILL mid-message gives the page
onerror then onclose (never ondone(true)), and the next message goes through the other."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Page
from .proxy_parts import HAProxy
from .servers import PysmtpProxy, Recorder, SmtpServer, skip_missing


@pytest.fixture(autouse=True)
def _haproxy_installed() -> None:
    if HAProxy.binary() is None:
        skip_missing("haproxy: not installed (./build.sh test installs it)")


MANY_AT_ONCE = r"""
const [port, proxy, count] = args;
const sessions = [];
for (let i = 0; i < count; i++) {
  const envelopes = [{ from: "a@example.com", to: `r${i}@example.com` }];
  const body = `Subject: ${i}\r\n\r\nmessage ${i}\r\n`;
  sessions.push(window.session({ port, options: { proxy }, envelopes, body }));
}
return (await Promise.all(sessions)).map((r) => [r.errors.length, r.done, r.closed]);
"""


@dataclass
class Stack:
    server: SmtpServer
    proxies: dict[str, PysmtpProxy]  # HAProxy's names for them: proxy1, proxy2
    haproxy: HAProxy

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.haproxy.port}/?token=smtp"

    def carrying(self) -> str:
        """The name of the proxy that holds the one open session now."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            open_now = {name: _open(proxy) for name, proxy in self.proxies.items()}
            holders = [name for name, count in open_now.items() if count == 1]
            if len(holders) == 1 and sum(open_now.values()) == 1:
                return holders[0]
            time.sleep(0.05)
        raise AssertionError(f"no single proxy holds the session: {open_now}")


def _open(proxy: PysmtpProxy) -> int:
    if not proxy.running:
        return 0
    status, text = proxy.get("/metrics")
    line = next(line for line in text.splitlines() if line.startswith("pysmtp_proxy_sessions_open "))
    return int(float(line.split()[-1]))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    recorder = Recorder(pipelining=True)
    with SmtpServer(recorder) as server:
        proxies = {}
        for name in ("proxy1", "proxy2"):
            (tmp_path / name).mkdir()
            proxies[name] = PysmtpProxy(
                tmp_path / name, tokens={"smtp": ("127.0.0.1", server.port)}, drain=30,
                max_sessions_per_ip=20, flags=["--trusted-proxy", "127.0.0.1/32"],
            ).start()  # fmt: skip
        try:
            ports = (proxies["proxy1"].port, proxies["proxy2"].port)
            with HAProxy(tmp_path, ports) as haproxy:
                haproxy.wait_until({"proxy1": "UP", "proxy2": "UP"})
                yield Stack(server, proxies, haproxy)
        finally:
            for proxy in proxies.values():
                proxy.stop()


def wait_streaming(page: Page, past: int = 1_000_000) -> None:
    for _ in range(600):
        progress = page.run("await new Promise((r) => setTimeout(r, 50)); return window.current.sent;")
        if progress > past:
            return
    raise AssertionError("the message did not start streaming")


def test_sessions_are_spread_over_both_proxies(page: Page, stack: Stack) -> None:
    outcomes = page.run(MANY_AT_ONCE, stack.server.port, stack.url, 12)
    assert outcomes == [[0, [True], False]] * 12
    assert sorted(m.rcpt_tos[0] for m in stack.server.recorder.messages) == sorted(
        f"r{i}@example.com" for i in range(12)
    )
    deadline = time.monotonic() + 10  # each line is written as its session ends
    while sum(len(proxy.sessions()) for proxy in stack.proxies.values()) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = {name: len(proxy.sessions()) for name, proxy in stack.proxies.items()}
    assert sum(counts.values()) == 12 and min(counts.values()) >= 1, counts
    # The proxies saw HAProxy's connections, and logged the page's address from X-Forwarded-For.
    assert {s["client"] for p in stack.proxies.values() for s in p.sessions()} == {"127.0.0.1"}


def test_sigterm_lets_the_message_in_flight_finish_and_new_sessions_go_to_the_other(
    page: Page, stack: Stack
) -> None:
    page.start(port=stack.server.port, options={"proxy": stack.url}, lines=120_000, pauseMs=40)
    wait_streaming(page)
    draining = stack.carrying()
    other = "proxy2" if draining == "proxy1" else "proxy1"
    stack.proxies[draining].signal(signal.SIGTERM)
    stack.haproxy.wait_until({draining: "DOWN", other: "UP"})  # its /healthz says 503
    assert page.progress()["closed"] is None, "the message in flight was cut"
    before = len(stack.proxies[other].sessions())
    rec = page.run(
        "return await window.session(args[0]);",
        {"port": stack.server.port, "options": {"proxy": stack.url},
         "envelopes": [{"from": "a@example.com", "to": "new@example.com"}]},
    )  # fmt: skip
    assert rec["errors"] == [] and rec["done"] == [True]
    assert len(stack.proxies[other].sessions()) == before + 1
    finished = page.finish()
    assert finished["errors"] == [] and finished["done"] == [True] and finished["closed"] is False
    big = [m for m in stack.server.recorder.messages if m.rcpt_tos == ["rcpt@example.com"]]
    assert len(big) == 1 and len(big[0].content) > 9_000_000
    drained = stack.proxies[draining]
    assert drained.process is not None and drained.process.wait(15) == 0
    [session] = [s for s in drained.sessions() if s["end"] != "refused"]
    # after QUIT: the server closes (221), or the page does first
    assert session["end"] in ("target_closed", "client_closed") and session["bytes_to_target"] > 9_000_000


def test_sigkill_mid_message_is_an_error_and_the_next_message_goes_through_the_other(
    page: Page, stack: Stack
) -> None:
    page.start(port=stack.server.port, options={"proxy": stack.url}, lines=3_000_000, pauseMs=2)
    wait_streaming(page)
    victim = stack.carrying()
    stack.proxies[victim].kill()
    rec = page.finish()
    assert rec["done"] == [] and "done:true" not in rec["order"] and rec["closed"] is True
    assert rec["errors"] and rec["errors"][-1]["fatal"] is True
    assert rec["order"][-2:] == [f"error:{rec['errors'][-1]['name']}", "close:true"], rec["order"]
    assert stack.server.recorder.messages == []
    # At once, before any health check noticed: HAProxy retries the dead one's refusal elsewhere.
    again = page.run(
        "return await window.session(args[0]);",
        {"port": stack.server.port, "options": {"proxy": stack.url},
         "envelopes": [{"from": "a@example.com", "to": "after@example.com"}]},
    )  # fmt: skip
    assert again["errors"] == [] and again["done"] == [True]
    assert [m.rcpt_tos for m in stack.server.recorder.messages] == [["after@example.com"]]
