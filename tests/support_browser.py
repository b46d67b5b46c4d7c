"""Test support: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Both come from the distribution (`scripts/install-browser`), never from a download at test time:
Selenium is handed the driver's path, so its Selenium Manager has nothing to fetch, and Chromium
is started with its background networking off (this machine has no internet; without the flags
it keeps trying Google's hosts)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("BOT_COORDINATOR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BOT_COORDINATOR_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "run `bash scripts/install-browser` (Debian's chromium and chromium-driver)"


def missing_browser() -> str | None:
    """Why the browser cannot start here; None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} is not installed: {INSTALL_HINT}"
    return None


def start_chromium(width: int = 1400, height: int = 1000) -> tuple[webdriver.Chrome, Path]:
    """A headless Chromium with a new empty profile; returns it and the profile dir (remove it
    after `quit()`)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    return driver, profile


def stop_chromium(driver: webdriver.Chrome, profile: Path) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
