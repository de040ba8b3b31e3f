"""SASL mechanisms for SMTP AUTH (RFC 4954): PLAIN, LOGIN, XOAUTH2 and CRAM-MD5.

A mechanism is a small conversation: :meth:`Mechanism.start` gives the AUTH command line,
:meth:`Mechanism.respond` answers each 334 challenge. The lines carry secrets, so each
also says how it should appear in a transcript.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .errors import SmtpAuthError

# Masked stand-in for secrets in transcripts.
MASK = "****"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@dataclass
class Credentials:
    user: str
    password: str | None = None
    xoauth2: str | None = None


class Mechanism:
    """One AUTH conversation."""

    name = ""
    # Whether the secret (password or token) crosses the wire as it is (base64 is no cover):
    # then it needs TLS, a connection to a loopback address (CPython) or allowInsecureAuth.
    sends_secret = True

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def start(self) -> tuple[str, str]:
        """The AUTH command and its transcript form."""
        return f"AUTH {self.name}", f"AUTH {self.name}"

    def respond(self, challenge: str) -> tuple[str, str]:
        """The answer to a 334 challenge (base64 text) and its transcript form."""
        raise SmtpAuthError(
            f"unexpected challenge from the server during AUTH {self.name}",
            code=334,
            stage="AUTH",
        )

    def _password(self) -> str:
        if self.credentials.password is None:
            raise SmtpAuthError(f"AUTH {self.name} needs auth.pass", stage="AUTH")
        return self.credentials.password


class Plain(Mechanism):
    name = "PLAIN"

    def start(self) -> tuple[str, str]:
        # RFC 4616: authzid NUL authcid NUL passwd, sent as an initial response.
        token = _b64(f"\0{self.credentials.user}\0{self._password()}")
        return f"AUTH PLAIN {token}", f"AUTH PLAIN {MASK}"


class Login(Mechanism):
    name = "LOGIN"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._step = 0

    def start(self) -> tuple[str, str]:
        self._password()  # refuse before anything is sent when there is none
        return super().start()

    def respond(self, challenge: str) -> tuple[str, str]:
        # The server asks "Username:" then "Password:"; answer in that order whatever
        # the prompts say, as every client does (servers word them differently).
        self._step += 1
        if self._step == 1:
            return _b64(self.credentials.user), MASK
        if self._step == 2:
            return _b64(self._password()), MASK
        return super().respond(challenge)


class XOAuth2(Mechanism):
    name = "XOAUTH2"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self.error_detail: str | None = None

    def start(self) -> tuple[str, str]:
        if not self.credentials.xoauth2:
            raise SmtpAuthError("AUTH XOAUTH2 needs auth.xoauth2", stage="AUTH")
        token = _b64(f"user={self.credentials.user}\x01auth=Bearer {self.credentials.xoauth2}\x01\x01")
        return f"AUTH XOAUTH2 {token}", f"AUTH XOAUTH2 {MASK}"

    def respond(self, challenge: str) -> tuple[str, str]:
        # On failure the server sends a 334 with a base64 JSON error; the client must
        # answer with an empty line, then the server sends the final 5xx.
        if self.error_detail is None:
            try:
                self.error_detail = base64.b64decode(challenge, validate=True).decode("utf-8", "replace")
            except ValueError:
                self.error_detail = challenge
            return "", ""
        return super().respond(challenge)


class CramMD5(Mechanism):
    name = "CRAM-MD5"
    sends_secret = False  # only an HMAC of the server's challenge

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._answered = False

    def start(self) -> tuple[str, str]:
        self._password()
        return super().start()

    def respond(self, challenge: str) -> tuple[str, str]:
        if self._answered:
            return super().respond(challenge)
        self._answered = True
        try:
            nonce = base64.b64decode(challenge, validate=True)
        except ValueError:
            raise SmtpAuthError(
                "AUTH CRAM-MD5: the server's challenge is not base64", code=334, stage="AUTH"
            ) from None
        import hashlib  # here, not at the top: hashlib's six hash modules slow the page's start
        import hmac

        digest = hmac.new(self._password().encode("utf-8"), nonce, hashlib.md5).hexdigest()
        return _b64(f"{self.credentials.user} {digest}"), MASK


MECHANISMS: dict[str, type[Mechanism]] = {cls.name: cls for cls in (Plain, Login, XOAuth2, CramMD5)}

# Our order of preference among what the server offers, when nothing is forced. PLAIN and
# LOGIN both send the password; PLAIN does it in one round trip.
PREFERENCE = ("PLAIN", "LOGIN", "CRAM-MD5")


def choose(offered: list[str], credentials: Credentials, forced: str | None, secure: bool) -> Mechanism:
    """Pick the mechanism: ``authMethod`` if forced; XOAUTH2 when a token is given (the seed
    prefers the token over a password); else the best the server offers; else PLAIN, as the
    seed does when the server names none.

    On a connection without TLS, CRAM-MD5 is preferred when offered, because it does not
    put the password on the wire.
    """
    if forced:
        name = forced.upper()
        if name not in MECHANISMS:
            raise SmtpAuthError(
                f"authMethod {forced!r} is not supported (supported: {', '.join(MECHANISMS)})",
                stage="AUTH",
            )
        return MECHANISMS[name](credentials)
    if credentials.xoauth2:
        return XOAuth2(credentials)
    order = PREFERENCE if secure else ("CRAM-MD5", *PREFERENCE[:2])
    for name in order:
        if name in offered:
            return MECHANISMS[name](credentials)
    return Plain(credentials)
