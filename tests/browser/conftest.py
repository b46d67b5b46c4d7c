"""Fixtures for the browser tests: one headless Chromium for the module, a real coordinator
process per test (its own dirs and port), on the fast test config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.support_browser import missing_browser, start_chromium, stop_chromium
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, running_coordinator


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    problem = missing_browser()
    if problem is not None:  # never skipped: .ci/run installs the browser
        pytest.fail(problem)
    driver, profile = start_chromium()
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        stop_chromium(driver, profile)


@pytest.fixture
def page(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The module's browser, left on a blank page with no storage from the test before."""
    yield browser
    try:
        browser.execute_script("sessionStorage.clear(); localStorage.clear();")
    finally:
        browser.get("about:blank")


@pytest.fixture
def coordinator_process(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    yield from running_coordinator(tmp_path, write_fast_config(tmp_path / "config"))
