"""The proxy's pure parts, without a socket: tickets, admission (origin, ticket, token, limits, in
that order), the client's address behind trusted proxies, the targets file, the flags."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from pathlib import Path

import pytest

from pysmtp_wasm.proxy import check_ticket, make_ticket
from pysmtp_wasm.proxy._admission import (
    REASONS,
    Admitted,
    Ledger,
    Refusal,
    Request,
    admit,
    client_address,
    close_reason,
)
from pysmtp_wasm.proxy._config import Config, ConfigError, Target, parse_args, parse_targets

KEY = b"k" * 32


def config(tmp_path: Path, **fields: object) -> Config:
    return Config(host="127.0.0.1", port=8080, targets_file=tmp_path / "targets.cfg", **fields)  # type: ignore[arg-type]


# -- tickets ---------------------------------------------------------------------------------------


def test_a_ticket_is_json_and_an_hmac_that_any_language_can_make() -> None:
    ticket = make_ticket(KEY, "smtp", ttl=60, subject="alice")
    encoded, mac = ticket.split(".")
    payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    fields = json.loads(payload)
    assert fields["token"] == "smtp" and fields["sub"] == "alice" and isinstance(fields["exp"], int)
    expected = base64.urlsafe_b64encode(hmac.new(KEY, payload, hashlib.sha256).digest()).rstrip(b"=")
    assert mac == expected.decode()
    # One made by hand, as another language would: another JSON layout, the same key.
    other = json.dumps({"exp": fields["exp"], "sub": "bob", "token": "smtp"}, indent=1).encode()
    by_hand = (
        base64.urlsafe_b64encode(other).rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(hmac.new(KEY, other, hashlib.sha256).digest()).rstrip(b"=").decode()
    )
    assert check_ticket(KEY, by_hand, "smtp", fields["exp"] - 30) == (None, "bob")


def test_tickets_valid_expired_forged_and_for_another_token() -> None:
    ticket = make_ticket(KEY, "smtp", ttl=60, subject="alice")
    exp = json.loads(base64.urlsafe_b64decode(ticket.split(".")[0] + "==="))["exp"]
    assert check_ticket(KEY, ticket, "smtp", exp - 1) == (None, "alice")
    assert check_ticket(KEY, ticket, "smtp", exp) == ("ticket_expired", "")
    assert check_ticket(KEY, ticket, "other", exp - 1) == ("ticket_wrong_token", "")
    assert check_ticket(b"x" * 32, ticket, "smtp", exp - 1) == ("ticket_invalid", "")  # another key
    assert check_ticket(KEY, None, "smtp", 0) == ("ticket_missing", "")
    assert check_ticket(KEY, "", "smtp", 0) == ("ticket_missing", "")
    payload, mac = ticket.split(".")
    tampered = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "===").replace(b'"alice"', b'"admin"')
    ).rstrip(b"=")
    for bad in (f"{tampered.decode()}.{mac}", "garbage", "a.b.c", "!!.??", f"{payload}.", "x" * 5000):
        assert check_ticket(KEY, bad, "smtp", exp - 1) == ("ticket_invalid", ""), bad


def test_make_ticket_refuses_a_short_key_and_a_ttl_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        make_ticket(b"short", "smtp")
    with pytest.raises(ValueError, match="ttl"):
        make_ticket(KEY, "smtp", ttl=0)


# -- admission -------------------------------------------------------------------------------------

TARGETS = {"smtp": Target("smtp.example.com", 587)}


def decide(
    cfg: Config, path: str, origin: str | None = None, key: bytes | None = None, **kw: object
) -> object:
    return admit(
        Request(path, origin, "192.0.2.1"), cfg, TARGETS, key, kw.get("now", 1000.0), bool(kw.get("draining"))
    )  # type: ignore[arg-type]


def reason(decision: object) -> str:
    return decision.reason if isinstance(decision, Refusal) else "admitted"


def test_loopback_only_without_allow_origin(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for origin in ("http://127.0.0.1:8000", "http://localhost:3000", "https://app.localhost", "http://[::1]:80",
                   None):  # fmt: skip
        assert isinstance(decide(cfg, "/?token=smtp", origin), Admitted), origin
    for origin in (
        "http://example.com",
        "http://127.0.0.1.evil.example",
        "null",
        "http://localhost.evil.example",
    ):
        assert reason(decide(cfg, "/?token=smtp", origin)) == "origin", origin


def test_allow_origin_is_exact_and_replaces_the_loopback_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path, allow_origins=("https://mail.example.com",))
    assert isinstance(decide(cfg, "/?token=smtp", "https://MAIL.example.com"), Admitted)
    for origin in (
        "http://mail.example.com",
        "https://mail.example.com:8443",
        "http://127.0.0.1:8000",
        "loopback",
    ):
        assert reason(decide(cfg, "/?token=smtp", origin)) == "origin", origin
    # "loopback" beside an origin: both kinds of page.
    both = config(tmp_path, allow_origins=("loopback", "http://intranet.example:8000"))
    for origin in ("http://127.0.0.1:8000", "http://localhost:1", "http://intranet.example:8000"):
        assert isinstance(decide(both, "/?token=smtp", origin), Admitted), origin
    for origin in ("http://intranet.example:8001", "loopback", "http://evil.example"):
        assert reason(decide(both, "/?token=smtp", origin)) == "origin", origin


def test_the_order_tells_a_stranger_least(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    evil = "http://evil.example"
    assert reason(decide(cfg, "/?token=nope", evil, draining=True)) == "draining"
    assert reason(decide(cfg, "/", evil)) == "bad_request"
    assert reason(decide(cfg, "/?token=nope", evil)) == "origin"  # before the token: no probing
    assert reason(decide(cfg, "/?token=nope", None, KEY)) == "ticket_missing"  # before the token too
    assert reason(decide(cfg, "/?token=nope")) == "unknown_token"
    ticket = make_ticket(KEY, "nope")
    assert reason(decide(cfg, f"/?token=nope&ticket={ticket}", None, KEY, now=0)) == "unknown_token"
    good = make_ticket(KEY, "smtp", subject="alice")
    admitted = decide(cfg, f"/any/path?token=smtp&ticket={good}", None, KEY, now=0)
    assert admitted == Admitted("smtp", TARGETS["smtp"], "alice")


def test_every_reason_has_a_status_and_a_close_code_in_the_contract_range() -> None:
    for name, (status, words) in REASONS.items():
        refusal = Refusal(name, "x" * 200)
        assert 4000 <= refusal.close_code <= 4999 and refusal.close_code == 4000 + status
        assert refusal.text.startswith(f"{name}: {words}") and len(refusal.text.encode()) <= 123
    assert close_reason("é" * 100).encode().decode() and len(close_reason("é" * 100).encode()) <= 123


def test_limits_in_all_and_per_address(tmp_path: Path) -> None:
    ledger = Ledger(config(tmp_path, max_sessions=3, max_sessions_per_ip=2))
    assert ledger.acquire("a") is None and ledger.acquire("a") is None
    assert reason(ledger.acquire("a")) == "max_sessions_per_ip"
    assert ledger.acquire("b") is None
    assert reason(ledger.acquire("c")) == "max_sessions"
    ledger.release("a")
    assert ledger.acquire("c") is None and ledger.total == 3 and ledger.by_address == {"a": 1, "b": 1, "c": 1}
    unlimited = Ledger(config(tmp_path, max_sessions_per_ip=0))
    assert all(unlimited.acquire("a") is None for _ in range(100))


def test_the_client_address_behind_trusted_proxies() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    assert client_address("203.0.113.9", ["198.51.100.1"], trusted) == "203.0.113.9"  # not a proxy: ignored
    assert client_address("127.0.0.1", ["198.51.100.1"], []) == "127.0.0.1"  # no proxy is trusted
    assert client_address("127.0.0.1", ["198.51.100.1"], trusted) == "198.51.100.1"
    # A client can put anything on the left; each proxy appends what it saw on the right.
    assert client_address("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", ["6.6.6.6", "198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", ["not-an-address"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"


# -- configuration ---------------------------------------------------------------------------------


def test_the_targets_file_is_websockifys() -> None:
    text = "# comment\n\nsmtp: smtp.example.com:587\nlocal: 127.0.0.1:25  # the relay\nv6: [::1]:465\n"
    assert parse_targets(text) == {
        "smtp": Target("smtp.example.com", 587), "local": Target("127.0.0.1", 25), "v6": Target("::1", 465),
    }  # fmt: skip
    for bad, words in (("smtp smtp.example.com:587", "line 1"), ("smtp: example.com", "not HOST:PORT"),
                       ("a: h:1\na: h:2", "already given"), ("x: ::1:25", "brackets"), ("x: h:0", "port 0"),
                       ("x: h:70000", "not HOST:PORT")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse_targets(bad)


def test_flags_refuse_an_open_listener_without_origins(tmp_path: Path) -> None:
    targets = tmp_path / "targets.cfg"
    targets.write_text("smtp: 127.0.0.1:25\n")
    with pytest.raises(ConfigError, match="not a loopback address: give the origins"):
        parse_args(["--targets", str(targets), "--listen", "0.0.0.0:8080"])
    cfg, _ = parse_args(
        ["--targets", str(targets), "--listen", "0.0.0.0:8080", "--allow-origin", "https://a.example/"]
    )
    assert cfg.allow_origins == ("https://a.example",) and not cfg.loopback_origins
    with pytest.raises(ConfigError, match="not a loopback address"):  # loopback pages alone: not enough
        parse_args(["--targets", str(targets), "--listen", "0.0.0.0:8080", "--allow-origin", "loopback"])
    cfg, _ = parse_args(["--targets", str(targets)])
    defaults = (cfg.host, cfg.port, cfg.max_sessions, cfg.max_sessions_per_ip, cfg.idle_timeout, cfg.drain)
    assert defaults == ("127.0.0.1", 8080, 10000, 20, 600.0, 30.0) and cfg.workers == 1
    for flags, words in ((["--allow-origin", "mail.example.com"], "scheme://host"),
                         (["--allow-origin", "https://a.example/path"], "scheme://host"),
                         (["--trusted-proxy", "nope"], "CIDR"),
                         (["--ticket-key", str(tmp_path / "none")], "cannot read the ticket")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse_args(["--targets", str(targets), *flags])
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    with pytest.raises(ConfigError, match="at least 32"):
        parse_args(["--targets", str(targets), "--ticket-key", str(short)])
    with pytest.raises(ConfigError, match="cannot read the targets file"):
        parse_args(["--targets", str(tmp_path / "none.cfg")])


# -- the docs say what the code does ----------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_systemd_unit_in_the_docs_runs_with_these_flags(tmp_path: Path) -> None:
    text = (DOCS / "proxy.md").read_text()
    unit = text.split("```ini\n", 1)[1].split("```", 1)[0]
    command = unit.split("ExecStart=", 1)[1].split("\n", 1)[0]
    lines = unit.split("ExecStart=", 1)[1].splitlines()
    while command.endswith("\\"):
        lines.pop(0)
        command = command[:-1] + lines[0]
    words = command.split()
    assert words[0].endswith("/pysmtp-wasm-proxy")
    # The unit's paths and specifiers (%i: the port, %d: the credentials), made real here.
    (tmp_path / "targets.cfg").write_text("mail: smtp.example.com:465\n")
    (tmp_path / "ticket.key").write_bytes(b"k" * 32)
    argv = [
        word.replace("%i", "8081")
        .replace("%d", str(tmp_path))
        .replace("/etc/pysmtp-wasm-proxy", str(tmp_path))
        for word in words[1:]
    ]
    cfg, _ = parse_args(argv)
    assert (cfg.port, cfg.workers, cfg.allow_origins) == (8081, 2, ("https://mail.example.com",))
    flags = {word for word in argv if word.startswith("--")}
    named = ("listen", "targets", "allow-origin", "ticket-key", "trusted-proxy", "max-sessions",
             "max-sessions-per-ip", "idle-timeout", "drain", "workers")  # fmt: skip
    assert flags == {f"--{name}" for name in named}
    assert "LoadCredential=ticket.key:/etc/pysmtp-wasm-proxy/ticket.key" in unit


def test_the_haproxy_configuration_in_the_docs_is_the_tested_file() -> None:
    text = (DOCS / "proxy.md").read_text()
    shown = text.split("```haproxy\n", 1)[1].split("```", 1)[0]
    assert shown == (DOCS / "haproxy.cfg").read_text()


def test_the_flags_table_in_the_docs_lists_every_flag() -> None:
    from pysmtp_wasm.proxy._config import build_parser

    text = (DOCS / "proxy.md").read_text()
    table = text.split("## Flags", 1)[1].split("\n## ", 1)[0]
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--worker-fd"):
                assert f"`{option}" in table, option
