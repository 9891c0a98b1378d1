"""A real headless Chromium for the web page's test: Debian's ``chromium`` and ``chromium-driver`` (the Makefile's
set-up installs them with apt where it can), driven by selenium. Nothing is downloaded: the browser and its driver are
the system's, and the flags below keep Chromium from calling out to the network at start.

Where no browser is installed the test skips and says why, unless ``UCR_REQUIRE_BROWSER=1`` (CI sets it), where the
missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
QUIET_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--autoplay-policy=no-user-gesture-required")


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) executables, or None."""
    browser = os.environ.get("UCR_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = os.environ.get("UCR_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVER_NAMES)), None)
    return (browser, driver) if browser and driver else None


def require_browser() -> tuple[str, str]:
    found = find_browser()
    if found is None:
        reason = ("no Chromium with its driver on this machine (looked for chromium and chromedriver on PATH); "
                  "install Debian's `chromium chromium-driver` (make test does, as root with apt) or set "
                  "UCR_CHROMIUM and UCR_CHROMEDRIVER")
        if os.environ.get("UCR_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@contextlib.contextmanager
def chromium(folder: Path, width: int = 1280, height: int = 800) -> Iterator:
    """A selenium driver for a fresh headless Chromium whose downloads land in ``folder / "downloads"``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = require_browser()
    downloads = folder / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*QUIET_FLAGS, f"--user-data-dir={folder / 'profile'}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(folder / "chromedriver.log")),
                              options=options)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], object], timeout: float, what: str, driver=None):
    """Poll ``condition`` until it returns something truthy; on timeout, fail with ``what`` and the page's console."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    console = ""
    if driver is not None:
        with contextlib.suppress(Exception):
            console = "\n".join(entry["message"] for entry in driver.get_log("browser"))
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; browser console:\n{console}")


def wait_for_download(folder: Path, name: str, timeout: float = 30.0) -> Path:
    path = folder / "downloads" / name
    wait_for(lambda: path.exists() and not (folder / "downloads" / f"{name}.crdownload").exists(), timeout,
             f"the download {name}")
    return path
