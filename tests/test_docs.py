"""The docs show code that runs: the README's first page sends its message, as printed, in every
engine (only the proxy's port and the test CA are put in), and every link between the docs
lands on a file and a heading that exist."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .certs import Certificate, self_signed
from .conftest import Page
from .servers import PysmtpProxy, Recorder, SmtpServer, modern_tls_context

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Console output of the page, kept for the test (the example reports by console.log/error).
RECORD_CONSOLE = """<script>
  window.logged = [];
  for (const kind of ["log", "error"]) {
    const original = console[kind];
    console[kind] = (...values) => {
      window.logged.push([kind, ...values.map(String)]);
      original.apply(console, values);
    };
  }
  addEventListener("error", (event) => window.logged.push(["uncaught", String(event.message)]));
  addEventListener("unhandledrejection", (event) => window.logged.push(["unhandled", String(event.reason)]));
</script>
"""


def first_page_example() -> str:
    section = README.read_text().split("## A first page\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```html\n", 1)[1].split("```", 1)[0]


def test_the_readme_first_page_sends_its_message(
    page: Page, proxy: PysmtpProxy, pysmtp_dist: Any, tmp_path: Path
) -> None:
    cert: Certificate = self_signed(tmp_path, "smtp.example.com")
    recorder = Recorder(users={"me@example.com": "app-password"})
    html = first_page_example()
    # The page's host and port are labels (the proxy's token decides where the bytes go), so
    # only the proxy's port changes, the test CA is pinned (roots.pem does not hold it), and
    # the page is served beside dist/'s files rather than above dist/.
    assert '"ws://127.0.0.1:8080/?token=mail"' in html and "useSecureTransport: true," in html
    assert '<script src="dist/pysmtp-wasm.js">' in html
    with SmtpServer(recorder, implicit_tls=modern_tls_context(cert)) as server:
        url = proxy.add(server.port, token="mail")
        html = html.replace("ws://127.0.0.1:8080/?token=mail", url)
        html = html.replace('src="dist/pysmtp-wasm.js"', 'src="pysmtp-wasm.js"')
        html = html.replace("useSecureTransport: true,", f"useSecureTransport: true, ca: {cert.cert_pem!r},")
        try:
            page.driver.get(pysmtp_dist.add_page(f"readme-{page.engine}.html", RECORD_CONSOLE + html))
            logged = page.run(
                """
                const deadline = Date.now() + 60000;
                while (!window.logged.length && Date.now() < deadline) {
                  await new Promise((r) => setTimeout(r, 50));
                }
                return window.logged;
                """
            )
        finally:
            page.goto(f"{page.base_url}/minimal.html")
        server_deadline = time.monotonic() + 10
        while not recorder.messages and time.monotonic() < server_deadline:
            time.sleep(0.05)
    assert [entry[:2] for entry in logged] == [["log", "accepted:"]], logged
    assert logged[0][2] == "you@example.org" and logged[0][3].startswith("<"), logged
    (mail,) = recorder.messages
    assert mail.tls is True and mail.login == "me@example.com"
    assert mail.mail_from == "me@example.com" and mail.rcpt_tos == ["you@example.org"]
    assert mail.message["Subject"] == "Hello"
    assert mail.message.get_content() == "Hello from the browser.\n"


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.*)", line)):
            found.add(heading_anchor(m.group(1)))
    return found


def test_every_link_between_the_docs_lands() -> None:
    broken = []
    for doc in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_door() -> None:
    """At most ~250 lines, and its contents list reaches every page of docs/."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\]\(docs/([\w.-]+\.md)", contents))
    assert listed == {doc.name for doc in DOCS}
