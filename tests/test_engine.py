"""The sans-IO engine, driven by scripted byte exchanges (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pysmtp_wasm import (
    Done,
    Failed,
    SmtpAuthError,
    SmtpEnvelopeError,
    SmtpProtocolError,
    SmtpRecipientsError,
    SmtpTimeoutError,
    SmtpTlsError,
    SmtpUsageError,
    State,
)
from pysmtp_wasm._reply import MAX_REPLY_LINE, MAX_REPLY_LINES

from .script import Finished, Harness, bytewise, run, user

MESSAGE = b"Subject: test\r\n\r\n.leading dot\r\nbody"
STUFFED = b"Subject: test\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
PLAIN_TOKEN = base64.b64encode(b"\0user\0secret").decode()


def one_message(envelope=None):
    """User callbacks: send one message (in two chunks) on the first idle, then quit."""
    return user(envelope, [MESSAGE[:7], MESSAGE[7:]])


# A whole session: greeting, EHLO (multi-line, with PIPELINING), AUTH PLAIN, a pipelined
# envelope with one recipient refused, the message, QUIT.
FULL_SESSION = [
    (b"", b"220 mx.example.com ESMTP ready\r\n"),
    (
        b"EHLO localhost\r\n",
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n",
    ),
    (f"AUTH PLAIN {PLAIN_TOKEN}\r\n".encode(), b"235 2.7.0 Authentication successful\r\n"),
    (
        b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\nDATA\r\n",
        b"250 2.1.0 Ok\r\n550 5.1.1 <b@example.com>: unknown\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
    ),
    (STUFFED, b"250 2.0.0 Ok: queued as 12345\r\n"),
    (b"QUIT\r\n", b"221 2.0.0 Bye\r\n"),
]
FULL_OPTIONS = {"auth": {"user": "user", "pass": "secret"}}
FULL_OUTCOME = [
    "Idle",
    "Ready(['b@example.com'])",
    "Done(True, [('c@example.com', 250), ('b@example.com', 550)])",
    "Idle",
    "Finished",
]


def test_full_session_one_chunk_per_reply():
    h = run(FULL_SESSION, options=FULL_OPTIONS, **one_message())
    assert h.outcome()[1] == FULL_OUTCOME
    assert h.engine.state is State.CLOSED


def test_without_a_transcript_the_session_is_the_same_and_reports_no_lines():
    with_lines = run(FULL_SESSION, options=FULL_OPTIONS, **one_message())
    without = run(FULL_SESSION, options=FULL_OPTIONS, transcript=False, **one_message())
    assert without.outcome() == with_lines.outcome()
    assert ("C", "QUIT") in with_lines.log and ("C", "AUTH PLAIN ****") in with_lines.log
    assert without.log == []


def test_full_session_byte_by_byte():
    h = run(FULL_SESSION, chunker=bytewise, options=FULL_OPTIONS, **one_message())
    assert h.outcome()[1] == FULL_OUTCOME


def test_full_session_every_split_point():
    """Cut the server's bytes in two at every position: the outcome must never change."""
    reference = run(FULL_SESSION, options=FULL_OPTIONS, **one_message()).outcome()
    total = sum(len(answer) for _, answer in FULL_SESSION)
    for cut in range(total + 1):
        offsets = []
        position = 0
        for _, answer in FULL_SESSION:
            offsets.append(position)
            position += len(answer)

        def chunker(index: int, data: bytes, cut: int = cut, offsets: list[int] = offsets) -> list[bytes]:
            local = cut - offsets[index]
            if 0 < local < len(data):
                return [data[:local], data[local:]]
            return [data]

        outcome = run(FULL_SESSION, chunker=chunker, options=FULL_OPTIONS, **one_message()).outcome()
        assert outcome == reference, f"differs when cut at byte {cut}"


def test_full_session_every_pair_of_split_points_in_pipelined_replies():
    """Three chunks, any two cuts, in the exchange that carries several replies."""
    reference = run(FULL_SESSION, options=FULL_OPTIONS, **one_message()).outcome()
    data = FULL_SESSION[3][1]
    for first in range(1, len(data)):
        for second in range(first, len(data), 7):

            def chunker(index: int, answer: bytes, a: int = first, b: int = second) -> list[bytes]:
                return [answer[:a], answer[a:b], answer[b:]] if index == 3 else [answer]

            assert (
                run(FULL_SESSION, chunker=chunker, options=FULL_OPTIONS, **one_message()).outcome()
                == reference
            )


def test_without_pipelining_commands_go_one_at_a_time():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250 hi\r\n"),
            (b"MAIL FROM:<a@example.com>\r\n", b"250 ok\r\n"),
            (b"RCPT TO:<b@example.com>\r\n", b"250 ok\r\n"),
            (b"RCPT TO:<c@example.com>\r\n", b"250 ok\r\n"),
            (b"DATA\r\n", b"354 go\r\n"),
            (STUFFED, b"250 queued\r\n"),
            (b"QUIT\r\n", b"221 bye\r\n"),
        ],
        **one_message(),
    )
    assert h.outcome()[1] == [
        "Idle",
        "Ready([])",
        "Done(True, [('b@example.com', 250), ('c@example.com', 250)])",
        "Idle",
        "Finished",
    ]


def test_helo_fallback_when_ehlo_is_refused():
    h = run(
        [
            (b"", b"220 old server\r\n"),
            (b"EHLO localhost\r\n", b"502 what?\r\n"),
            (b"HELO localhost\r\n", b"250 hello\r\n"),
        ]
    )
    assert h.outcome()[1] == ["Idle"]


def test_greeting_refused_is_an_error_with_code():
    h = run([(b"", b"554 5.7.1 go away\r\n")])
    (failed,) = h.events
    assert isinstance(failed, Failed)
    assert failed.error.code == 554 and failed.error.enhanced == "5.7.1"
    assert "go away" in str(failed.error)


def test_lmtp_uses_lhlo_and_reports_each_recipient():
    h = run(
        [
            (b"", b"220 lmtp\r\n"),
            (b"LHLO localhost\r\n", b"250-lmtp\r\n250 PIPELINING\r\n"),
            (
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"RCPT TO:<c@example.com>\r\nDATA\r\n",
                b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            ),
            (STUFFED, b"250 2.1.5 b delivered\r\n452 4.2.2 c over quota\r\n"),
            (b"QUIT\r\n", b"221 bye\r\n"),
        ],
        options={"lmtp": True},
        **one_message(),
    )
    done = next(e for e in h.events if isinstance(e, Done))
    assert done.success is True
    assert [(r.recipient, r.accepted, r.code, r.enhanced) for r in done.results] == [
        ("b@example.com", True, 250, "2.1.5"),
        ("c@example.com", False, 452, "4.2.2"),
    ]


def test_lmtp_all_deliveries_failed_is_not_success():
    h = run(
        [
            (b"", b"220 lmtp\r\n"),
            (b"LHLO localhost\r\n", b"250 lmtp\r\n"),
            (b"MAIL FROM:<a@example.com>\r\n", b"250 ok\r\n"),
            (b"RCPT TO:<b@example.com>\r\n", b"250 ok\r\n"),
            (b"DATA\r\n", b"354 go\r\n"),
            (STUFFED, b"550 no such mailbox\r\n"),
        ],
        options={"lmtp": True},
        **one_message({"from": "a@example.com", "to": "b@example.com"}),
    )
    done = next(e for e in h.events if isinstance(e, Done))
    assert done.success is False


def test_all_recipients_rejected_is_the_seeds_error():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250 hi\r\n"),
            (b"MAIL FROM:<a@example.com>\r\n", b"250 ok\r\n"),
            (b"RCPT TO:<b@example.com>\r\n", b"550 5.1.1 no b\r\n"),
            (b"RCPT TO:<c@example.com>\r\n", b"550 5.1.1 no c\r\n"),
        ],
        **one_message(),
    )
    failed = h.events[-1]
    assert isinstance(failed, Failed) and isinstance(failed.error, SmtpRecipientsError)
    assert str(failed.error) == "Can't send mail - all recipients were rejected"
    assert failed.error.rejected == {"b@example.com": "550 5.1.1 no b", "c@example.com": "550 5.1.1 no c"}
    assert failed.error.enhanced == "5.1.1"
    assert not h.sent.endswith(b"DATA\r\n")


def test_failed_message_then_next_message_uses_rset():
    messages = []

    def on_idle(h: Harness) -> None:
        if h.idles <= 2:
            h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
        else:
            h.call("quit")

    def on_ready(h: Harness, failed: list[str]) -> None:
        h.engine.send(b"hello")
        h.call("end")

    def on_done(h: Harness, done: Done) -> None:
        messages.append(done.success)

    run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 PIPELINING\r\n"),
            (
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                b"250 ok\r\n250 ok\r\n354 go\r\n",
            ),
            (b"hello\r\n.\r\n", b"554 5.6.0 rejected content\r\n"),
            (
                b"RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n",
            ),
            (b"hello\r\n.\r\n", b"250 queued\r\n"),
            (b"QUIT\r\n", b"221 bye\r\n"),
        ],
        on_idle=on_idle,
        on_ready=on_ready,
        on_done=on_done,
    )
    assert messages == [False, True]


def test_size_and_smtputf8_parameters():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250-SIZE 100\r\n250 SMTPUTF8\r\n"),
            ("MAIL FROM:<jöe@example.com> SIZE=42 SMTPUTF8\r\n".encode(), b"250 ok\r\n"),
        ],
        **one_message({"from": "jöe@example.com", "to": "b@example.com", "size": 42}),
    )
    assert h.engine.state is State.ENVELOPE


HELLO = [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250 hi\r\n")]


def refused_envelope(h: Harness, envelope: object) -> SmtpEnvelopeError:
    """use_envelope() from idle with an envelope that cannot be sent: nothing of it goes out,
    the error is reported and QUIT follows; the server's reply to it ends the session."""
    before = bytes(h.sent)
    h.call("use_envelope", envelope)
    failed = h.events[-1]
    assert isinstance(failed, Failed) and failed.quitting is True
    assert isinstance(failed.error, SmtpEnvelopeError) and failed.error.fatal is True
    assert bytes(h.sent) == before + b"QUIT\r\n" and h.engine.state is State.QUIT
    h.feed(b"221 bye\r\n")
    assert isinstance(h.events[-1], Finished) and h.engine.state is State.CLOSED
    assert bytes(h.sent) == before + b"QUIT\r\n"
    return failed.error


def test_size_over_the_servers_limit_is_refused_before_sending():
    h = run([(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250-hi\r\n250 SIZE 100\r\n")])
    error = refused_envelope(h, {"from": "a@example.com", "to": "b@example.com", "size": 101})
    assert "exceeds the server's limit of 100" in str(error)
    assert h.sent == b"EHLO localhost\r\nQUIT\r\n"


def test_non_ascii_address_without_smtputf8_is_refused():
    h = run(HELLO)
    assert "SMTPUTF8" in str(refused_envelope(h, {"from": "a@example.com", "to": "jöe@example.com"}))


@pytest.mark.parametrize(
    "address",
    [
        "a@example.com\r\nRCPT TO:<evil@example.com>",
        "a@example.com\nDATA",
        "a@example.com\rX",
        "a@exa\0mple.com",
        "a@example.com> SIZE=1",
        "<a@example.com",
        "a@example.com NOTIFY=NEVER",
        "a\t@example.com",
        "nodomain",
        "@example.com",
        "",
    ],
)
@pytest.mark.parametrize("field", ["to", "from"])
def test_injection_attempts_are_refused_before_anything_is_sent(address, field):
    h = run(HELLO)
    if field == "to":
        envelope = {"from": "a@example.com", "to": ["ok@example.com", address]}
    else:
        envelope = {"from": address or "x", "to": ["ok@example.com"]}
    refused_envelope(h, envelope)
    assert h.sent == b"EHLO localhost\r\nQUIT\r\n"


@pytest.mark.parametrize("to", [None, [], ""])
def test_no_recipients_is_the_seeds_error(to):
    h = run(HELLO)
    envelope = {"from": "a@example.com"} if to is None else {"from": "a@example.com", "to": to}
    error = refused_envelope(h, envelope)
    if to != "":
        assert str(error) == "Can't send mail - no recipients defined"


def test_after_a_refused_envelope_a_timeout_or_a_hang_up_only_ends_the_session():
    """One error a session: whatever happens while QUIT is under way ends it without a
    second Failed."""
    for ending in ("timeout", "lost", "garbage"):
        h = run(HELLO)
        h.call("use_envelope", {"from": "a@example.com", "to": []})
        if ending == "timeout":
            h._take(h.engine.fail(SmtpTimeoutError("timed out waiting for a reply (quit)")))
        elif ending == "lost":
            h._take(h.engine.connection_lost())
        else:
            h.feed(b"x" * (MAX_REPLY_LINE + 10))
        names = [type(e).__name__ for e in h.events]
        assert names == ["Idle", "Failed", "Finished"], (ending, names)
        assert h.engine.state is State.CLOSED and h.sent == b"EHLO localhost\r\nQUIT\r\n"


def test_quoted_local_part_with_space_is_allowed():
    h = run([(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250 hi\r\n")])
    h.call("use_envelope", {"from": '"john doe"@example.com', "to": "postmaster"})
    assert h.sent.endswith(b'MAIL FROM:<"john doe"@example.com>\r\n')


# -- STARTTLS ------------------------------------------------------------------------------


def test_starttls_when_offered_then_ehlo_again_then_auth():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n"),
            (b"STARTTLS\r\n", b"220 ready\r\n"),
            (b"", b"<TLS>"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH LOGIN\r\n"),
            (b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n"),
            (base64.b64encode(b"user") + b"\r\n", b"334 UGFzc3dvcmQ6\r\n"),
            (base64.b64encode(b"secret") + b"\r\n", b"235 ok\r\n"),
        ],
        options={"auth": {"user": "user", "pass": "secret"}},
    )
    assert h.outcome()[1] == ["StartTls", "Idle"]
    assert h.engine.tls_active
    assert all("secret" not in text and "c2VjcmV0" not in text for _, text in h.log)


def test_starttls_reply_with_injected_commands_after_it_is_discarded():
    """CVE-2011-0411: bytes after "220 ready" in the same read are not replies."""
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n"),
            (b"STARTTLS\r\n", b"220 ready\r\n250-evil\r\n250 AUTH PLAIN\r\n"),
        ]
    )
    assert h.engine.state is State.TLS
    assert h.engine._parser.buffered == 0
    h.feed(b"250 more plaintext\r\n")  # arriving before the handshake: dropped too
    h.tls()
    assert h.sent.endswith(b"STARTTLS\r\nEHLO localhost\r\n")
    h.feed(b"250 hi\r\n")
    assert h.outcome()[1] == ["StartTls", "Idle"]


@pytest.mark.parametrize(
    "injected",
    [
        b"250-SIZE 10",  # an unfinished line: it would prefix the first line after TLS
        b"250-SIZE 10\r\n250-8BITMIME",  # a whole line and an unfinished one
        b"250-SIZE 10\r",  # a line cut between CR and LF
    ],
)
def test_starttls_partial_line_after_220_ready_does_not_merge_into_the_ehlo_reply(injected):
    """A server (or a man in the middle) sends the start of a line after "220 ready", in the
    same read: the parser must forget it, or it merges with the EHLO reply after TLS (as
    "250-SIZE 10250-hi", or continues a reply of its own)."""
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n"),
            (b"STARTTLS\r\n", b"220 ready\r\n" + injected),
        ]
    )
    assert h.engine.state is State.TLS and h.engine._parser.buffered == 0
    h.tls()
    assert h.sent.endswith(b"STARTTLS\r\nEHLO localhost\r\n")
    h.feed(b"250-mx.example.com\r\n250 AUTH PLAIN\r\n")
    assert h.outcome()[1] == ["StartTls", "Idle"]
    assert "SIZE" not in h.engine.extensions and "8BITMIME" not in h.engine.extensions
    assert h.engine.extensions.auth_mechanisms == ["PLAIN"]
    server_lines = [text for direction, text in h.log if direction == "S"]
    assert server_lines[-2:] == ["250-mx.example.com", "250 AUTH PLAIN"]


def test_starttls_is_never_pipelined():
    h = run(
        [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250-hi\r\n250-PIPELINING\r\n250 STARTTLS\r\n")],
        options={"auth": {"user": "u", "pass": "p"}},
    )
    assert h.sent.endswith(b"\r\nSTARTTLS\r\n")
    assert h.engine.state is State.STARTTLS


def test_ignore_tls_skips_starttls():
    h = run(
        [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n")],
        options={"ignoreTLS": True},
    )
    assert h.outcome()[1] == ["Idle"]


def test_require_tls_without_starttls_is_an_error_and_no_auth():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH PLAIN\r\n"),
            (b"STARTTLS\r\n", b"502 5.5.1 not implemented\r\n"),
        ],
        options={"requireTLS": True, "auth": {"user": "u", "pass": "p"}},
    )
    (failed,) = h.events
    assert isinstance(failed, Failed) and isinstance(failed.error, SmtpTlsError)
    assert "requireTLS" in str(failed.error) and failed.error.code == 502
    assert b"AUTH" not in h.sent


def test_implicit_tls_does_not_starttls():
    h = run(
        [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n")],
        options={"useSecureTransport": True, "requireTLS": True},
    )
    assert h.outcome()[1] == ["Idle"]


# -- AUTH ----------------------------------------------------------------------------------


def test_auth_xoauth2_preferred_when_token_given_and_failure_detail():
    token = base64.b64encode(b"user=me@example.com\x01auth=Bearer tok123\x01\x01").decode()
    detail = base64.b64encode(b'{"status":"401"}').decode()
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n"),
            (f"AUTH XOAUTH2 {token}\r\n".encode(), f"334 {detail}\r\n".encode()),
            (b"\r\n", b"535 5.7.8 bad credentials\r\n"),
        ],
        options={"auth": {"user": "me@example.com", "pass": "pw", "xoauth2": "tok123"}},
    )
    failed = h.events[-1]
    assert isinstance(failed, Failed) and isinstance(failed.error, SmtpAuthError)
    assert failed.error.code == 535 and failed.error.enhanced == "5.7.8"
    assert "bad credentials" in str(failed.error) and '"status":"401"' in str(failed.error)
    assert all("tok123" not in text and token not in text for _, text in h.log)


def test_auth_cram_md5():
    challenge = b"<1896.697170952@postoffice.example.net>"
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    answer = base64.b64encode(f"user {digest}".encode())
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH CRAM-MD5\r\n"),
            (b"AUTH CRAM-MD5\r\n", b"334 " + base64.b64encode(challenge) + b"\r\n"),
            (answer + b"\r\n", b"235 ok\r\n"),
        ],
        options={"auth": {"user": "user", "pass": "secret"}},
    )
    assert h.outcome()[1] == ["Idle"]


def test_auth_method_forces_the_mechanism():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH CRAM-MD5 PLAIN\r\n"),
            (b"AUTH LOGIN\r\n", b""),
        ],
        options={"auth": {"user": "u", "pass": "p"}, "authMethod": "login"},
    )
    assert h.engine.state is State.AUTH


def test_auth_failure_carries_server_text():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250 AUTH PLAIN\r\n"),
            (
                b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n",
                b"535 5.7.8 Authentication credentials invalid\r\n",
            ),
        ],
        options={"auth": {"user": "u", "pass": "p"}},
    )
    error = h.events[-1].error
    assert isinstance(error, SmtpAuthError)
    assert str(error) == "AUTH PLAIN failed: 5.7.8 Authentication credentials invalid"


# -- no password in cleartext (RFC 8314) -----------------------------------------------------------

REMOTE = "mail.example.com"
CLEARTEXT_HELLO = [
    (b"", b"220 hi\r\n"),
    (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n"),
]


@pytest.mark.parametrize(
    ("auth", "method", "secret"),
    [
        ({"user": "u", "pass": "p"}, None, "password"),
        ({"user": "u", "pass": "p"}, "LOGIN", "password"),
        ({"user": "u", "xoauth2": "tok"}, None, "token"),
    ],
)
def test_auth_without_tls_to_a_remote_host_is_refused_before_any_credential(auth, method, secret):
    options = {"auth": auth, **({"authMethod": method} if method else {})}
    h = run(CLEARTEXT_HELLO, options=options, host=REMOTE, loopback=False)
    (failed,) = h.events
    assert isinstance(failed, Failed) and failed.quitting is True
    error = failed.error
    assert isinstance(error, SmtpTlsError) and error.stage == "AUTH" and error.fatal is True
    assert f"not sending the {secret} in cleartext" in str(error) and REMOTE in str(error)
    assert "allowInsecureAuth" in str(error) and "the server offered no STARTTLS" in str(error)
    assert h.sent == b"EHLO localhost\r\nQUIT\r\n"  # no AUTH line at all
    h.feed(b"221 bye\r\n")
    assert isinstance(h.events[-1], Finished) and h.engine.state is State.CLOSED


def test_ignore_tls_with_auth_to_a_remote_host_says_why():
    h = run(
        [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250-hi\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")],
        options={"ignoreTLS": True, "auth": {"user": "u", "pass": "p"}},
        host=REMOTE,
        loopback=False,
    )
    (failed,) = h.events
    assert "ignoreTLS is set" in str(failed.error) and h.sent == b"EHLO localhost\r\nQUIT\r\n"


def test_allow_insecure_auth_sends_the_password_without_tls():
    h = run(
        [*CLEARTEXT_HELLO, (b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n", b"235 ok\r\n")],
        options={"auth": {"user": "u", "pass": "p"}, "allowInsecureAuth": True},
        host=REMOTE,
        loopback=False,
    )
    assert h.outcome()[1] == ["Idle"]


def test_cram_md5_may_be_used_without_tls_to_a_remote_host():
    challenge = b"<1.2@example.net>"
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH PLAIN CRAM-MD5\r\n"),
            (b"AUTH CRAM-MD5\r\n", b"334 " + base64.b64encode(challenge) + b"\r\n"),
            (base64.b64encode(f"user {digest}".encode()) + b"\r\n", b"235 ok\r\n"),
        ],
        options={"auth": {"user": "user", "pass": "secret"}},
        host=REMOTE,
        loopback=False,
    )
    assert h.outcome()[1] == ["Idle"]


def test_after_starttls_auth_to_a_remote_host_goes_ahead():
    h = run(
        [
            (b"", b"220 hi\r\n"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 STARTTLS\r\n"),
            (b"STARTTLS\r\n", b"220 ready\r\n"),
            (b"", b"<TLS>"),
            (b"EHLO localhost\r\n", b"250-hi\r\n250 AUTH PLAIN\r\n"),
            (b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n", b"235 ok\r\n"),
        ],
        options={"auth": {"user": "u", "pass": "p"}},
        host=REMOTE,
        loopback=False,
    )
    assert h.outcome()[1] == ["StartTls", "Idle"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", REMOTE])
def test_the_host_as_written_never_earns_cleartext_auth(host):
    """The engine does not look at the host label: only what the transport says of the peer
    it reached (stays_local, set by the client when the connection is made) counts."""
    for loopback in (True, False):
        h = run(CLEARTEXT_HELLO, options={"auth": {"user": "u", "pass": "p"}}, host=host, loopback=loopback)
        assert h.sent.startswith(b"EHLO localhost\r\nAUTH PLAIN ") is loopback
        assert (h.sent == b"EHLO localhost\r\nQUIT\r\n") is not loopback
    from pysmtp_wasm import SmtpEngine, parse_options

    assert SmtpEngine(parse_options({}), host=host).stays_local is False


# -- replies that are not SMTP ----------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"2x0 hi\r\n",
        b"220-hi\r\n250 other code\r\n",
        b"120 hi\r\n",
        b"220?hi\r\n",
    ],
)
def test_malformed_replies_are_protocol_errors(garbage):
    h = Harness()
    h.feed(garbage)
    (failed,) = h.events
    assert isinstance(failed, Failed) and isinstance(failed.error, SmtpProtocolError)


def test_endless_reply_line_is_bounded():
    h = Harness()
    for _ in range(MAX_REPLY_LINE // 1000 + 2):
        h.feed(b"220" + b"x" * 1000)
    (failed,) = h.events
    assert isinstance(failed.error, SmtpProtocolError) and "longer than" in str(failed.error)
    assert h.engine.state is State.CLOSED
    assert h.engine._parser.buffered == 0  # the oversized line is not kept after the error
    h.feed(b"y" * 100_000)  # after the error: ignored, nothing grows
    assert h.engine._parser.buffered == 0


@pytest.mark.parametrize(
    "hostile",
    [
        b"220 " + b"x" * 6000,
        b"220-hi\r\n" + b"220-x\r\n" * (MAX_REPLY_LINES + 5),
        b"220-hi\r\n2x0 bad\r\n" + b"z" * 3000,
    ],
    ids=["endless line", "endless reply", "malformed line"],
)
def test_nothing_received_is_kept_after_the_session_fails(hostile):
    h = Harness()
    h.feed(hostile)
    assert isinstance(h.events[-1], Failed) and h.engine.state is State.CLOSED
    assert h.engine._parser.buffered == 0 and h.engine._parser._lines == []


def test_nothing_received_is_kept_after_close_or_a_timeout():
    for end in ("close", "fail"):
        h = Harness()
        h.feed(b"220-partial greeting\r\n220 and half a li")
        if end == "close":
            h.engine.close()
        else:
            h.call("fail", SmtpProtocolError("timed out"))
        assert h.engine._parser.buffered == 0 and h.engine._parser._lines == []


def test_unsolicited_421_while_idle_is_an_error_with_code():
    h = run([(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250 hi\r\n")])
    h.feed(b"421 4.4.2 idle timeout\r\n")
    failed = h.events[-1]
    assert isinstance(failed, Failed) and failed.error.code == 421 and failed.error.enhanced == "4.4.2"


def test_connection_lost_mid_data_is_an_error():
    h = run(
        [(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250 hi\r\n")],
    )
    h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
    h.feed(b"250 ok\r\n")
    h.feed(b"250 ok\r\n")
    h.feed(b"354 go\r\n")
    h.engine.send(b"partial")
    h.call("connection_lost")
    failed = h.events[-1]
    assert isinstance(failed, Failed) and "during the message data" in str(failed.error)


# -- calls in the wrong state --------------------------------------------------------------


def test_calls_in_the_wrong_state_raise_and_change_nothing():
    h = run([(b"", b"220 hi\r\n"), (b"EHLO localhost\r\n", b"250 hi\r\n")])
    with pytest.raises(SmtpUsageError):
        h.engine.send(b"x")
    with pytest.raises(SmtpUsageError):
        h.engine.end()
    h.call("use_envelope", {"from": "a@example.com", "to": "b@example.com"})
    with pytest.raises(SmtpUsageError, match="useEnvelope"):
        h.engine.use_envelope({"from": "a@example.com", "to": "b@example.com"})
    with pytest.raises(SmtpUsageError, match="quit"):
        h.engine.quit()
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    h.engine.send(b"x")
    h.call("end")
    with pytest.raises(SmtpUsageError, match="send"):
        h.engine.send(b"late")
    h.feed(b"250 queued\r\n")
    assert h.outcome()[1][-2:] == ["Done(True, [('b@example.com', 250)])", "Idle"]
    assert h.sent.endswith(b"DATA\r\nx\r\n.\r\n")


def test_quit_during_handshake_is_sent_when_the_step_ends():
    h = Harness(options={"auth": {"user": "u", "pass": "p"}})
    h.feed(b"220 hi\r\n")
    h.call("quit")
    h.feed(b"250 AUTH PLAIN\r\n")
    assert h.sent == b"EHLO localhost\r\nQUIT\r\n"
    h.feed(b"221 bye\r\n")
    assert h.outcome()[1] == ["Finished"]
