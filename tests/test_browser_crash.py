"""A browser that dies under a test (conftest.py, "a browser that dies in a test"): the test runs
once more in a new browser, and the module's later tests get the new browser too. The page's
processes are killed as a crash of the page would end them (the CI run that showed the need lost
WebKit's web process: "Could not parse script result"), the browser and its driver left running."""

from __future__ import annotations

import time
from typing import Any

import pytest

from . import browsers
from .conftest import Page

# test id -> the driver whose pages its first run killed (the object itself: a freed driver's
# id() could be a new one's)
_first_runs: dict[str, Any] = {}


def test_a_browser_that_dies_in_a_test_is_replaced_and_the_test_runs_again(
    page: Page, request: pytest.FixtureRequest
) -> None:
    if request.node.nodeid not in _first_runs:
        _first_runs[request.node.nodeid] = page.driver
        assert browsers.crash_pages(page.driver), "no page process found under the driver"
        deadline = time.monotonic() + 10  # (Firefox may answer once more as the crash reaches it)
        while page.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        page.run("return 1;")  # the page is gone: the driver raises
        pytest.fail("the page answered after its processes were killed")
    # the second run: a new browser, on the tab's first page, with PySmtp loaded
    assert page.driver is not _first_runs[request.node.nodeid]
    assert page.run("const api = await window.smtp; return typeof api.SmtpClient;") == "function"


def test_the_next_test_has_the_new_browser(page: Page) -> None:
    assert page.alive()
    assert page.run("return location.pathname;").endswith("/minimal.html")
