"""The page sends a mail: the SMTP server received it, as the page wrote it."""

from pathlib import Path

PAGE = (Path(__file__).parent / "send.html").read_text()


def test_the_page_sends_mail(selenium_standalone_noload, smtp_server, smtp_proxy, pysmtp_dist):
    browser = selenium_standalone_noload
    browser.goto(pysmtp_dist.add_page("send.html", PAGE))
    outcome = browser.run_js(f"return await sendMail({smtp_proxy.url!r}, {smtp_server.port});")
    assert outcome == "sent"
    [mail] = smtp_server.messages
    assert mail.mail_from == "me@example.com"
    assert mail.rcpt_tos == ["you@example.org"]
    assert mail.message["Subject"] == "Hello from the page"
    assert mail.message.get_content() == "It works.\n"
