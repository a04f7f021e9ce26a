"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``; ``.ci/run``
installs them) for the browser tests."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium(authorization: str | None = None):  # type: ignore[no-untyped-def]
    """Headless Chromium through Selenium; ``authorization``: a header sent with every request."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("FULFILLMENT_REQUIRE_BROWSER"):
            pytest.fail("chromium / chromedriver not installed (CI installs them)")
        pytest.skip("chromium / chromedriver not installed; .ci/run installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1920,1080",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    if authorization:  # Flower's basic auth, sent the way a logged-in browser would
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": authorization}}
        )
    return browser
