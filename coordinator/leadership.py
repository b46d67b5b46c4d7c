"""Active/standby on one PostgreSQL database: wait for the lease, lead while it is renewed, stop
trading the moment it cannot be.

`Leadership` holds one node's `LeaderLease` on a connection and a thread of its own (the
store's writer never waits for it). `serve()` uses it so:

1. **standby**: while another node holds an unexpired lease, try to take it every quarter of a
   lease, and answer `/status` and `/health` as a standby that names the leader;
2. **takeover**: once the lease is ours (a new term), open the coordinator with the store
   fenced on that term (`PostgresStore.set_fence`: every write checks the lease first), which
   resolves the orders the journal holds in flight before any bot may start;
3. **leading**: renew every third of a lease. When a renewal says the term is gone, or none has
   succeeded for `STOP_BEFORE` of a lease (the database is unreachable: the lease may run out
   and a standby take over), stop trading at once and end: the node never trades on a lease it
   cannot prove, and the fence refuses its writes even if it tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import psycopg

from coordinator.store.fence import LeaseLost
from coordinator.store.lease import (
    DEFAULT_GROUP,
    DEFAULT_LEASE_SECONDS,
    Fence,
    KillSwitchRequest,
    LeaderLease,
    LeaseView,
)
from coordinator.store.pg_connection import PgConnection

__all__ = ["Leadership", "LeaseLost", "default_node_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_BEFORE = 0.8  # of a lease without a successful renewal: stop trading before it can expire


def default_node_name(port: int) -> str:
    return f"{socket.gethostname()}:{port}:{os.getpid()}"


class Leadership:
    def __init__(self, lease: LeaderLease, executor: ThreadPoolExecutor) -> None:
        self.lease = lease
        self._executor = executor
        self.last_view: LeaseView | None = None
        # loop.time() when the request that last took or renewed the lease was sent: the
        # lease runs from no earlier than that.
        self._renewed_at: float | None = None

    @classmethod
    async def open(
        cls,
        dsn: str,
        node: str,
        group: str = DEFAULT_GROUP,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Leadership:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader-lease")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, PgConnection.connect, dsn)
            lease = await loop.run_in_executor(
                executor, lambda: LeaderLease(conn, node, group, lease_seconds)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(lease, executor)

    @property
    def node(self) -> str:
        return self.lease.node

    @property
    def lease_seconds(self) -> float:
        return self.lease.lease_seconds

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def view(self) -> LeaseView:
        self.last_view = await self._run(self.lease.view)
        return self.last_view

    async def try_acquire(self) -> int | None:
        """The lease now if it is free or expired (its new term), else None."""
        sent = asyncio.get_running_loop().time()
        term = await self._run(self.lease.acquire)
        if term is not None:
            self._renewed_at = sent
        return term

    async def wait_until_leader(self, stop: asyncio.Event) -> int | None:
        """Try for the lease every quarter of a lease until it is ours (its term) or `stop` is
        set (None). A database that does not answer is retried, never taken for a free lease."""
        interval = self.lease_seconds / 4
        announced: str | None = None
        while not stop.is_set():
            try:
                term = await self.try_acquire()
                if term is not None:
                    log.warning("%s now leads (term %d)", self.node, term)
                    return term
                view = await self.view()
                if view.holder != announced:
                    log.info("standby: %s leads (term %d); waiting for its lease to lapse",
                             view.holder, view.term)
                    announced = view.holder
            except psycopg.Error as exc:
                log.error("standby: the database does not answer (%s); trying again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        return None

    def fence(self) -> Fence:
        return self.lease.fence()

    async def keep(self, on_lost: Callable[[str], Awaitable[None]]) -> None:
        """Renew every third of a lease until cancelled; on losing it, `on_lost(why)` once.

        Deadline-driven: the lease runs from when the last good renewal (or the acquisition)
        was *sent*, so the node gives up at `STOP_BEFORE` of a lease after that, however the
        attempts in between failed: a call that hangs (a partitioned network drops packets and
        never answers) is cut off at the deadline, not at the end of a retry cycle. Measured
        before this was so: a leader cut off stopped 2.1-2.7 s after its last renewal on a 2 s
        lease, after a standby could have taken over (tests/test_failover_end_to_end.py)."""
        loop = asyncio.get_running_loop()
        interval = self.lease_seconds / 3
        last_ok = self._renewed_at if self._renewed_at is not None else loop.time()
        wait = interval
        failure: BaseException | None = None
        while True:
            deadline = last_ok + STOP_BEFORE * self.lease_seconds
            await asyncio.sleep(max(0.0, min(wait, deadline - loop.time())))
            left = deadline - loop.time()
            if left <= 0:
                await on_lost(
                    f"could not renew the lease for {loop.time() - last_ok:.1f}s ({failure!r}): "
                    "it may lapse and a standby take over"
                )
                return
            sent = loop.time()
            try:
                held = await asyncio.wait_for(
                    self._run(self.lease.renew), timeout=min(interval, left)
                )
            except (psycopg.Error, TimeoutError) as exc:
                failure = exc
                log.error("lease renewal failed (%r); trying again", exc)
                wait = interval / 4
                continue
            if not held:
                await on_lost("the lease was lost: another coordinator holds it now")
                return
            last_ok, wait = sent, interval

    async def request_kill_switch(self, reason: str) -> int:
        return await self._run(lambda: self.lease.request_kill_switch(reason))

    async def applied_term(self, request_id: int) -> int | None:
        return await self._run(lambda: self.lease.applied_term(request_id))

    async def apply_kill_switch_requests(
        self, activate: Callable[[KillSwitchRequest], Awaitable[None]]
    ) -> int:
        """The leader: activate for every request a standby filed, then mark it applied (only
        once the activation is durable: a request is never marked and lost). How many."""
        pending = await self._run(self.lease.pending_kill_switch_requests)
        for request in pending:
            await activate(request)
            await self._run(partial(self.lease.mark_applied, request.id))
        return len(pending)

    async def watch_kill_switch_requests(
        self, activate: Callable[[KillSwitchRequest], Awaitable[None]], every: float = 0.5
    ) -> None:
        """Apply standbys' requests every `every` seconds until cancelled."""
        while True:
            try:
                await self.apply_kill_switch_requests(activate)
            except Exception as exc:  # the request stays pending; the next poll tries again
                log.error("could not apply a standby's kill switch request: %r", exc)
            await asyncio.sleep(every)

    async def release(self) -> None:
        try:
            await self._run(self.lease.release)
        except psycopg.Error as exc:
            log.error("could not release the lease (%s): a standby waits for it to lapse", exc)

    async def close(self) -> None:
        try:
            await self._run(self.lease.conn.close)
        finally:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
