"""A browser that dies under a test (conftest.py, "a browser that dies in a test"): the test runs
once more in a new browser, and the module's later tests get the new browser too."""

from __future__ import annotations

import pytest

from . import browsers
from .conftest import Page

_first_runs: dict[str, int] = {}  # test id -> id() of the driver its first run killed


def test_a_browser_that_dies_in_a_test_is_replaced_and_the_test_runs_again(
    page: Page, request: pytest.FixtureRequest
) -> None:
    if request.node.nodeid not in _first_runs:
        _first_runs[request.node.nodeid] = id(page.driver)
        assert browsers.kill(page.driver), "no browser process found under the driver"
        page.run("return 1;")  # the browser is gone: the driver raises
        pytest.fail("the page answered after its browser was killed")
    # the second run: a new browser, on the tab's first page, with PySmtp loaded
    assert id(page.driver) != _first_runs[request.node.nodeid]
    assert page.run("const api = await window.smtp; return typeof api.SmtpClient;") == "function"


def test_the_next_test_has_the_new_browser(page: Page) -> None:
    assert page.alive()
    assert page.run("return location.pathname;").endswith("/minimal.html")
