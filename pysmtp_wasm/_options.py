"""The seed's connection options, read from a dict (or a JS object turned into one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._sasl import MECHANISMS, Credentials
from .errors import SmtpUsageError

# The seed's defaults: timeoutSocketLowerBound 10 s, timeoutSocketMultiplier 0.1 ms per byte.
DEFAULT_TIMEOUT_LOWER_BOUND_MS = 10_000
DEFAULT_TIMEOUT_MULTIPLIER_MS = 0.1
# RFC 5321 §4.5.3.2.1 suggests waiting 5 minutes for a greeting; a browser user will not.
# 30 s covers slow servers that do reverse-DNS and greylisting tricks before greeting.
DEFAULT_TIMEOUT_GREETING_MS = 30_000


@dataclass
class Options:
    """Parsed options. Names in the dict are the seed's camelCase ones."""

    use_secure_transport: bool = False
    name: str = "localhost"
    auth: Credentials | None = None
    auth_method: str | None = None
    ca: str | list[str] | None = None
    disable_escaping: bool = False
    disable_chunking: bool = False
    ignore_tls: bool = False
    require_tls: bool = False
    lmtp: bool = False
    allow_insecure_auth: bool = False
    timeout_greeting_ms: float = DEFAULT_TIMEOUT_GREETING_MS
    timeout_lower_bound_ms: float = DEFAULT_TIMEOUT_LOWER_BOUND_MS
    timeout_multiplier_ms: float = DEFAULT_TIMEOUT_MULTIPLIER_MS
    # Options that a transport reads (e.g. the browser's "proxy"); kept as given.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One of the seed's options: its name, the :class:`Options` field it sets, and its kind,
    which says how a value is checked: "boolean" (any value, taken for its truth),
    "milliseconds" (a non-negative number), "choice" (one of ``choices``, in upper case when
    ``upper``), "name" (the EHLO name), "ca" (PEM text or a list of them)."""

    key: str
    attr: str
    kind: str
    choices: tuple[str, ...] = ()
    upper: bool = False


# The table every check reads: parse_options here, and _usage.option_grammar for the page's
# side of a Worker. ``auth`` (an object with its own fields) is checked by _credentials.
OPTIONS: tuple[Option, ...] = (
    Option("useSecureTransport", "use_secure_transport", "boolean"),
    Option("name", "name", "name"),
    Option("authMethod", "auth_method", "choice", tuple(MECHANISMS), upper=True),
    Option("ca", "ca", "ca"),
    Option("disableEscaping", "disable_escaping", "boolean"),
    Option("disableChunking", "disable_chunking", "boolean"),
    Option("ignoreTLS", "ignore_tls", "boolean"),
    Option("requireTLS", "require_tls", "boolean"),
    Option("lmtp", "lmtp", "boolean"),
    Option("allowInsecureAuth", "allow_insecure_auth", "boolean"),
    Option("timeoutGreeting", "timeout_greeting_ms", "milliseconds"),
    Option("timeoutSocketLowerBound", "timeout_lower_bound_ms", "milliseconds"),
    Option("timeoutSocketMultiplier", "timeout_multiplier_ms", "milliseconds"),
)
BY_KEY = {option.key: option for option in OPTIONS}
# Transport options with a fixed set of values, checked here so a typo fails at construction.
TRANSPORT_VALUES: dict[str, tuple[str, ...]] = {"tlsEngine": ("auto", "openssl", "forge")}
# Options that cannot both be set.
CONTRADICTIONS: tuple[tuple[str, str], ...] = (("ignoreTLS", "requireTLS"),)

# The words of each refusal. ``fill`` puts in {key} and {value} (as Python's repr shows them),
# {known}, {choices}, {fields}, {a} and {b}; the page's side of a Worker gets them as they
# are, with what it must fill itself left in braces.
MESSAGES: dict[str, str] = {
    "unknown": "unknown option {key} (known: {known})",
    "milliseconds": "option {key} must be a non-negative number of milliseconds",
    "choice": "option {key} must be one of {choices}, not {value}",
    "authMethod": "authMethod {value} is not supported (supported: {choices})",
    "name": "option name must be a host name, got {value}",
    "ca": "option ca must be a PEM string or a list of PEM strings",
    "auth": "option auth must be an object {user, pass} or {user, xoauth2}",
    "auth.fields": "unknown auth field(s): {fields}",
    "auth.user": "auth.user must be a string",
    "auth.pass": "auth.pass must be a string",
    "auth.xoauth2": "auth.xoauth2 must be a string",
    "auth.secret": "option auth needs pass or xoauth2",
    "auth.forbidden": "auth.{field} contains {what}",
    "auth.surrogate": "auth.{field} is not valid Unicode (a lone surrogate)",
    "contradiction": "{a} and {b} contradict each other: set one of them",
}


def fill(template: str, **values: str) -> str:
    """``template`` with the named {fields} put in, and any other braces left as they are."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def known_options(transport_keys: frozenset[str]) -> str:
    return ", ".join(sorted([*BY_KEY, "auth", *transport_keys]))


def choice_message(key: str, choices: tuple[str, ...]) -> str:
    """The refusal of a "choice" option, with {value} left to fill."""
    if key == "authMethod":
        return fill(MESSAGES["authMethod"], choices=", ".join(choices))
    return fill(MESSAGES["choice"], key=key, choices=", ".join(map(repr, choices)))


def parse_options(raw: Mapping[str, Any] | None, transport_keys: frozenset[str] = frozenset()) -> Options:
    """Check and convert the options; unknown names are refused (a typo must not pass silently)."""
    options = Options()
    for key, value in (raw or {}).items():
        if value is None:
            continue
        option = BY_KEY.get(key)
        if key == "auth":
            options.auth = _credentials(value)
        elif option is not None:
            setattr(options, option.attr, _value(option, value))
        elif key in transport_keys:
            allowed = TRANSPORT_VALUES.get(key)
            if allowed is not None and value not in allowed:
                raise SmtpUsageError(fill(choice_message(key, allowed), value=repr(value)))
            options.extra[key] = value
        else:
            raise SmtpUsageError(
                fill(MESSAGES["unknown"], key=repr(key), known=known_options(transport_keys))
            )
    for a, b in CONTRADICTIONS:
        if getattr(options, BY_KEY[a].attr) and getattr(options, BY_KEY[b].attr):
            raise SmtpUsageError(fill(MESSAGES["contradiction"], a=a, b=b))
    return options


def _value(option: Option, value: Any) -> Any:
    """``value`` checked and converted as ``option``'s kind says."""
    if option.kind == "boolean":
        return bool(value)
    if option.kind == "milliseconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SmtpUsageError(fill(MESSAGES["milliseconds"], key=option.key))
        return value
    if option.kind == "name":
        _check_name(value)
        return value
    if option.kind == "ca":
        return _ca(value)
    # "choice"
    wanted = value.upper() if option.upper and isinstance(value, str) else value
    if (option.upper and not isinstance(value, str)) or wanted not in option.choices:
        raise SmtpUsageError(fill(choice_message(option.key, option.choices), value=repr(value)))
    return wanted


def _credentials(value: Any) -> Credentials:
    if not isinstance(value, Mapping):
        raise SmtpUsageError(MESSAGES["auth"])
    unknown = set(value) - {"user", "pass", "xoauth2"}
    if unknown:
        raise SmtpUsageError(fill(MESSAGES["auth.fields"], fields=", ".join(sorted(unknown))))
    user = value.get("user")
    if not isinstance(user, str):
        raise SmtpUsageError(MESSAGES["auth.user"])
    _check_secret("user", user)
    for field_name in ("pass", "xoauth2"):
        secret = value.get(field_name)
        if secret is not None and not isinstance(secret, str):
            raise SmtpUsageError(MESSAGES[f"auth.{field_name}"])
        if secret is not None:
            _check_secret(field_name, secret)
    if value.get("pass") is None and not value.get("xoauth2"):
        raise SmtpUsageError(MESSAGES["auth.secret"])
    return Credentials(user=user, password=value.get("pass"), xoauth2=value.get("xoauth2") or None)


# What may not appear in a credential: a CR or LF would end the AUTH line (LOGIN sends the
# user and the password as lines), a NUL is PLAIN's separator (RFC 4616), ^A XOAUTH2's.
CREDENTIAL_FORBIDDEN = {"\r": "CR", "\n": "LF", "\0": "NUL", "\x01": "U+0001"}


def _check_secret(field_name: str, value: str) -> None:
    # The message names the field, never the value (it may be a password).
    for char, name in CREDENTIAL_FORBIDDEN.items():
        if char in value:
            raise SmtpUsageError(fill(MESSAGES["auth.forbidden"], field=field_name, what=name))
    if not _encodable(value):
        raise SmtpUsageError(fill(MESSAGES["auth.surrogate"], field=field_name))


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# RFC 1035 §2.3.4 / RFC 1123: a host name is at most 253 octets written out.
MAX_HOST_OCTETS = 253


def check_host(host: Any, what: str = "host") -> str:
    """The server's host name or address, refused when it holds a control character, a space
    or a NUL (which would cut the name OpenSSL checks the certificate against), is not valid
    Unicode, or is too long for a name. Returns it."""
    if not isinstance(host, str) or not host:
        raise SmtpUsageError(f"{what} must be a host name or address, got {host!r}")
    if not _encodable(host):
        raise SmtpUsageError(f"{what} {host!r} is not valid Unicode (a lone surrogate)")
    for char in host:
        if ord(char) <= 0x20 or ord(char) == 0x7F or not char.isprintable():
            found = "a space" if char == " " else f"control character U+{ord(char):04X}"
            raise SmtpUsageError(f"{what} {host!r} contains {found}")
    if len(host.encode("utf-8")) > MAX_HOST_OCTETS:
        raise SmtpUsageError(f"{what} is longer than the {MAX_HOST_OCTETS} octets of a host name")
    return host


def check_port(port: Any) -> int:
    """The server's port: a whole number from 1 to 65535 (or its digits)."""
    if isinstance(port, str) and port.isdigit() and port.isascii():
        port = int(port)
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SmtpUsageError(f"port must be a whole number from 1 to 65535, got {port!r}")
    return port


def _check_name(value: Any) -> None:
    # The name goes into "EHLO name": the same injection rules as for addresses.
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "\r\n\0 <>")
        or not value.isprintable()  # (a lone surrogate is not printable either)
    ):
        raise SmtpUsageError(fill(MESSAGES["name"], value=repr(value)))


def _ca(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SmtpUsageError(MESSAGES["ca"])
