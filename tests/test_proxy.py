"""pysmtp-wasm-proxy as a process, as a deployment runs it, with real TCP targets that count the
connections they accept: every refusal (heard by a browser as a close code, by other clients as
an HTTP status) is made before any connection to a target; the relay; the idle timeout;
SIGHUP; SIGTERM's drain; the memory of the proxy against slowloris, slow readers, fast writers
and big frames; several workers on one port; the log, /healthz and /metrics."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from pysmtp_wasm.proxy import make_ticket

from .proxy_parts import Target, closed_with, refused_over_http, refused_over_websocket, rss_kb, ws
from .servers import PysmtpProxy, free_port

ORIGIN = "http://127.0.0.1:8000"  # a loopback page: what the proxy takes by default
KEY = b"0123456789abcdef0123456789abcdef-ticket-key"

ProxyFactory = Callable[..., PysmtpProxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start pysmtp-wasm-proxy processes (``PysmtpProxy`` arguments); all stopped after the test."""
    started: list[PysmtpProxy] = []

    def start(**options: Any) -> PysmtpProxy:
        directory = tmp_path / f"proxy{len(started)}"
        directory.mkdir()
        proxy = PysmtpProxy(directory, **options)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def wait_for(check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)
    return value


def metric(proxy: PysmtpProxy, name: str) -> float:
    status, text = proxy.get("/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


# -- relaying ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_bytes_both_ways_and_one_log_line_per_session(start_proxy: ProxyFactory, loop: str) -> None:
    with Target("greet") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, flags=["--loop", loop])
        with ws(proxy.port, origin=ORIGIN) as conn:
            assert conn.subprotocol == "binary"
            assert conn.recv(timeout=10) == b"220 target ready\r\n"
            blob = os.urandom(300_000)
            conn.send(blob)
            echoed = b""
            while len(echoed) < len(blob):
                echoed += conn.recv(timeout=10)
            assert echoed == blob
        [session] = wait_for(proxy.sessions, what="the session's log line")
    assert session["client"] == "127.0.0.1" and session["token"] == "t"
    assert session["target"] == f"127.0.0.1:{target.port}" and session["end"] == "client_closed"
    assert session["bytes_to_target"] == 300_000 and session["bytes_to_client"] == 300_018
    assert session["duration"] > 0 and session["close_code"] == 1000
    assert target.accepts == 1
    assert metric(proxy, "pysmtp_proxy_sessions_opened_total") == 1
    assert metric(proxy, 'pysmtp_proxy_bytes_total{direction="to_target"}') == 300_000
    assert metric(proxy, 'pysmtp_proxy_sessions_ended_total{end="client_closed"}') == 1
    assert metric(proxy, "pysmtp_proxy_sessions_open") == 0


def test_the_target_closing_closes_the_websocket_with_1000(start_proxy: ProxyFactory) -> None:
    with Target("greet") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)})
        with ws(proxy.port, origin=ORIGIN) as conn:
            assert conn.recv(timeout=10).startswith(b"220")
            wait_for(lambda: target.conns)
            target.close_all()
            assert closed_with(conn) == (1000, "")
    assert wait_for(proxy.sessions)[0]["end"] == "target_closed"


def test_a_target_that_refuses_or_does_not_answer(start_proxy: ProxyFactory) -> None:
    closed = free_port()
    # A listener that never accepts, its queue full: a connection to it waits for ever.
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", stuck.getsockname()[1]))
        except BlockingIOError:
            pass
        fillers.append(filler)
    try:
        proxy = start_proxy(
            tokens={"closed": ("127.0.0.1", closed), "stuck": ("127.0.0.1", stuck.getsockname()[1])},
            flags=["--connect-timeout", "1"],
        )
        with ws(proxy.port, "token=closed", origin=ORIGIN) as conn:
            code, reason = closed_with(conn)
        assert code == 4502
        assert reason == f"target_unreachable: cannot connect to 127.0.0.1:{closed}: Connection refused"
        with ws(proxy.port, "token=stuck", origin=ORIGIN) as conn:
            code, reason = closed_with(conn)
        assert (code, reason) == (
            4504,
            f"target_timeout: no answer when connecting to 127.0.0.1:{stuck.getsockname()[1]}",
        )
    finally:
        stuck.close()
        for filler in fillers:
            filler.close()
    sessions = wait_for(lambda: len(proxy.sessions()) == 2 and proxy.sessions())
    assert [s["end"] for s in sessions] == ["target_unreachable", "target_timeout"]


# -- refusals: before any connection to a target ---------------------------------------------------


@pytest.fixture
def counted(start_proxy: ProxyFactory, tmp_path: Path) -> Iterator[tuple[PysmtpProxy, Target]]:
    """A proxy with a ticket key, per-client and total limits, and one target that counts."""
    key = tmp_path / "ticket.key"
    key.write_bytes(KEY + b"\n")
    with Target("silent") as target:
        proxy = start_proxy(
            tokens={"t": ("127.0.0.1", target.port), "u": ("127.0.0.1", target.port)},
            max_sessions_per_ip=2,
            flags=["--ticket-key", str(key), "--max-sessions", "3", "--trusted-proxy", "127.0.0.1/32"],
        )
        yield proxy, target


REFUSALS = {
    # name: (query, origin) -> the reason
    "bad_request": ("ticket=x", ORIGIN),
    "origin": ("token=t", "http://evil.example"),
    "ticket_missing": ("token=t", ORIGIN),
    "ticket_invalid": ("token=t&ticket=forged.ticket", ORIGIN),
    "ticket_expired": ("token=t&ticket={expired}", ORIGIN),
    "ticket_wrong_token": ("token=t&ticket={for_u}", ORIGIN),
    "unknown_token": ("token=nope&ticket={for_nope}", ORIGIN),
}


def tickets() -> dict[str, str]:
    import base64
    import hashlib
    import hmac
    import json

    payload = json.dumps({"token": "t", "exp": int(time.time()) - 5, "sub": ""}).encode()
    mac = hmac.new(KEY, payload, hashlib.sha256).digest()
    expired = (
        base64.urlsafe_b64encode(payload).rstrip(b"=") + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")
    )
    return {"expired": expired.decode(), "for_u": make_ticket(KEY, "u"), "for_nope": make_ticket(KEY, "nope")}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_each_refusal_reaches_browsers_and_other_clients_and_no_target(
    counted: tuple[PysmtpProxy, Target], name: str
) -> None:
    proxy, target = counted
    query, origin = REFUSALS[name]
    query = query.format(**tickets())
    code, reason = refused_over_websocket(proxy.port, query, origin)
    from pysmtp_wasm.proxy._admission import REASONS

    status = REASONS[name][0]
    assert code == 4000 + status and reason.startswith(f"{name}: "), (code, reason)
    if name != "origin":  # a client without Origin is not checked against the origins
        got = refused_over_http(proxy.port, query)
        assert got[0] == status and got[1].startswith(f"{name}: "), got
    assert target.accepts == 0
    lines = [s for s in proxy.sessions() if s["end"] == "refused"]
    assert lines and {s["reason"] for s in lines} == {name} and {s["status"] for s in lines} == {status}
    assert metric(proxy, f'pysmtp_proxy_sessions_refused_total{{reason="{name}"}}') == len(lines)


def test_the_limits_per_client_and_in_all(counted: tuple[PysmtpProxy, Target]) -> None:
    proxy, target = counted
    good = f"token=t&ticket={make_ticket(KEY, 't', subject='alice')}"
    first = ws(proxy.port, good, origin=ORIGIN)
    second = ws(proxy.port, good, origin=ORIGIN)
    wait_for(lambda: target.accepts == 2)
    code, reason = refused_over_websocket(proxy.port, good, ORIGIN)
    assert code == 4429 and reason.startswith("max_sessions_per_ip: ")
    assert refused_over_http(proxy.port, good)[0] == 429
    # Behind a trusted proxy (127.0.0.1 here), X-Forwarded-For names the client.
    third = ws(proxy.port, good, origin=ORIGIN, additional_headers={"X-Forwarded-For": "198.51.100.7"})
    wait_for(lambda: target.accepts == 3)
    code, reason = refused_over_websocket(
        proxy.port, good, ORIGIN, additional_headers={"X-Forwarded-For": "198.51.100.8"}
    )
    assert code == 4429 and reason.startswith("max_sessions: ")
    assert target.accepts == 3
    first.close()
    wait_for(lambda: metric(proxy, "pysmtp_proxy_sessions_open") == 2)
    with ws(proxy.port, good, origin=ORIGIN, additional_headers={"X-Forwarded-For": "198.51.100.8"}):
        wait_for(lambda: target.accepts == 4)
    second.close()
    third.close()
    opened = [
        s
        for s in wait_for(
            lambda: [s for s in proxy.sessions() if s["end"] != "refused"][3:] and proxy.sessions()
        )
        if s["end"] != "refused"
    ]  # noqa: E501
    assert sorted(s["client"] for s in opened) == ["127.0.0.1", "127.0.0.1", "198.51.100.7", "198.51.100.8"]
    assert {s["subject"] for s in opened} == {"alice"}
    refused = [s for s in proxy.sessions() if s["end"] == "refused"]
    assert [s["reason"] for s in refused] == ["max_sessions_per_ip", "max_sessions_per_ip", "max_sessions"]


# -- timeouts, reload, drain ---------------------------------------------------------------------------


def test_idle_sessions_are_closed(start_proxy: ProxyFactory) -> None:
    with Target("echo") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, flags=["--idle-timeout", "1.5"])
        with ws(proxy.port, origin=ORIGIN) as conn:
            started = time.monotonic()
            for _ in range(4):  # activity keeps it open
                time.sleep(0.5)
                conn.send(b"ping")
                assert conn.recv(timeout=5) == b"ping"
            quiet = time.monotonic()
            code, reason = closed_with(conn, 10)
            assert time.monotonic() - started > 2 and 1.4 < time.monotonic() - quiet < 4
    assert code == 4408 and reason == "idle_timeout: no byte either way for 1.5 s"
    assert wait_for(proxy.sessions)[0]["end"] == "idle_timeout"


def test_sighup_rereads_the_targets_and_keeps_open_sessions(start_proxy: ProxyFactory) -> None:
    with Target("echo") as one, Target("echo") as two:
        proxy = start_proxy(tokens={"one": ("127.0.0.1", one.port)})
        kept = ws(proxy.port, "token=one", origin=ORIGIN)
        assert refused_over_http(proxy.port, "token=two")[0] == 404
        proxy.targets = {"two": ("127.0.0.1", two.port)}
        proxy._write_targets()
        proxy.reload()
        assert refused_over_http(proxy.port, "token=one")[0] == 404
        with ws(proxy.port, "token=two", origin=ORIGIN) as conn:
            conn.send(b"hello")
            assert conn.recv(timeout=5) == b"hello"
        kept.send(b"still here")
        assert kept.recv(timeout=5) == b"still here"
        # A file that does not parse changes nothing.
        proxy.tokens.write_text("two 127.0.0.1\n")
        proxy.reload()
        assert "line 1" in proxy.events("reload_failed")[0]["error"]
        with ws(proxy.port, "token=two", origin=ORIGIN) as conn:
            conn.send(b"again")
            assert conn.recv(timeout=5) == b"again"
        kept.close()
    assert (one.accepts, two.accepts) == (1, 2)


def test_sigterm_drains(start_proxy: ProxyFactory) -> None:
    with Target("echo") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, drain=3)
        assert proxy.get("/healthz") == (200, "ok\n")
        finishing = ws(proxy.port, origin=ORIGIN)
        lingering = ws(proxy.port, origin=ORIGIN)
        wait_for(lambda: target.accepts == 2)
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: proxy.events("draining"))
        started = time.monotonic()
        assert proxy.get("/healthz") == (503, "draining\n")
        assert metric(proxy, "pysmtp_proxy_draining") == 1
        assert refused_over_websocket(proxy.port, "token=t", ORIGIN) == (
            4503,
            "draining: the proxy is shutting down",
        )
        assert refused_over_http(proxy.port, "token=t")[0] == 503
        # The open sessions go on...
        for _ in range(5):
            finishing.send(b"in flight")
            assert finishing.recv(timeout=5) == b"in flight"
            time.sleep(0.2)
        finishing.close()
        # ... until the drain time is up; then what is left is closed with the reason.
        assert closed_with(lingering, 10) == (4503, "draining: the proxy is shutting down")
        assert 2.5 < time.monotonic() - started < 6
        assert proxy.process is not None and proxy.process.wait(10) == 0
    ends = sorted(s["end"] for s in proxy.sessions())
    assert ends == ["client_closed", "drained", "refused", "refused"] and target.accepts == 2


# -- memory, whatever the peers do ---------------------------------------------------------------------


def test_slowloris_handshakes_are_dropped_and_cost_little(start_proxy: ProxyFactory) -> None:
    with Target("echo") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, flags=["--handshake-timeout", "2"])
        before = rss_kb(proxy.pid)
        slow = []
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", proxy.port))
            sock.sendall(b"GET /?token=t HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(sock)
        time.sleep(0.5)
        during = rss_kb(proxy.pid)
        # Meanwhile a real client gets through.
        with ws(proxy.port, origin=ORIGIN) as conn:
            conn.send(b"hi")
            assert conn.recv(timeout=5) == b"hi"
        for sock in slow:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the proxy after 2 s
            sock.close()
    assert during - before < 30_000, (before, during)  # KiB: well under 100 KiB a connection
    assert target.accepts == 1


def test_a_page_that_does_not_read_holds_the_server_back(start_proxy: ProxyFactory) -> None:
    """The server writes 300 MB to a page that reads nothing: the proxy stops reading the server
    (it is paused, and its writes wait), and its memory stays bounded."""
    with Target("flood", flood=300_000_000) as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)})
        before = rss_kb(proxy.pid)
        conn = ws(proxy.port, origin=ORIGIN, max_queue=1)
        wait_for(lambda: target.flooded > 0)
        time.sleep(2)
        stuck_at = target.flooded
        time.sleep(1)
        grown = rss_kb(proxy.pid) - before
        assert target.flooded - stuck_at < 1_000_000 and target.flooded < 50_000_000, target.flooded
        assert grown < 20_000, grown  # KiB
        received = 0
        while received < target.flooded - 8_000_000:  # reading again lets it go on
            received += len(conn.recv(timeout=10))
        conn.close()


def test_a_server_that_does_not_read_holds_the_page_back(start_proxy: ProxyFactory) -> None:
    """The page writes to a server that reads nothing: its sends block, the proxy's memory is
    bounded (not the 200 MB it was offered). The page then goes away: the proxy, which is not
    reading from it, learns it at the idle timeout, and lets go of both ends."""
    with Target("silent") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, flags=["--idle-timeout", "6"])
        before = rss_kb(proxy.pid)
        conn = ws(proxy.port, origin=ORIGIN)
        chunk = b"x" * 65536
        sent = 0
        import threading

        def push() -> None:
            nonlocal sent
            try:
                for _ in range(3200):  # 200 MB
                    conn.send(chunk)
                    sent += len(chunk)
            except ConnectionClosed:
                pass

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        time.sleep(3)
        stuck_at = sent
        time.sleep(1)
        grown = rss_kb(proxy.pid) - before
        assert sent == stuck_at and sent < 30_000_000, sent
        assert grown < 20_000, grown  # KiB
        conn.socket.shutdown(socket.SHUT_RDWR)  # the page goes away; its blocked send() ends
        pusher.join(10)
        assert not pusher.is_alive()
        [session] = wait_for(proxy.sessions, 15)
        assert session["end"] == "idle_timeout" and metric(proxy, "pysmtp_proxy_sessions_open") == 0


def test_frames_too_big_text_frames_and_garbage_end_the_session_not_the_proxy(
    start_proxy: ProxyFactory,
) -> None:
    with Target("echo") as target:
        proxy = start_proxy(tokens={"t": ("127.0.0.1", target.port)}, flags=["--max-frame", "100000"])
        before = rss_kb(proxy.pid)
        # A long message in frames under the limit (as Chromium sends a large one) goes through.
        with ws(proxy.port, origin=ORIGIN) as conn:
            conn.send(iter([b"y" * 50_000] * 6))
            echoed = b""
            while len(echoed) < 300_000:
                echoed += conn.recv(timeout=10)
            assert echoed == b"y" * 300_000
        with ws(proxy.port, origin=ORIGIN) as conn:
            conn.send(b"x" * 100_001)
            code, _ = closed_with(conn)
        assert code == 1009
        with ws(proxy.port, origin=ORIGIN) as conn:
            conn.send("text")
            assert closed_with(conn) == (1003, "text_frame: this proxy relays binary frames only")
        # A frame header that claims 2**62 bytes, unmasked: the connection is dropped at once.
        with ws(proxy.port, origin=ORIGIN) as conn:
            conn.socket.sendall(bytes([0x82, 0x7F]) + (2**62).to_bytes(8, "big"))
            code, _ = closed_with(conn)
        assert code in (1002, 1009, 1006)
        # Not even a handshake.
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(os.urandom(4096) + b"\r\n\r\n")
            sock.settimeout(5)
            reply = sock.recv(100)  # closed, with a 400 or without a word
            assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
        with ws(proxy.port, origin=ORIGIN) as conn:  # and the proxy goes on
            conn.send(b"fine")
            assert conn.recv(timeout=5) == b"fine"
        assert rss_kb(proxy.pid) - before < 10_000
    ends = [s["end"] for s in wait_for(lambda: len(proxy.sessions()) == 5 and proxy.sessions())]
    assert ends == ["client_closed", "frame_too_big", "text_frame", "client_error", "client_closed"], ends


# -- workers ---------------------------------------------------------------------------------------------


def test_workers_share_the_port_the_limits_and_the_metrics(start_proxy: ProxyFactory) -> None:
    with Target("echo") as target:
        proxy = start_proxy(
            tokens={"t": ("127.0.0.1", target.port)}, max_sessions_per_ip=0,
            flags=["--workers", "2", "--max-sessions", "20"],
        )  # fmt: skip
        wait_for(lambda: len(proxy.events("listening")) == 2, what="two workers listening")
        conns = [ws(proxy.port, origin=ORIGIN) for _ in range(20)]
        wait_for(lambda: target.accepts == 20)
        assert refused_over_websocket(proxy.port, "token=t", ORIGIN)[0] == 4429  # 20 in all
        assert metric(proxy, "pysmtp_proxy_sessions_open") == 20  # summed over both
        for conn in conns:
            conn.send(b"x")
            assert conn.recv(timeout=5) == b"x"
            conn.close()
        sessions = wait_for(lambda: len(proxy.sessions()) == 21 and proxy.sessions())
        assert len({s["pid"] for s in sessions if s["end"] != "refused"}) == 2  # both took some
        assert metric(proxy, "pysmtp_proxy_sessions_opened_total") == 20
        # A worker that dies is replaced; its sessions no longer count.
        victim = proxy.events("listening")[0]["pid"]
        held = ws(proxy.port, origin=ORIGIN)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(proxy.events("listening")) == 3, what="a new worker")
        for _ in range(10):
            with ws(proxy.port, origin=ORIGIN) as conn:
                conn.send(b"y")
                assert conn.recv(timeout=5) == b"y"
        held.close()
        proxy.signal(signal.SIGTERM)
        assert proxy.process is not None and proxy.process.wait(15) == 0
    assert len(proxy.events("stopped")) == 2


def test_refuses_to_start_open_to_the_world_without_origins(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "t.cfg").write_text("t: 127.0.0.1:25\n")
    run = subprocess.run(
        [sys.executable, "-m", "pysmtp_wasm.proxy", "--targets", str(tmp_path / "t.cfg"),
         "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2 and "--allow-origin" in run.stderr
