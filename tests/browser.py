"""A real headless browser for the tests: Debian's chromium, driven by Playwright.

The Makefile installs the `chromium` package; a run without it fails here, naming it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the browser tests need the Debian package chromium (make pytest installs it)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per module; each test opens its own context.

    Per module, not per session: Playwright's sync API keeps an event loop running in this
    thread while it is open, and other modules' tests call `asyncio.run`.
    """
    with sync_playwright() as playwright:
        # The rules map a test-only name to loopback, as a rebinding attacker's DNS would.
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--host-resolver-rules=MAP *.rebind.test 127.0.0.1"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
