"""Configuration: the command line, the targets file and the ticket key, checked before anything
listens. Every default is the safe one; each flag loosens one thing."""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ._tickets import MIN_KEY_BYTES

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_SESSIONS_PER_IP = 20
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_DRAIN = 30.0
# A WebSocket handshake that has not completed after this long is dropped (slowloris). Browsers
# send theirs in one packet; nginx's client_header_timeout is 60 s, HAProxy's docs suggest 5 s.
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
# The TCP connection to a target: a page's own timeout for the greeting is longer.
DEFAULT_CONNECT_TIMEOUT = 10.0
# A frame from the page larger than this closes the session (1009): websockets reads a frame
# whole before the relay writes it on, so this bounds what one session can make us hold. A
# message may be longer, in several frames (Chromium cuts large ones at 131,000 bytes); the
# relay passes each frame on as it comes. websockets' own default is 1 MiB, as is ours.
DEFAULT_MAX_FRAME = 1024 * 1024

TOKEN = re.compile(r"[^\s:#]+")
# --allow-origin's one keyword: pages from any loopback origin (localhost, 127.0.0.0/8, [::1]).
LOOPBACK = "loopback"


class ConfigError(ValueError):
    """A flag, the targets file or the key file is not usable; the message says which and why."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    targets_file: Path
    allow_origins: tuple[str, ...] = ()
    ticket_key_file: Path | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_sessions_per_ip: int = DEFAULT_MAX_SESSIONS_PER_IP  # 0: no limit per address
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    drain: float = DEFAULT_DRAIN
    workers: int = 1
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_frame: int = DEFAULT_MAX_FRAME
    loop: str = "auto"
    argv: tuple[str, ...] = field(default=(), compare=False)  # as given: what a worker is started with

    @property
    def loopback_origins(self) -> bool:
        """Whether pages from loopback origins are taken: with no --allow-origin (then they are
        the only ones), or with ``--allow-origin loopback`` beside others."""
        return not self.allow_origins or LOOPBACK in self.allow_origins


def is_loopback_host(host: str) -> bool:
    """``localhost`` (and names under it, RFC 6761 §6.3) or a loopback address literal. Names are
    never resolved: what a name resolves to is the attacker's choice (DNS rebinding)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(f"{what}: {text!r} is not HOST:PORT ([v6]:port for IPv6)")
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{what}: {text!r}: write an IPv6 address in brackets, [{host}]:{port_text}")
    return host, int(port_text)


def parse_targets(text: str, source: str = "targets") -> dict[str, Target]:
    """websockify's token file: one ``token: host:port`` a line; ``#`` comments, blank lines."""
    targets: dict[str, Target] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token, sep, target = line.partition(":")
        token, target = token.strip(), target.strip()
        where = f"{source}, line {number}"
        if not sep or not TOKEN.fullmatch(token):
            raise ConfigError(f"{where}: {raw.strip()!r} is not 'token: host:port'")
        host, port = parse_host_port(target, where)
        if port == 0:
            raise ConfigError(f"{where}: port 0 is not a target")
        if token in targets:
            raise ConfigError(f"{where}: the token {token!r} is already given")
        targets[token] = Target(host, port)
    return targets


def read_targets(path: Path) -> dict[str, Target]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the targets file {path}: {error}") from None
    return parse_targets(text, str(path))


def read_ticket_key(path: Path) -> bytes:
    """The key is the file's bytes, surrounding whitespace stripped (a line of base64 from
    ``head -c 32 /dev/urandom | base64`` is a good one)."""
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the ticket key {path}: {error}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the ticket key {path} has {len(key)} bytes: at least {MIN_KEY_BYTES} needed")
    return key


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, as browsers send it (no path, no default port)."""
    return origin.strip().rstrip("/").lower()


def check_origin_flag(origin: str) -> str:
    if origin.strip().lower() == LOOPBACK:
        return LOOPBACK
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(
            f"--allow-origin {origin!r}: an origin is scheme://host[:port], as in https://mail.example.com"
        )
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"--allow-origin {origin!r}: an origin has no query, fragment or user")
    return normalize_origin(origin)


def positive(kind: type[int] | type[float], allow_zero: bool = False) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'0 or more' if allow_zero else 'positive'}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysmtp-wasm-proxy",
        description="The WebSocket-to-TCP proxy for pysmtp-wasm pages: one WebSocket is one TCP "
        "connection to one of the targets of a fixed list, named by a token (websockify's token "
        "file and URL). Secure by default: see docs/proxy.md.",
    )
    add = parser.add_argument
    add("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"where to listen ({DEFAULT_LISTEN})")
    add(
        "--targets",
        required=True,
        type=Path,
        metavar="FILE",
        help="the targets: one 'token: host:port' a line (websockify's token file); SIGHUP re-reads it",
    )
    add(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="accept browsers from this origin (repeatable; 'loopback': any loopback origin). "
        "Without it: loopback origins only, and only on a loopback listener",
    )
    add(
        "--ticket-key",
        type=Path,
        metavar="FILE",
        help="every session needs &ticket=..., an HMAC-SHA256 ticket made with this key "
        "(pysmtp_wasm.proxy.make_ticket); SIGHUP re-reads it",
    )
    add(
        "--max-sessions",
        type=positive(int),
        default=DEFAULT_MAX_SESSIONS,
        metavar="N",
        help=f"sessions open at once, all workers together ({DEFAULT_MAX_SESSIONS})",
    )
    add(
        "--max-sessions-per-ip",
        type=positive(int, allow_zero=True),
        default=DEFAULT_MAX_SESSIONS_PER_IP,
        metavar="N",
        help=f"sessions open at once from one client address ({DEFAULT_MAX_SESSIONS_PER_IP}; 0: none)",
    )
    add(
        "--idle-timeout",
        type=positive(float),
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"close a session after this long without a byte either way ({DEFAULT_IDLE_TIMEOUT:g})",
    )
    add(
        "--drain",
        type=positive(float, allow_zero=True),
        default=DEFAULT_DRAIN,
        metavar="SECONDS",
        help=f"on SIGTERM, how long open sessions may go on ({DEFAULT_DRAIN:g})",
    )
    add(
        "--workers",
        type=positive(int),
        default=1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT); 1",
    )
    add(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a reverse proxy whose X-Forwarded-For is believed, for the limits and the log (repeatable)",
    )
    add(
        "--handshake-timeout",
        type=positive(float),
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help=f"drop a client whose WebSocket handshake is not done by then ({DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    add(
        "--connect-timeout",
        type=positive(float),
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"the TCP connection to a target ({DEFAULT_CONNECT_TIMEOUT:g})",
    )
    add(
        "--max-frame",
        type=positive(int),
        default=DEFAULT_MAX_FRAME,
        metavar="BYTES",
        help=f"the largest WebSocket frame a page may send ({DEFAULT_MAX_FRAME}); a message may span several",
    )
    add(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: uvloop when installed (auto), or asyncio's own",
    )
    add("--worker-fd", type=int, help=argparse.SUPPRESS)  # set by the supervisor for its workers
    return parser  # fmt: skip


def parse_args(argv: list[str]) -> tuple[Config, int | None]:
    """The configuration (checked: the files read once, the listener's rules) and, for a
    worker started by the supervisor, its end of the ledger's socket."""
    args = build_parser().parse_args(argv)
    host, port = parse_host_port(args.listen, "--listen")
    origins = tuple(dict.fromkeys(check_origin_flag(origin) for origin in args.allow_origin))
    if not set(origins) - {LOOPBACK} and not is_loopback_host(host):
        raise ConfigError(
            f"--listen {args.listen} is not a loopback address: give the origins of your pages with "
            "--allow-origin (e.g. --allow-origin https://mail.example.com)"
        )
    networks = []
    for text in args.trusted_proxy:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxy {text!r} is not an address or a CIDR network") from None
    read_targets(args.targets)  # refuse to start on a file that would refuse every session
    if args.ticket_key is not None:
        read_ticket_key(args.ticket_key)
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
    config = Config(
        host=host, port=port, targets_file=args.targets, allow_origins=origins,
        ticket_key_file=args.ticket_key, max_sessions=args.max_sessions,
        max_sessions_per_ip=args.max_sessions_per_ip, idle_timeout=args.idle_timeout, drain=args.drain,
        workers=args.workers, trusted_proxies=tuple(networks), handshake_timeout=args.handshake_timeout,
        connect_timeout=args.connect_timeout, max_frame=args.max_frame, loop=args.loop,
        argv=tuple(argv),
    )  # fmt: skip
    return config, args.worker_fd
