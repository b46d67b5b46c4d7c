"""The drills on a live kraken bot: the coordinator's real ccxt kraken code trades over HTTP with
the drill's fake venue (coordinator/drills/venue.py: one order book behind a primary and a
backup host). The ndax bot stays on paper.

- API failures (runbook 004 Scenario 2): the primary stops answering; the account fails over to
  the backup and goes on trading; the primary comes back and the account returns to it;
- data loss (004 Scenario 5): a backup is taken while the bots trade, kraken trades on, then the
  journal is lost; the newest backup is restored, `reconcile` finds the orders placed after the
  backup, `reconcile --apply` adopts them from the venue, the journal is checked, started
  read-only, then for real: every order at the venue is in the journal, none twice;
- security breach (004 Scenario 6): the API key is revoked mid-run; the kill switch, evidence
  preserved (incident snapshot), the coordinator isolated, the key rotated, paper-tested,
  restarted;
- purchase failures (runbooks 000 and 001): rejected for insufficient funds; a timeout after the
  order was sent (it is found, not sent again); a fill under 95 % (the remainder cancelled after
  the partial-fill timeout).
"""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing
from decimal import Decimal
from typing import Any

from bots.exchanges.ccxt_orders import decode_client_order_id
from coordinator.drills.harness import DrillWorld, wait_for
from coordinator.drills.scenario import Drill, Scenario
from coordinator.drills.venue import KEY_ENV, SECRET_ENV
from coordinator.incidents.model import IncidentKind

ROTATED_KEY = "drill-kraken-rotated-key-0123456789"
ROTATED_SECRET = base64.b64encode(b"drill-kraken-rotated-secret").decode()
SEND_TIMEOUT = 12.0  # longer than ccxt's kraken timeout (10 s): the answer never comes in time


def _kraken(world: DrillWorld) -> dict[str, Any]:
    return world.bots()["kraken"]


def _cl_ord_ids_unique(drill: Drill) -> None:
    """No order sent twice: every client order id at the venue is on one order only."""
    ids = [o["cl_ord_id"] for o in drill.venue.orders() if o["cl_ord_id"]]
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    drill.check(not doubled, f"client order ids on two orders at the venue: {doubled}")


# ----- 004 Scenario 2: API connection failures --------------------------------------------


def api_failover(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    drill.mark("injected")
    venue.take_primary_down()
    drill.step("fault: kraken's primary API host refuses connections")
    wait_for(lambda: "exchange_on_backup_endpoint" in world.firing(), 20, "the failover alert")
    drill.mark("detected")
    endpoint = world.get("/status")["exchanges"]["kraken"]["endpoint"]
    drill.check(endpoint["url"] == venue.backup_url, f"kraken is on {endpoint['url']}")
    sent = venue.add_order_count("backup")
    wait_for(lambda: venue.add_order_count("backup") > sent, 10, "orders sent to the backup")
    drill.mark("responded")
    drill.open_incident("kraken's primary API host is down: failed over to the backup")
    drill.note(f"kraken failed over to the backup ({venue.backup_url}) by itself and trades")
    venue.bring_primary_back()
    drill.note("the primary answers again (network fixed)")
    wait_for(
        lambda: world.get("/status")["exchanges"]["kraken"]["endpoint"]["url"]
        == venue.primary_url,
        20,
        "kraken back on its primary",
    )
    on_primary = venue.add_order_count("primary")
    wait_for(lambda: venue.add_order_count("primary") > on_primary, 10, "orders on the primary")
    drill.check(
        {"endpoint.backup", "endpoint.primary"} <= set(world.audit_actions()),
        "the failover and the return are not both in the audit log",
    )
    drill.mark("recovered")
    drill.note("kraken is back on its primary; both switches are audited")
    _cl_ord_ids_unique(drill)


# ----- 004 Scenario 5: data loss ------------------------------------------------------------


def data_loss(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    world.cli("backup").expect(0, "the scheduled backup (taken by hand in the drill)")
    before = len(venue.orders())
    wait_for(lambda: len(venue.orders()) >= before + 3, 15, "kraken trading after the backup")
    drill.step("`bot-coordinator backup` while the bots trade; kraken trades on")
    drill.mark("injected")
    world.kill()
    for path in world.data_dir.glob("coordinator.db*"):
        path.unlink()
    after = len(venue.orders()) - before
    drill.step(f"fault: the process dies and the journal is lost ({after} kraken orders since "
               "the backup)")  # fmt: skip
    lost = world.cli("--verify-data")
    drill.check(lost.code == 2, f"--verify-data exited {lost.code} on a lost journal")
    drill.mark("detected")
    drill.mark("responded")  # nothing runs: the coordinator is down, the venue holds the orders
    drill.step("--verify-data: no database (exit 2); the coordinator stays down")
    world.cli("restore").expect(2, "listing the backups that verify")
    world.cli("restore", "--latest").expect(0, "restoring config and journal")
    drill.step("`restore --latest`: the journal is back at the backup's time, kill switch on")
    report = world.cli("reconcile").expect(1, "reconcile: the orders since the backup are missing")
    drill.check("order_lost_from_journal" in report.output,
                f"reconcile does not name the lost orders:\n{report.output}")  # fmt: skip
    world.cli("reconcile", "--apply").expect(0, "reconcile --apply: adopting the lost orders")
    world.cli("reconcile").expect(0, "reconcile: the journal agrees with the venue")
    drill.step("`reconcile --apply`: the orders placed after the backup are adopted from kraken")
    world.cli("--verify-data").expect(0, "the journal verifies after the reconciliation")
    _journal_has_every_venue_order(drill)
    world.start_ready("--read-only")
    drill.check(world.get("/status")["kill_switch_active"], "the restore left the switch off")
    drill.open_incident("the journal was lost: restored from backup and reconciled")
    drill.note("restored the newest backup; `reconcile --apply` adopted the orders kraken took "
               "after the backup; --verify-data clean")  # fmt: skip
    drill.note("started --read-only: the journal and the venue agree; then stopped")
    drill.check(world.stop() == 0, "the read-only coordinator did not stop cleanly")
    world.start_ready()
    drill.lift_kill_switch("journal restored and reconciled")
    drill.recover_gradually()
    _cl_ord_ids_unique(drill)


def _journal_has_every_venue_order(drill: Drill) -> None:
    """Nothing lost: every order the venue took is in the journal, under its client order id."""
    path = drill.world.data_dir / "coordinator.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        journal = {int(row[0]) for row in conn.execute("SELECT client_order_id FROM orders")}
    ours = (decode_client_order_id("kraken", o["cl_ord_id"]) for o in drill.venue.orders())
    at_venue = {cid for cid in ours if cid is not None}
    missing = sorted(at_venue - journal)
    drill.check(not missing, f"orders at the venue that the journal lacks: {missing[:10]}")


# ----- 004 Scenario 6: security breach -------------------------------------------------------


def credentials_revoked(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    drill.mark("injected")
    venue.revoke_key(world.env()[KEY_ENV])
    drill.step("fault: kraken's API key is revoked mid-run")
    wait_for(lambda: _kraken(world)["state"] != "running" or _auth_failing(world), 20,
             "kraken's bot to see the revoked key")  # fmt: skip
    drill.mark("detected")
    drill.activate_kill_switch("SECURITY BREACH: kraken API key revoked")
    sent = venue.add_order_count("primary")
    evidence = world.root / "evidence"
    world.cli("incident", "snapshot", "--out", str(evidence)).expect(0, "preserving evidence")
    (archive,) = evidence.glob("*.tar.gz")
    world.cli("incident", "verify", str(archive)).expect(0, "the snapshot's manifest")
    drill.note("evidence preserved: `incident snapshot` (its manifest verifies)")
    drill.check(world.stop() == 0, "the coordinator did not stop cleanly")
    drill.note("isolated: the coordinator is stopped")
    drill.check(venue.add_order_count("primary") == sent, "an order was sent after the switch")
    venue.accept_key(ROTATED_KEY)
    world.extra_env.update({KEY_ENV: ROTATED_KEY, SECRET_ENV: ROTATED_SECRET})
    drill.note("a new API key generated at the venue and put in the environment")
    world.cli("--bot", "kraken", "--test", "--ticks", "20").expect(0, "kraken in paper mode")
    drill.note("`--bot kraken --test`: 20 paper ticks, no error")
    world.start_ready()
    drill.check(world.get("/status")["kill_switch_active"], "the switch did not survive")
    drill.lift_kill_switch("key rotated, evidence kept, paper-tested")
    drill.recover_gradually()
    _cl_ord_ids_unique(drill)


def _auth_failing(world: DrillWorld) -> bool:
    text = str(_kraken(world)).lower()
    return "invalid key" in text or "authentication" in text


# ----- runbooks 000 and 001: purchase failures ----------------------------------------------


def insufficient_funds(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    drill.mark("injected")
    venue.reject_next_orders(3, "EOrder:Insufficient funds")
    drill.step("fault: kraken rejects the next 3 purchases: insufficient funds")
    wait_for(lambda: _rejected(world) >= 3, 15, "three rejected purchases journaled")
    drill.mark("detected")
    world.post("/stop", {"bot": "kraken"})
    drill.mark("responded")
    drill.open_incident("kraken purchases rejected: insufficient funds")
    drill.note("stopped kraken's bot; its rejected purchases are journaled (no fill, no hold)")
    report = world.post("/reconcile", {"bot": "kraken"})
    drill.check(report["clean"], f"the rejected purchases left a difference: {report['summary']}")
    drill.note("reconcile: kraken's balances and orders agree with the journal")
    drill.note("funds deposited at the venue (the drill's rejections are spent)")
    drill.recover_gradually(first="kraken")
    _cl_ord_ids_unique(drill)


def _rejected(world: DrillWorld) -> int:
    """kraken's bot's orders the venue refused (its order errors, every code)."""
    return sum(_kraken(world)["order_errors"].values())


def purchase_timeout(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    drill.mark("injected")
    before = len(venue.orders())
    venue.swallow_next_answers(1, SEND_TIMEOUT)
    drill.step(f"fault: kraken takes the next purchase but answers after {SEND_TIMEOUT:g} s")
    wait_for(lambda: _kraken(world)["order_errors"].get("transient", 0) >= 1, 40,
             "the purchase's send to time out")  # fmt: skip
    drill.mark("detected")
    drill.check(len(venue.orders()) > before, "the venue has no order from the timed-out send")
    wait_for(lambda: not _kraken(world)["unresolved_orders"], 30, "the timed-out send resolved")
    drill.mark("responded")  # the gateway looks it up by its client order id, by itself
    drill.open_incident("a kraken purchase timed out after it was sent")
    _cl_ord_ids_unique(drill)
    report = world.post("/reconcile", {"bot": "kraken"})
    drill.check(report["clean"], f"the timed-out purchase left a difference: {report['summary']}")
    drill.note("the gateway found the order by its client order id: journaled once, not resent")
    fills = {name: bot["fills"] for name, bot in world.bots().items()}
    drill.wait_trading(fills)
    drill.mark("recovered")


def partial_fill(drill: Drill) -> None:
    world, venue = drill.world, drill.venue
    drill.boot()
    drill.mark("injected")
    venue.partial_fill_next(1, Decimal("0.5"), rest=True)
    drill.step("fault: kraken fills the next purchase only 50 % and the rest rests")
    wait_for(lambda: _kraken(world)["partial_fills"].get("timed_out", 0) >= 1, 20,
             "the partial fill under 95 % dealt with")  # fmt: skip
    drill.mark("detected")
    drill.mark("responded")  # the partial-fill policy cancels the rest by itself
    drill.open_incident("a kraken purchase filled only 50 %")
    drill.note("under 95 % after the partial-fill timeout: the remainder was cancelled")
    report = world.post("/reconcile", {"bot": "kraken"})
    drill.check(report["clean"], f"the partial fill left a difference: {report['summary']}")
    fills = {name: bot["fills"] for name, bot in world.bots().items()}
    drill.wait_trading(fills)
    drill.mark("recovered")
    _cl_ord_ids_unique(drill)


def _partial_fill_config(documents: dict[str, Any]) -> None:
    documents["recovery-settings.json"]["partial_fills"]["partial_fill_timeout_minutes"] = 0.05


API_FAILOVER = Scenario(
    name="api-failover", title="API connection failures: failover to the backup",
    runbook="004 Scenario 2", kind=IncidentKind.CRITICAL, run=api_failover, venue=True,
)  # fmt: skip
DATA_LOSS = Scenario(
    name="data-loss", title="Data loss: restored from backup and reconciled",
    runbook="004 Scenario 5", kind=IncidentKind.DATABASE_ROLLBACK, run=data_loss, venue=True,
)  # fmt: skip
CREDENTIALS_REVOKED = Scenario(
    name="credentials-revoked", title="Security breach: API key revoked mid-run",
    runbook="004 Scenario 6", kind=IncidentKind.CRITICAL, run=credentials_revoked, venue=True,
)  # fmt: skip
INSUFFICIENT_FUNDS = Scenario(
    name="insufficient-funds", title="Purchase rejected: insufficient funds",
    runbook="000 Scenario A", kind=IncidentKind.PURCHASE_FAILURE, run=insufficient_funds,
    venue=True,
)  # fmt: skip
PURCHASE_TIMEOUT = Scenario(
    name="purchase-timeout", title="Purchase timed out after it was sent",
    runbook="000 Scenario B", kind=IncidentKind.PURCHASE_FAILURE, run=purchase_timeout,
    venue=True,
)  # fmt: skip
PARTIAL_FILL = Scenario(
    name="partial-fill", title="Purchase filled under 95 %", runbook="000 Scenario C",
    kind=IncidentKind.PURCHASE_FAILURE, run=partial_fill, configure=_partial_fill_config,
    venue=True,
)  # fmt: skip
