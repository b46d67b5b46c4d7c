"""The venue's dead man's switch on a live kraken account: the real coordinator, ccxt adapter and
ccxt's real kraken code, over the fake of kraken's private endpoints in tests/support_kraken.py
(its CancelAllOrdersAfter records each timeout). Heartbeats go out on the wire at the configured
interval; a failing one is counted, fed to the breaker, raises the alert and shows in /status;
ndax live bots are unprotected and paper bots send nothing; shutdown disarms; the kill switch
cancels and disarms nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import CallbackResult, aioresponses
from prometheus_client.parser import text_string_to_metric_families

from coordinator.accounts import Accounts
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from coordinator.safety.dead_mans_switch import DeadMansSwitch, Heartbeat
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_CREDENTIALS,
    KRAKEN_PRIVATE,
    form_bodies,
    kraken_error,
    requested_urls,
)
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import FakeKraken, make_client, serving
from tests.support_ndax import ENV as NDAX_ENV
from tests.support_ndax import FakeNdax, live_ndax_grid
from tests.support_ndax import make_client as make_ndax_client
from tests.support_ndax import serving as serving_ndax

CANCEL_ALL_AFTER = KRAKEN_PRIVATE + "CancelAllOrdersAfter"
TOKEN = "t" * 32
FAILING, EXPIRED = "dead_mans_switch_failing", "dead_mans_switch_expired"


class ShiftedClock:
    """Real time plus an offset the test pushes forward (to let the venue's timer run out)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class FailingKraken(FakeKraken):
    """kraken whose CancelAllOrdersAfter fails the way `failure` says, while it is set."""

    failure: str | None = None

    def cancel_all_orders_after(self, url: Any, **kwargs: Any) -> CallbackResult:
        if self.failure is None:
            return super().cancel_all_orders_after(url, **kwargs)
        if self.failure == "timeout":
            raise TimeoutError  # the connection timed out
        if self.failure == "500":
            return CallbackResult(status=500, reason="Internal Server Error", body="oops")
        if self.failure == "garbage":
            return CallbackResult(status=200, body="<html>down for maintenance</html>")
        if self.failure == "wrong shape":
            return CallbackResult(payload={"error": [], "result": "armed"})
        assert self.failure == "auth"
        return CallbackResult(payload=kraken_error("EAPI:Invalid key"))


def with_switch(
    interval: float, timeout: int, paper_ndax: bool = False, **bot: Any
) -> Callable[[dict[str, Any]], None]:
    """The kraken bot live (`bot` changes more of it) with its dead man's switch every
    `interval` seconds for `timeout`; with `paper_ndax`, the paper ndax bot beside it. The
    switch's alerts fire and resolve on their second sample."""

    def change(documents: dict[str, Any]) -> None:
        bots = documents["bots.json"]["bots"]
        kraken = next(b for b in bots if b["name"] == "kraken")
        kraken.update({"mode": "live", "market_data": "exchange", "tick_interval_seconds": 0.05})
        kraken.update(bot)
        documents["bots.json"]["bots"] = [b for b in bots if paper_ndax or b is kraken]
        documents["bot-limits.json"]["bots"] = {}
        documents["api-endpoints.json"]["exchanges"]["kraken"]["dead_mans_switch"] = {
            "enabled": True,
            "interval_seconds": interval,
            "timeout_seconds": timeout,
        }
        rules = documents["alerts.json"]["rules"]
        rules["dead_mans_switch_failing"] = {"for_seconds": 0, "resolve_after_seconds": 0}

    return change


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])


async def open_coordinator(
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    clock: Callable[[], datetime] | None = None,
    accounts: Accounts | None = None,
) -> Coordinator:
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", change))
    )
    (tmp_path / "data").mkdir()
    return await Coordinator.open(
        config, tmp_path / "data", clock=clock, accounts=accounts or Accounts(make_client)
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Coordinator]:
    coordinator = await open_coordinator(tmp_path, change, clock)
    try:
        yield coordinator
    finally:
        await coordinator.close(grace_seconds=0.5)


def switch_of(coordinator: Coordinator) -> DeadMansSwitch:
    assert coordinator.dead_mans_switch is not None
    return coordinator.dead_mans_switch


def only_heartbeat(coordinator: Coordinator) -> Heartbeat:
    [heartbeat] = switch_of(coordinator).heartbeats
    return heartbeat


def kraken_switch(coordinator: Coordinator) -> dict[str, Any]:
    document: dict[str, Any] = coordinator.status()["dead_mans_switch"]["kraken"]
    return document


async def evaluated_until(
    coordinator: Coordinator, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Evaluate the alert rules (as the schedule does) until the listing satisfies `done`."""
    assert coordinator.alerts is not None
    for _ in range(10):
        await coordinator.alerts.evaluate_once()
        listing = coordinator.alerts.listing()
        if done(listing):
            return listing
    pytest.fail(f"the alerts never showed {what}: {coordinator.alerts.listing()}")


async def audited(coordinator: Coordinator, action: str, subject: str) -> None:
    """Wait for the audit entry (alert transitions are audited in the background)."""
    for _ in range(200):
        entries = await coordinator.journal.recent_audit(100)
        if any((e["action"], e["subject"]) == (action, subject) for e in entries):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"no audit entry {action} {subject}")


def firing(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {alert["name"]: alert for alert in listing["firing"]}


def metric(found: dict[Any, float], name: str, **labels: str) -> float:
    """One sample of a `bot_coordinator_dead_mans_switch_*` metric."""
    return found[(f"bot_coordinator_dead_mans_switch_{name}", tuple(sorted(labels.items())))]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ----- on the wire --------------------------------------------------------------------------


async def test_a_live_account_beats_on_the_wire_at_its_interval_and_shows_everywhere(
    tmp_path: Path,
) -> None:
    kraken = FakeKraken()
    with serving(kraken, passthrough=("http://127.0.0.1",)) as m:
        async with running(tmp_path, with_switch(0.05, 7, paper_ndax=True)) as coordinator:
            await eventually(lambda: len(kraken.timeouts) >= 4, what="four heartbeats")

            assert set(kraken.timeouts) == {7}  # ccxt's milliseconds, sent as kraken's seconds
            bodies = form_bodies(m, CANCEL_ALL_AFTER)
            assert len(bodies) >= 4
            assert all(body == {"timeout": "7"} for body in bodies)
            heartbeat = only_heartbeat(coordinator)
            assert heartbeat.failures == 0

            app = make_app(coordinator, ControlToken(TOKEN, "env"))
            async with TestClient(TestServer(app)) as client:
                status = await (await client.get("/status")).json()
                switch = status["dead_mans_switch"]
                assert set(switch) == {"kraken", "ndax"}
                kraken_doc = switch["kraken"]
                assert kraken_doc["protected"] is True
                assert kraken_doc["state"] == "armed"
                assert (kraken_doc["interval_seconds"], kraken_doc["timeout_seconds"]) == (0.05, 7)
                assert kraken_doc["beats"] >= 4
                assert (kraken_doc["failures"], kraken_doc["consecutive_failures"]) == (0, 0)
                assert kraken_doc["last_error"] is None
                last_success = datetime.fromisoformat(kraken_doc["last_success_at"])
                expires = datetime.fromisoformat(kraken_doc["expires_at"])
                assert expires - last_success == timedelta(seconds=7)
                assert [a["bots"] for a in kraken_doc["accounts"]] == [["kraken"]]
                assert kraken_doc["accounts"][0]["account"] == "KRAKEN_API_KEY"
                assert switch["ndax"]["state"] == "paper"
                assert switch["ndax"]["protected"] is False

                found = metric_samples(await (await client.get("/metrics")).text())
                assert metric(found, "beats_total", exchange="kraken") >= 4
                assert metric(found, "failures_total", exchange="kraken") == 0
                assert metric(found, "protected", exchange="kraken") == 1
                assert metric(found, "timeout_seconds", exchange="kraken") == 7
                assert metric(found, "last_success_age_seconds", exchange="kraken") < 7
                assert metric(found, "state", exchange="kraken", state="armed") == 1
                assert metric(found, "state", exchange="kraken", state="failing") == 0
                assert metric(found, "state", exchange="ndax", state="paper") == 1
                assert metric(found, "protected", exchange="ndax") == 0

                listing = await (await client.get("/alerts")).json()
                assert not {FAILING, EXPIRED} & {a["name"] for a in listing["firing"]}


async def test_bots_that_share_an_account_share_one_heartbeat(tmp_path: Path) -> None:
    def two_bots_one_key(documents: dict[str, Any]) -> None:
        with_switch(0.05, 7)(documents)
        first = documents["bots.json"]["bots"][0]
        documents["bots.json"]["bots"].append({**json.loads(json.dumps(first)), "name": "kraken2"})

    kraken = FakeKraken()
    with serving(kraken):
        async with running(tmp_path, two_bots_one_key) as coordinator:
            heartbeat = only_heartbeat(coordinator)
            assert heartbeat.bots == ("kraken", "kraken2")
            await eventually(lambda: heartbeat.beats >= 3, what="three heartbeats")
            assert len(kraken.timeouts) == heartbeat.beats  # one request a beat, not one a bot
            assert kraken_switch(coordinator)["bots"] == ["kraken", "kraken2"]


# ----- a beat that fails --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "transient", "error"),
    [
        ("timeout", True, "RequestTimeout"),
        ("500", True, "ExchangeNotAvailable"),
        ("garbage", True, "not JSON"),
        ("wrong shape", True, "malformed CancelAllOrdersAfter answer"),
        ("auth", False, "AuthenticationError"),
    ],
)
async def test_a_failing_beat_is_counted_fed_to_the_breaker_alerted_and_resolved(
    tmp_path: Path, failure: str, transient: bool, error: str
) -> None:
    kraken, clock = FailingKraken(), ShiftedClock()
    with serving(kraken):
        # A beat every 30 s: the one at start, then only those this test sends.
        async with running(tmp_path, with_switch(30, 60), clock) as coordinator:
            heartbeat = only_heartbeat(coordinator)
            await eventually(lambda: heartbeat.last_success_at is not None, what="armed")
            breaker = coordinator.safety.board.breaker("kraken")
            before = breaker.snapshot()["failures_in_window"]

            kraken.failure = failure
            assert await heartbeat.beat() is False
            assert await heartbeat.beat() is False

            switch = kraken_switch(coordinator)
            assert switch["state"] == "failing"
            assert switch["protected"] is True  # the venue's timer has not run out yet
            assert switch["beats"] == 3
            assert (switch["failures"], switch["consecutive_failures"]) == (2, 2)
            assert error in switch["last_error"]
            assert error in switch["reason"]
            fed = breaker.snapshot()["failures_in_window"] - before
            assert fed == (2 if transient else 0)  # an auth error is not the venue's ill health
            listing = await evaluated_until(
                coordinator, lambda lst: FAILING in firing(lst), "the failing alert firing"
            )
            alert = firing(listing)[FAILING]
            assert (alert["severity"], alert["labels"]) == ("warning", {"exchange": "kraken"})
            assert error in alert["summary"]
            assert EXPIRED not in firing(listing)

            # No beat acknowledged for longer than the timeout: kraken may have cancelled
            # everything.
            clock.offset = timedelta(seconds=61)
            switch = kraken_switch(coordinator)
            assert (switch["state"], switch["protected"]) == ("expired", False)
            assert "may have cancelled every order" in switch["reason"]
            listing = await evaluated_until(
                coordinator, lambda lst: EXPIRED in firing(lst), "the expired alert firing"
            )
            assert firing(listing)[EXPIRED]["severity"] == "critical"
            assert firing(listing)[EXPIRED]["threshold"] == 60

            kraken.failure = None
            assert await heartbeat.beat() is True
            switch = kraken_switch(coordinator)
            assert (switch["state"], switch["consecutive_failures"]) == ("armed", 0)
            assert switch["failures"] == 2
            listing = await evaluated_until(
                coordinator, lambda lst: not firing(lst).keys() & {FAILING, EXPIRED}, "resolved"
            )
            assert {FAILING, EXPIRED} <= {a["name"] for a in listing["resolved"]}
            await audited(coordinator, "alert.firing", f"{EXPIRED} exchange=kraken")
            await audited(coordinator, "alert.resolved", f"{FAILING} exchange=kraken")


async def test_a_beat_the_venue_does_not_answer_shows_failing_once_overdue(
    tmp_path: Path,
) -> None:
    class SlowKraken(FakeKraken):
        def __init__(self) -> None:
            super().__init__()
            self.answer = asyncio.Event()

        async def cancel_all_orders_after(  # type: ignore[override]
            self, url: Any, **kwargs: Any
        ) -> CallbackResult:
            await self.answer.wait()
            return super().cancel_all_orders_after(url, **kwargs)

    kraken, clock = SlowKraken(), ShiftedClock()
    with serving(kraken):
        async with running(tmp_path, with_switch(10, 30), clock) as coordinator:
            heartbeat = only_heartbeat(coordinator)
            await eventually(lambda: heartbeat.in_flight, what="the first beat sent")
            assert kraken_switch(coordinator)["state"] == "arming"

            clock.offset = timedelta(seconds=21)  # two intervals, and no answer
            switch = kraken_switch(coordinator)
            assert (switch["state"], switch["protected"]) == ("failing", False)
            assert "is not answered" in switch["reason"]

            kraken.answer.set()
            await eventually(lambda: heartbeat.last_success_at is not None, what="the answer")
            assert kraken_switch(coordinator)["state"] == "armed"


async def test_a_heartbeat_that_stops_is_alerted_then_expires(tmp_path: Path) -> None:
    kraken, clock = FakeKraken(), ShiftedClock()
    with serving(kraken):
        async with running(tmp_path, with_switch(10, 30), clock) as coordinator:
            heartbeat = only_heartbeat(coordinator)
            await eventually(lambda: heartbeat.last_success_at is not None, what="armed")
            await heartbeat.stop()  # as if its task had died
            beats = len(kraken.timeouts)

            clock.offset = timedelta(seconds=21)  # two intervals without a beat
            switch = kraken_switch(coordinator)
            assert switch["state"] == "failing"
            assert "the heartbeat has stopped" in switch["reason"]
            listing = await evaluated_until(
                coordinator, lambda lst: FAILING in firing(lst), "the failing alert"
            )
            assert "the heartbeat has stopped" in firing(listing)[FAILING]["summary"]

            clock.offset = timedelta(seconds=31)
            assert kraken_switch(coordinator)["state"] == "expired"
            await evaluated_until(
                coordinator, lambda lst: EXPIRED in firing(lst), "the expired alert"
            )
            assert len(kraken.timeouts) == beats  # nothing beats any more


# ----- what is not protected ----------------------------------------------------------------


async def test_a_live_ndax_bot_is_shown_unprotected_and_nothing_is_armed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in NDAX_ENV.items():
        monkeypatch.setenv(name, value)

    def live_ndax_with_switch_asked_for(documents: dict[str, Any]) -> None:
        live_ndax_grid(documents)
        documents["api-endpoints.json"]["exchanges"]["ndax"]["dead_mans_switch"] = {"enabled": True}

    with serving_ndax(FakeNdax()):
        coordinator = await open_coordinator(
            tmp_path, live_ndax_with_switch_asked_for, accounts=Accounts(make_ndax_client)
        )
        try:
            assert switch_of(coordinator).heartbeats == []
            switch = coordinator.status()["dead_mans_switch"]
            assert set(switch) == {"ndax"}
            assert switch["ndax"]["state"] == "unprotected"
            assert switch["ndax"]["protected"] is False
            assert "ndax has no exchange-side dead man's switch" in switch["ndax"]["reason"]
            found = metric_samples(coordinator.metrics.render().decode())
            assert metric(found, "state", exchange="ndax", state="unprotected") == 1
            assert metric(found, "protected", exchange="ndax") == 0
            assert coordinator.alerts is not None
            await coordinator.alerts.evaluate_once()
            assert not coordinator.alerts.listing()["firing"]
        finally:
            await coordinator.close(grace_seconds=0.5)


async def test_paper_bots_arm_nothing_and_send_no_request(tmp_path: Path) -> None:
    with aioresponses() as m:  # every request would be recorded (and fail: nothing is mocked)
        async with running(tmp_path, lambda documents: None) as coordinator:
            assert switch_of(coordinator).heartbeats == []
            switch = coordinator.status()["dead_mans_switch"]
            assert {name: doc["state"] for name, doc in switch.items()} == {
                "kraken": "paper",
                "ndax": "paper",
            }
            await coordinator.supervisor.start("kraken")
            await eventually(
                lambda: coordinator.supervisor.runner("kraken").stats.ticks >= 3, what="ticks"
            )
        assert requested_urls(m) == []


async def test_a_switch_turned_off_in_config_shows_the_live_bot_unprotected_by_choice(
    tmp_path: Path,
) -> None:
    def switched_off(documents: dict[str, Any]) -> None:
        with_switch(15, 60)(documents)
        documents["api-endpoints.json"]["exchanges"]["kraken"]["dead_mans_switch"] = {
            "enabled": False
        }

    kraken = FakeKraken()
    with serving(kraken):
        async with running(tmp_path, switched_off) as coordinator:
            switch = kraken_switch(coordinator)
            assert (switch["state"], switch["protected"]) == ("off", False)
            assert "not enabled" in switch["reason"]
        assert kraken.timeouts == []  # not even a disarm


async def test_read_only_bots_write_nothing_to_arm(tmp_path: Path) -> None:
    kraken = FakeKraken()
    with serving(kraken):
        async with running(tmp_path, with_switch(0.05, 7, mode="read-only")) as coordinator:
            await coordinator.supervisor.start("kraken")
            await eventually(
                lambda: coordinator.supervisor.runner("kraken").stats.ticks >= 3, what="ticks"
            )
            switch = kraken_switch(coordinator)
            assert (switch["state"], switch["protected"]) == ("off", False)
            assert "read-only" in switch["reason"]
        assert kraken.timeouts == []


# ----- shutdown and the kill switch ---------------------------------------------------------


async def test_a_clean_shutdown_disarms_after_the_orders_are_cancelled(tmp_path: Path) -> None:
    kraken = FakeKraken()
    with serving(kraken):
        coordinator = await open_coordinator(tmp_path, with_switch(0.05, 7))
        await coordinator.supervisor.start("kraken")
        await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders")
        await eventually(lambda: len(kraken.timeouts) >= 2, what="two heartbeats")

        await coordinator.close(grace_seconds=0.5)

        assert kraken.resting() == []
        assert kraken.timeouts[-1] == 0
        assert set(kraken.timeouts[:-1]) == {7}
        assert kraken.trigger_at is None  # kraken's timer is off
        calls = kraken.calls
        last_cancel = max(i for i, c in enumerate(calls) if c.endpoint == "CancelOrder")
        [disarm] = [i for i, c in enumerate(calls) if c.form.get("timeout") == "0"]
        assert last_cancel < disarm == len(calls) - 1  # the orders first; then nothing beats
    audit = await read_audit(tmp_path / "data")
    stop = next(e for e in audit if e["action"] == "coordinator.stop")
    assert json.loads(stop["details"])["dead_mans_switch"] == {"kraken": "disarmed"}


async def test_a_shutdown_that_could_not_cancel_every_order_leaves_the_switch_armed(
    tmp_path: Path,
) -> None:
    class StuckKraken(FakeKraken):
        stuck = False

        def cancel_order(self, url: Any, **kwargs: Any) -> CallbackResult:
            if self.stuck:
                return CallbackResult(status=500, reason="Internal Server Error", body="oops")
            return super().cancel_order(url, **kwargs)

    kraken = StuckKraken()
    with serving(kraken):
        coordinator = await open_coordinator(tmp_path, with_switch(0.05, 7))
        await coordinator.supervisor.start("kraken")
        await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders")
        kraken.stuck = True

        await coordinator.close(grace_seconds=0.5)

        assert len(kraken.resting()) == 6
        assert 0 not in kraken.timeouts  # kraken cancels them when the timer runs out
        assert kraken.trigger_at is not None
    audit = await read_audit(tmp_path / "data")
    stop = next(e for e in audit if e["action"] == "coordinator.stop")
    outcome = json.loads(stop["details"])["dead_mans_switch"]["kraken"]
    assert outcome.startswith("left armed: 6 order(s) still live")


async def test_the_kill_switch_cancels_the_orders_and_disarms_nothing(tmp_path: Path) -> None:
    kraken = FakeKraken()
    with serving(kraken):
        async with running(tmp_path, with_switch(0.05, 7)) as coordinator:
            await coordinator.supervisor.start("kraken")
            await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders")

            await coordinator.activate_kill_switch("drill", "test")

            assert kraken.resting() == []
            assert 0 not in kraken.timeouts
            beats = len(kraken.timeouts)
            await eventually(lambda: len(kraken.timeouts) >= beats + 2, what="beats go on")
            assert 0 not in kraken.timeouts
            assert kraken_switch(coordinator)["state"] == "armed"


async def read_audit(data_dir: Path) -> list[dict[str, Any]]:
    """The audit log of a closed coordinator's journal, newest first."""

    def read() -> list[dict[str, Any]]:
        with sqlite3.connect(data_dir / "coordinator.db") as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(
                "SELECT action, result, details FROM audit_events ORDER BY id DESC"
            ).fetchall()
        return [dict(row) for row in rows]

    return await asyncio.to_thread(read)
