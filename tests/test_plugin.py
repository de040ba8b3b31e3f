"""The pytest plugin users get with ``pysmtp-wasm[testing]`` (pysmtp_wasm/pytest_plugin.py):
each fixture, each server option, the page in the browser through them, teardown leaving
nothing running, the message when the extra is missing; and the built wheel installed in a
fresh venv running the example project of examples/page-test in headless Chromium."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import urllib.request
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from pysmtp_wasm import SmtpClient
from pysmtp_wasm.pytest_plugin import SmtpProxy, SmtpServerFactory
from pysmtp_wasm.testing import Certs, DistServer, SmtpServer

from .servers import CHROME_FLAGS
from .test_asyncio_e2e import deliver

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "page-test"


def message(subject: str = "Grüße", body: str = "Hello.\n") -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "me@example.com", "you@example.org", subject
    mail.set_content(body)
    return mail


# -- the servers ------------------------------------------------------------------------------------


def test_smtp_server_keeps_the_envelope_and_the_parsed_message(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_server.port) as client:
        client.send_message(message(), to_addrs=["you@example.org", "cc@example.org"])
    [mail] = smtp_server.messages
    assert (mail.mail_from, mail.rcpt_tos) == ("me@example.com", ["you@example.org", "cc@example.org"])
    assert isinstance(mail.message, EmailMessage)
    assert mail.message["Subject"] == "Grüße"
    assert mail.message.get_content() == "Hello.\n"
    assert b"\r\n\r\n" in mail.content and (mail.tls, mail.login) == (False, None)
    assert smtp_server.wait_for_messages(1) == [mail]
    with pytest.raises(AssertionError, match="1 message"):
        smtp_server.wait_for_messages(2, timeout=0.2)


def test_starttls_with_the_certificates_and_auth(
    smtp_server_factory: SmtpServerFactory, smtp_certs: Certs
) -> None:
    server = smtp_server_factory(starttls=True, auth={"alice": "pw"}, auth_require_tls=True)
    with smtplib.SMTP("localhost", server.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # only after TLS, as asked
        client.starttls(context=smtp_certs.client_context())  # verifies the name: localhost
        client.login("alice", "pw")
        client.send_message(message())
    [mail] = server.messages
    assert (mail.tls, mail.login) == (True, "alice")
    assert smtp_certs.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert smtp_certs.cert_path.read_text().count("BEGIN CERTIFICATE") >= 1 and smtp_certs.key_path.is_file()


def test_implicit_tls_answers_to_127_0_0_1_and_refuses_a_wrong_password(
    smtp_server_factory: SmtpServerFactory, smtp_certs: Certs
) -> None:
    server = smtp_server_factory(implicit_tls=True, auth={"alice": "pw"})
    with smtplib.SMTP_SSL("127.0.0.1", server.port, context=smtp_certs.client_context()) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")
        client.login("alice", "pw")
        client.send_message(message())
    assert [(m.tls, m.login) for m in server.messages] == [(True, "alice")]


def test_refused_recipients_and_the_size_limit(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory(reject={"gone@example.org"}, size_limit=2000)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "2000"
        to = ["you@example.org", "gone@example.org"]
        refused = client.sendmail("me@example.com", to, b"Subject: x\r\n\r\nx\r\n")
        assert refused == {"gone@example.org": (550, b"5.1.1 <gone@example.org>: recipient rejected")}
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            client.sendmail("me@example.com", ["you@example.org"], b"Subject: x\r\n\r\n" + b"x" * 3000)
        assert too_big.value.smtp_code == 552
    assert [m.rcpt_tos for m in server.messages] == [["you@example.org"]]


async def test_lmtp_with_a_recipient_failing_after_data(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory(lmtp=True, lmtp_fail={"full@example.org"})
    client = SmtpClient("127.0.0.1", server.port, {"lmtp": True})
    out = await deliver(client, [{"from": "me@example.com", "to": ["you@example.org", "full@example.org"]}])
    assert out.errors == [] and out.done == [True]
    assert {r.recipient: r.accepted for r in client.lastResults} == {
        "you@example.org": True, "full@example.org": False,
    }  # fmt: skip
    assert any(text.startswith("LHLO") for direction, text in out.log if direction == "C")


async def test_chunking_the_message_arrives_by_bdat_as_written(
    smtp_server_factory: SmtpServerFactory,
) -> None:
    server = smtp_server_factory(chunking=True, pipelining=True)
    text = "".join(f"{'.' if i % 3 == 0 else ''}line {i}\r\n" for i in range(40_000))  # ~400 KB
    body = "Subject: chunks\r\n\r\n" + text
    client = SmtpClient("127.0.0.1", server.port)
    out = await deliver(client, body=[body[:150_000], body[150_000:]])
    assert out.errors == [] and out.done == [True]
    sent = [t for d, t in out.log if d == "C"]
    assert any(t.startswith("BDAT ") and t.endswith(" LAST") for t in sent)
    assert len([t for t in sent if t.startswith("BDAT ")]) > 1 and "DATA" not in sent
    [mail] = server.messages
    assert mail.content == body.encode()  # no dot-stuffing with BDAT: every dot as written
    assert mail.message.get_content() == text.replace("\r\n", "\n")


async def test_chunking_with_lmtp(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory(chunking=True, pipelining=True, lmtp=True, lmtp_fail={"full@example.org"})
    client = SmtpClient("127.0.0.1", server.port, {"lmtp": True})
    out = await deliver(client, [{"from": "me@example.com", "to": ["you@example.org", "full@example.org"]}])
    assert any(t.startswith("BDAT ") for d, t in out.log if d == "C")
    assert {r.recipient: r.accepted for r in client.lastResults} == {
        "you@example.org": True, "full@example.org": False,
    }  # fmt: skip
    assert [m.rcpt_tos for m in server.messages] == [["you@example.org", "full@example.org"]]


def test_bdat_refused_without_chunking_or_recipients(smtp_server_factory: SmtpServerFactory) -> None:
    plain, chunking = smtp_server_factory(), smtp_server_factory(chunking=True, size_limit=10)

    def talk(port: int, data: bytes, replies: int) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            sock.sendall(data)
            lines = sock.makefile("rb").read().split(b"\r\n")  # until the server closes after QUIT
        return [line for line in lines if line[:1] in b"2345" and line[3:4] == b" "][1 : 1 + replies]

    refused = talk(plain.port, b"EHLO x\r\nBDAT 3 LAST\r\nQUIT\r\n", 2)[1]
    assert refused == b'500 Error: command "BDAT" not recognized'
    # The chunk is read even when refused, so "QUIT" in it is no command; then a real QUIT.
    replies = talk(chunking.port, b"EHLO x\r\nBDAT 6\r\nQUIT\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
                   b"BDAT 8\r\n12345678BDAT 4 LAST\r\n9012QUIT\r\n", 6)  # fmt: skip
    assert [r[:3] for r in replies] == [b"250", b"503", b"250", b"250", b"250", b"552"]
    assert chunking.messages == []


# -- the static server --------------------------------------------------------------------------------


def test_pysmtp_dist_serves_dist_and_the_tests_pages(pysmtp_dist: DistServer) -> None:
    with urllib.request.urlopen(pysmtp_dist.url + "pysmtp-wasm.js", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/javascript"
        assert b"globalThis.PySmtp" in response.read()
    url = pysmtp_dist.add_page("mine.html", "<p>mine</p>")
    assert url == pysmtp_dist.url + "mine.html"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"<p>mine</p>"
    assert pysmtp_dist.url.startswith("http://127.0.0.1:")


# -- in the browser -----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<script src="pysmtp-wasm.js"></script>
<script>
  async function sendMail(proxy, port, options) {
    const { SmtpClient } = await PySmtp.load({ proxy });
    return new Promise((resolve) => {
      const client = new SmtpClient("localhost", port, options);
      let sent = false;
      client.onidle = () => {
        if (sent) return client.quit();
        sent = true;
        client.useEnvelope({ from: "me@example.com", to: ["you@example.org", "gone@example.org"] });
      };
      client.onready = () => {
        client.send("Subject: from the page\\r\\n\\r\\nhi\\r\\n");
        client.end();
      };
      client.ondone = (success) => resolve("done:" + success);
      client.onerror = (err) => resolve(err.name + ": " + err.message);
      client.connect();
    });
  }
</script>
"""


def test_a_page_through_the_fixtures_with_starttls_and_auth(
    selenium_standalone_noload: Any,
    smtp_server_factory: SmtpServerFactory,
    smtp_proxy: SmtpProxy,
    smtp_certs: Certs,
    pysmtp_dist: DistServer,
) -> None:
    # pytest-pyodide's selenium fixture, as a user's test would have it; the server that the
    # proxy reaches besides its own (smtp_server) is added with for_server().
    server = smtp_server_factory(
        starttls=True, auth={"alice": "pw"}, reject={"gone@example.org"}, chunking=True, pipelining=True
    )
    url = smtp_proxy.for_server(server)
    browser = selenium_standalone_noload
    browser.goto(pysmtp_dist.add_page("plugin.html", PAGE))
    options = {"ca": smtp_certs.ca_pem, "requireTLS": True, "auth": {"user": "alice", "pass": "pw"}}
    call = f"return await sendMail({url!r}, {server.port}, {json.dumps(options)});"
    assert browser.run_js(call) == "done:true"
    [mail] = server.messages
    assert (mail.tls, mail.login, mail.rcpt_tos) == (True, "alice", ["you@example.org"])
    assert mail.message["Subject"] == "from the page"
    assert server.recorder.commands[0] == "STARTTLS" and server.recorder.commands[-1].endswith(" LAST")
    assert smtp_proxy.url.endswith("?token=" + smtp_proxy.token)


def test_a_playwright_page_through_the_same_fixtures(
    smtp_server: SmtpServer, smtp_proxy: SmtpProxy, pysmtp_dist: DistServer
) -> None:
    # Playwright driving Debian's Chromium (never a downloaded browser): the fixtures are plain
    # URLs, ports and PEM, so any driver uses them alike.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROME_FLAGS)
        try:
            page = browser.new_page()
            page.goto(pysmtp_dist.add_page("playwright.html", PAGE))
            outcome = page.evaluate(
                "([proxy, port]) => sendMail(proxy, port, {})", [smtp_proxy.url, smtp_server.port]
            )
        finally:
            browser.close()
    assert outcome == "done:true"
    assert [m.rcpt_tos for m in smtp_server.messages] == [["you@example.org", "gone@example.org"]]


# -- as a user's project runs it --------------------------------------------------------------------


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a new process on pytester's folder, with this checkout's package and plugin."""
    os.environ["PYTHONPATH"] = str(ROOT)  # pytester restores os.environ after the test
    return pytester.runpytest_subprocess("-p", "pysmtp_wasm.pytest_plugin", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("kind", ["pysmtp-wasm-proxy", "websockify"])
def test_the_proxy_stops_after_the_test_with_its_children(pytester: pytest.Pytester, kind: str) -> None:
    pytester.makepyfile(
        f"""
        import os, socket
        from pathlib import Path

        import pytest

        @pytest.mark.parametrize("smtp_proxy", ["{kind}"], indirect=True)
        def test_open(smtp_proxy):
            assert smtp_proxy.kind == "{kind}"
            # A connection left open, in the middle of its handshake.
            socket.create_connection(("127.0.0.1", smtp_proxy.port)).sendall(b"GET / HTTP/1.1\\r\\n")
            Path(os.environ["PID_FILE"]).write_text(f"{{smtp_proxy.pid}} {{smtp_proxy.port}}")
        """
    )
    pid_file = pytester.path / "pid"
    os.environ["PID_FILE"] = str(pid_file)
    run_inner(pytester).assert_outcomes(passed=1)
    pid, port = map(int, pid_file.read_text().split())
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # its process group: the server and every child
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), 2).close()


def test_without_the_extra_the_fixtures_say_what_to_install(pytester: pytest.Pytester) -> None:
    # aiosmtpd made unimportable, as in a venv with pysmtp-wasm but not its [testing] extra:
    # pytest still runs (the plugin imports without it), and a test using a fixture fails so.
    pytester.makeconftest("import sys\nsys.modules['aiosmtpd'] = None\n")
    pytester.makepyfile("def test_mine():\n    pass\n\ndef test_smtp(smtp_server):\n    pass\n")
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert 'needs the "testing" extra: install the wheel from' in result.stdout.str()
    assert 'pysmtp_wasm-<version>-py3-none-any.whl[testing]"' in result.stdout.str()
    assert "missing: aiosmtpd\n" in result.stdout.str()


def test_pysmtp_dist_names_the_folder_it_did_not_find(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_page(pysmtp_dist):\n    pass\n")
    result = run_inner(pytester, "--pysmtp-dist", str(pytester.path / "nowhere"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*nowhere holds no pysmtp-wasm.js*--pysmtp-dist DIR*"])


def test_the_example_with_pytest_pyodides_selenium_fixture(pytester: pytest.Pytester) -> None:
    # ``selenium`` boots pytest-pyodide's own Pyodide first (from --dist-dir, so dist/pyodide/)
    # before the test navigates to its page; ``selenium_standalone_noload`` skips that.
    for name in ("pyproject.toml", "send.html"):
        (pytester.path / name).write_bytes((EXAMPLE / name).read_bytes())
    test = (EXAMPLE / "test_page.py").read_text().replace("selenium_standalone_noload", "selenium")
    (pytester.path / "test_page.py").write_text(test)
    (pytester.path / "dist").symlink_to(ROOT / "dist")
    os.environ["SE_CHROMEDRIVER"] = "/usr/bin/chromedriver"
    result = run_inner(pytester, "--dist-dir", "dist/pyodide", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_the_page_sends_mail?chrome? PASSED*"])


def pins(*names: str) -> list[str]:
    """The requirements of tests/requirements.txt with these names, as it pins them."""
    lines = (ROOT / "tests" / "requirements.txt").read_text().splitlines()
    found = [line.strip() for line in lines if line.split("==")[0].strip() in names]
    assert len(found) == len(names), found
    return found


def test_the_wheel_with_its_extra_runs_the_example_project(tmp_path: Path) -> None:
    [wheel] = (ROOT / "dist").glob("pysmtp_wasm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "pysmtp_wasm/pytest_plugin.py" in names and "pysmtp_wasm/testing/_smtp.py" in names
    assert "[pytest11]\npysmtp_wasm=pysmtp_wasm.pytest_plugin\n" in entry_points
    for pin in pins("aiosmtpd", "trustme", "websockify", "websockets", "prometheus-client"):
        assert f'Requires-Dist: {pin} ; extra == "testing"' in metadata, metadata
    for pin in pins("websockets", "prometheus-client"):
        assert f'Requires-Dist: {pin} ; extra == "proxy"' in metadata, metadata
    assert "[console_scripts]\npysmtp-wasm-proxy=pysmtp_wasm.proxy:main\n" in entry_points
    assert all(not n.startswith(("tests/", "examples/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")

    def pip(*args: str) -> None:
        subprocess.run([python, "-m", "pip", "install", "--quiet", *args], check=True, timeout=600)

    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "send.html", "test_page.py"):
        (project / name).write_bytes((EXAMPLE / name).read_bytes())
    (project / "dist").symlink_to(ROOT / "dist")  # the site's copy of dist/, as its users deploy it
    env = {**os.environ, "SE_CHROMEDRIVER": "/usr/bin/chromedriver"}
    env.pop("PYTHONPATH", None)

    def pytest_in_project() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
            cwd=project, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    # First without the extra: pytest runs, and the fixtures say what to install.
    pip(str(wheel), *pins("pytest", "pytest-pyodide", "selenium"))
    without = pytest_in_project()
    assert without.returncode == 1, without.stdout + without.stderr
    assert 'pip install "dist/pysmtp_wasm-<version>-py3-none-any.whl[testing]"' in without.stdout, (
        without.stdout
    )
    check = "import sys, pysmtp_wasm; assert not {'aiosmtpd', 'trustme', 'pytest'} & set(sys.modules)"
    subprocess.run([python, "-c", check], check=True, cwd=tmp_path)

    pip(f"{wheel}[testing]")
    run = pytest_in_project()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "test_page.py::test_the_page_sends_mail[chrome] PASSED" in run.stdout, run.stdout


def test_the_readme_shows_the_example_project_as_it_is() -> None:
    section = (ROOT / "docs" / "testing.md").read_text()
    blocks = section.split("```")[1::2]  # the fenced blocks' contents, language first
    shown = {block.split("\n", 1)[0]: block.split("\n", 1)[1] for block in blocks}
    assert shown["toml"] == (EXAMPLE / "pyproject.toml").read_text()
    assert shown["html"] == (EXAMPLE / "send.html").read_text()
    python = [block.split("\n", 1)[1] for block in blocks if block.startswith("python")]
    assert (EXAMPLE / "test_page.py").read_text() in python
