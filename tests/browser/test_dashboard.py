"""The dashboard in a real browser (headless Chromium) against the real coordinator process.

Each test acts through the page as an operator would (typing, clicking) and checks the outcome
twice: on the page, and in the coordinator itself over its API, so a page that only claims to
have stopped something fails."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, running_coordinator, wait_for

Page = webdriver.Chrome


def wait(page: Page, check: Callable[[Page], Any], what: str, within: float = 15) -> Any:
    def attempt(driver: Page) -> Any:
        try:
            return check(driver)
        except StaleElementReferenceException:  # the page re-rendered under us: look again
            return False

    return WebDriverWait(page, within, poll_frequency=0.1).until(attempt, f"waited for {what}")


def by_id(page: Page, element_id: str) -> WebElement:
    return page.find_element(By.ID, element_id)


def row(page: Page, bot: str) -> WebElement:
    return page.find_element(By.CSS_SELECTOR, f'#bots tbody tr[data-bot="{bot}"]')


def cell(page: Page, bot: str, column: int) -> str:
    """The text of a bot's cell: columns as in the table (0 name, 2 state, 8 fills)."""
    return str(row(page, bot).find_elements(By.TAG_NAME, "td")[column].text)


def bot_button(page: Page, bot: str, action: str) -> WebElement:
    return row(page, bot).find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]')


def messages(page: Page) -> list[str]:
    return [str(m.text) for m in page.find_elements(By.CSS_SELECTOR, "#messages .message")]


def open_dashboard(page: Page, process: CoordinatorProcess, bots: int = 2) -> None:
    page.get(process.base + "/")
    wait(page, lambda p: len(p.find_elements(By.CSS_SELECTOR, "#bots tbody tr")) == bots,
         f"{bots} bot rows")


def use_token(page: Page, token: str) -> None:
    by_id(page, "token-input").send_keys(token)
    by_id(page, "token-save").click()
    wait(page, lambda p: by_id(p, "token-state").is_displayed(), "the token to be taken")


def start_both(process: CoordinatorProcess) -> None:
    process.control("/start-sequential", {})
    wait_for(lambda: all(b["state"] == "running" for b in process.bots().values()), 15,
             "both bots running")


# -- trading, and the token -----------------------------------------------------------------------


def test_a_start_without_the_token_is_refused_and_with_it_both_paper_bots_trade(
    page: Page, coordinator_process: CoordinatorProcess
) -> None:
    process = coordinator_process
    open_dashboard(page, process)
    assert cell(page, "ndax", 2) == "stopped"

    bot_button(page, "ndax", "start").click()
    refusal = wait(page, lambda p: [m for m in messages(p) if "Start ndax refused" in m],
                   "the refusal")
    assert "401" in refusal[0]
    assert "Authorization: Bearer" in refusal[0]
    assert process.bots()["ndax"]["state"] == "stopped"

    use_token(page, process.token)
    bot_button(page, "ndax", "start").click()
    wait(page, lambda p: cell(p, "ndax", 2) == "running", "ndax running on the page")
    assert process.bots()["kraken"]["state"] == "stopped"  # only the bot clicked
    by_id(page, "start-sequential").click()  # the rest, one by one
    wait(page, lambda p: cell(p, "kraken", 2) == "running", "kraken running on the page")
    fills = int(cell(page, "ndax", 8))
    wait(page, lambda p: int(cell(p, "ndax", 8)) > fills, "ndax's fills to go up on the page")
    bots = process.bots()
    assert bots["ndax"]["state"] == bots["kraken"]["state"] == "running"
    assert bots["kraken"]["open_orders"] > 0  # its grid rests on the book (price does not move)

    # The token is in this tab's session storage only: not in the address, not in a cookie.
    assert process.token not in page.current_url
    assert page.execute_script("return document.cookie") == ""
    assert page.execute_script("return localStorage.length") == 0
    stored = page.execute_script("return sessionStorage.getItem('bot-coordinator-token')")
    assert stored == process.token


def test_clicking_a_bot_charts_its_pnl_and_position_from_the_journal(
    page: Page, coordinator_process: CoordinatorProcess
) -> None:
    process = coordinator_process
    start_both(process)
    wait_for(lambda: process.bots()["ndax"]["fills"] >= 3, 10, "three ndax fills")
    open_dashboard(page, process)

    row(page, "ndax").find_element(By.CSS_SELECTOR, ".bot-link").click()

    wait(page, lambda p: "fills" in by_id(p, "chart-note").text, "the chart's note")
    assert by_id(page, "chart-bot").text == "ndax"
    paths = page.find_elements(By.CSS_SELECTOR, "#chart path")
    assert {p.get_attribute("class") for p in paths} == {"pnl", "pos"}
    assert all(len(p.get_attribute("d") or "") > 10 for p in paths)


# -- the kill switch ------------------------------------------------------------------------------


def test_the_kill_switch_button_needs_a_reason_and_a_confirmation_then_stops_every_bot(
    page: Page, coordinator_process: CoordinatorProcess
) -> None:
    process = coordinator_process
    start_both(process)
    open_dashboard(page, process)
    wait(page, lambda p: cell(p, "ndax", 2) == "running", "ndax running on the page")
    assert "inactive" in by_id(page, "ks-state").text

    by_id(page, "ks-activate").click()  # one click only opens the confirmation
    assert by_id(page, "ks-confirm").is_displayed()
    assert process.request("GET", "/kill-switch")[1]["active"] is False
    by_id(page, "ks-confirm-button").click()  # no reason given
    wait(page, lambda p: any("reason is required" in m for m in messages(p)), "the reason asked")
    assert process.request("GET", "/kill-switch")[1]["active"] is False

    by_id(page, "ks-activate").click()
    by_id(page, "ks-reason-input").send_keys("drawdown on ndax, investigating")
    by_id(page, "ks-confirm-button").click()  # no token was typed: stopping needs none

    wait(page, lambda p: by_id(p, "ks-state").text.startswith("ACTIVE"), "the switch shown active")
    assert by_id(page, "ks-reason").text == "drawdown on ndax, investigating"
    assert "active" in (by_id(page, "kill-switch").get_attribute("class") or "").split()
    # "stopped (halted)": stopped, and the kill switch holds it.
    wait(page, lambda p: cell(p, "ndax", 2) == cell(p, "kraken", 2) == "stopped (halted)",
         "both bots shown stopped and halted")
    switch = process.request("GET", "/kill-switch")[1]
    assert switch["active"] is True
    assert switch["reason"] == "drawdown on ndax, investigating"
    bots = process.bots()
    assert {b["state"] for b in bots.values()} == {"stopped"}
    assert all(b["open_orders"] == 0 for b in bots.values())  # the grid's orders cancelled


def test_an_override_without_a_token_is_refused_and_the_switch_stays_active(
    page: Page, coordinator_process: CoordinatorProcess
) -> None:
    process = coordinator_process
    # A reason holding markup: the page must show it as text, never run or render it.
    reason = '<img src=x id=injected onerror="document.title=1">stop'
    process.request("POST", "/kill-switch", {"action": "activate", "reason": reason})
    open_dashboard(page, process)
    wait(page, lambda p: by_id(p, "ks-state").text.startswith("ACTIVE"), "the switch active")
    assert by_id(page, "ks-reason").text == reason
    assert page.find_elements(By.ID, "injected") == []

    page.find_element(By.CSS_SELECTOR, "#ks-override-box summary").click()
    by_id(page, "ks-override-reason").send_keys("resume, please")
    by_id(page, "ks-override").click()

    refusal = wait(page, lambda p: [m for m in messages(p) if "Override refused" in m],
                   "the override refused")
    assert "401" in refusal[0]
    assert process.request("GET", "/kill-switch")[1]["active"] is True
    assert by_id(page, "ks-state").text.startswith("ACTIVE")


def test_a_page_on_another_site_cannot_activate_the_kill_switch_through_the_browser(
    page: Page, coordinator_process: CoordinatorProcess, tmp_path: Path
) -> None:
    """The coordinator is at 127.0.0.1; a page at localhost (another site to the browser)
    sends the form-like POST a browser lets through without a preflight. It is refused."""
    process = coordinator_process
    target = f"{process.base}/kill-switch"
    with _evil_site(target) as evil:
        page.get(evil)
        wait(page, lambda p: p.title.startswith("sent"), "the other page's request to go out")
    # The browser sent it (no-cors: the page cannot read the answer); the coordinator refused.
    wait_for(lambda: "refused POST /kill-switch" in process.text(), 5, "the refusal logged")
    assert process.request("GET", "/kill-switch")[1]["active"] is False
    audit = process.request("GET", "/audit?limit=50")[1]["events"]
    assert not [e for e in audit if e["action"].startswith("kill_switch")]


class _Evil(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        script = (
            f"fetch({self.target!r}, {{method: 'POST', mode: 'no-cors', headers: {{'Content-Type': "
            "'text/plain'}, body: JSON.stringify({action: 'activate', reason: 'forged'})})"
            ".finally(() => { document.title = 'sent'; });"
        )
        body = f"<!doctype html><title>waiting</title><script>{script}</script>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _evil_site:  # a context manager, named like one
    def __init__(self, target: str) -> None:
        handler = type("EvilHandler", (_Evil,), {"target": target})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://localhost:{self.server.server_address[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- live updates ---------------------------------------------------------------------------------


def test_a_banner_says_so_when_the_coordinator_stops_answering(
    page: Page, coordinator_process: CoordinatorProcess
) -> None:
    process = coordinator_process
    open_dashboard(page, process)
    assert not by_id(page, "offline").is_displayed()

    assert process.interrupt() == 0

    banner = wait(page, lambda p: by_id(p, "offline").is_displayed() and by_id(p, "offline"),
                  "the banner")
    assert "not answering" in banner.text
    assert "Next try in" in banner.text


# -- at 100 bots ----------------------------------------------------------------------------------


@pytest.fixture
def hundred_bots(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    yield from running_coordinator(tmp_path, write_fast_config(tmp_path / "config", hundred_copies))


def hundred_copies(documents: dict[str, Any]) -> None:
    """50 copies of each shipped bot, named ndax-000 ... kraken-099 (no per-bot limits)."""
    template = documents["bots.json"]["bots"]
    bots = []
    for i in range(100):
        bot = {**template[i % 2], "name": f"{template[i % 2]['name']}-{i:03d}"}
        bot["feed"] = {**bot["feed"], "seed": i + 1}
        bots.append(bot)
    documents["bots.json"]["bots"] = bots
    documents["bot-limits.json"]["bots"] = {}
    documents["kill-switch.json"]["execution_throttle"].pop("bots", None)


def test_one_hundred_bots_are_listed_sortable_and_filterable(
    page: Page, hundred_bots: CoordinatorProcess
) -> None:
    open_dashboard(page, hundred_bots, bots=100)
    assert "100 bots: 100 stopped" in by_id(page, "bot-counts").text

    def names(p: Page) -> list[str]:
        rows = p.find_elements(By.CSS_SELECTOR, "#bots tbody tr")
        return [str(r.get_attribute("data-bot")) for r in rows if r.is_displayed()]

    assert names(page) == sorted(names(page))
    page.find_element(By.CSS_SELECTOR, '#bots th[data-key="name"]').click()  # descending
    wait(page, lambda p: names(p) == sorted(names(p), reverse=True), "names sorted descending")

    by_id(page, "bot-filter").send_keys("kraken")
    wait(page, lambda p: len(names(p)) == 50, "50 kraken bots shown")
    assert all(n.startswith("kraken-") for n in names(page))
    assert "(50 shown)" in by_id(page, "bot-counts").text
