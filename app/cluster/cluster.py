"""The Cluster: everything that exists only when several hosts share one PostgreSQL database, and
is absent on a single host. It keeps this node in the membership (heartbeats), renews the leases
of the tasks it runs and requeues those of hosts that died, carries task changes between hosts
(announcements in, events out), and fetches files other hosts hold."""

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from aiohttp import web

from app.cluster.database import ClusterDatabase
from app.cluster.file_proxy import FileHostUnavailableError, FileProxy
from app.cluster.signing import Nonces, is_signed
from app.settings import Settings
from app.store.base import StoreUnavailableError
from app.store.postgres import PostgresTaskStore
from app.store.records import FileRecord, TaskRecord
from app.tasks.events import EventHub
from app.tls import client_context

# Leases are renewed this often, which is also how soon a cancel on another host (or a lost lease)
# reaches this host's worker; liveness and expired leases are looked at every
# LEASE_CHECKS_PER_LEASE-th of a lease.
RENEW_INTERVAL_S = 1.0
LEASE_CHECKS_PER_LEASE = 6
# Each host's scheduler also looks for queued work this often: a task queued on another host
# starts here within about this long even if its announcement was lost.
CLAIM_POLL_S = 1.0
log = logging.getLogger(__name__)


class Views(Protocol):
    """What the cluster needs of this host's cache of task views (app/api/view_cache.py)."""

    def forget(self, task_ids: list[str]) -> None: ...

    def suspend(self) -> None: ...

    def resume(self) -> None: ...


class Workers(Protocol):
    """What the cluster needs of this host's task manager."""

    def running_ids(self) -> list[str]: ...

    async def drop(self, task_id: str) -> None: ...

    def wake(self) -> None: ...


class Cluster:
    claim_poll_s = CLAIM_POLL_S

    def __init__(self, settings: Settings, store: PostgresTaskStore) -> None:
        self.node = settings.node_name
        self.secret = settings.cluster_secret
        self._url = settings.node_base_url
        self._tls = client_context(settings)
        self._nonces = Nonces()
        self._lease_s = settings.lease_s
        self._store = store
        self._database = ClusterDatabase(store, self.node)
        self._proxy: FileProxy | None = None
        self._workers: Workers | None = None
        self._loops: list[asyncio.Task[None]] = []
        # The database's time minus this host's, from the last heartbeat: host-to-host signatures
        # are stamped and checked on the database's clock.
        self._clock_offset_s = 0.0
        # Since when (monotonic) the lease upkeep has reached the database without a break; None
        # right after a break.
        self._connected_since: float | None = time.monotonic()

    def clock(self) -> float:
        """The database's time, as this host estimates it."""
        return time.time() + self._clock_offset_s

    async def start(self, workers: Workers, hub: EventHub, views: Views) -> None:
        """Join: announce this host's task changes, follow the others' (and keep views of them only
        while their announcements can be heard), keep leases and liveness."""
        self._clock_offset_s = await self._database.heartbeat(self._url)
        self._proxy = FileProxy(self.secret, self.node, self.clock, self._tls)
        self._workers = workers
        self._store.observe(self._announce)
        self._loops = [
            asyncio.create_task(self._keep_leases(workers)),
            asyncio.create_task(
                self._database.listen(lambda task_id: self._republish(hub, views, task_id), views.suspend)
            ),
        ]

    async def stop(self) -> None:
        """Stop renewing leases and following other hosts (the first step of a host's stop)."""
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()

    async def nodes_alive(self) -> list[dict[str, Any]]:
        """{node, url, last_seen} of the hosts that renewed within a lease."""
        return await self._database.nodes_alive(self._lease_s)

    def is_signed(self, request: web.Request) -> bool:
        """The request comes from another host of this cluster (signed with the cluster secret)."""
        return is_signed(self.secret, request.headers, request.method, request.path, self.clock(), self._nonces)

    def holds_here(self, file: FileRecord) -> bool:
        return file["node"] == self.node

    async def stream_file(self, request: web.Request, file: FileRecord) -> web.StreamResponse:
        """A file another host holds, streamed from it. Raises FileHostUnavailableError."""
        owner = {node["node"]: node for node in await self.nodes_alive()}.get(file["node"])
        if owner is None or self._proxy is None:
            raise FileHostUnavailableError(f"the host holding this file ({file['node']}) is not reachable")
        return await self._proxy.stream(request, file, owner["url"])

    async def _announce(self, tasks: list[TaskRecord]) -> None:
        await self._database.announce([task["id"] for task in tasks])

    async def _republish(self, hub: EventHub, views: Views, task_id: str | None) -> None:
        """Another host changed a task: its view here is dropped, its followers here see it too (its
        callbacks are that host's), and a task queued anywhere wakes this host's scheduler."""
        if task_id is not None:
            views.forget([task_id])
            task = await self._store.get(task_id)
            if task is not None:
                hub.publish(task, local=False)
                if task["status"] == "queued" and self._workers is not None:
                    self._workers.wake()
            return
        # Announcements may have been missed: start the views afresh, catch every followed task up,
        # and look for queued work.
        views.resume()
        for followed_id, updated_at in hub.followed():
            task = await self._store.get(followed_id)
            if task is not None and task["updated_at"] != updated_at:
                hub.publish(task, local=False)
        if self._workers is not None:
            self._workers.wake()

    async def _keep_leases(self, workers: Workers) -> None:
        """Renew this host's leases, drop the tasks it no longer holds (cancelled or taken over
        elsewhere), say it is alive and requeue tasks of hosts that died. Any failure is said once
        and the loop goes on; it resumes by itself when the database is back."""
        checks = 0
        failing = False
        while True:
            await asyncio.sleep(RENEW_INTERVAL_S)
            try:
                await self._upkeep(workers, checks)
            except Exception as exc:
                self._connected_since = None
                # Said once; a database that cannot be reached the store says itself.
                if not failing and not isinstance(exc, StoreUnavailableError):
                    log.warning("lease upkeep failed (%s: %s); retrying", type(exc).__name__, exc)
                failing = True
                continue
            failing = False
            checks = (checks + 1) % max(1, round(self._lease_s / LEASE_CHECKS_PER_LEASE / RENEW_INTERVAL_S))

    async def _upkeep(self, workers: Workers, checks: int) -> None:
        for task_id in await self._database.renew_leases(self._lease_s, workers.running_ids()):
            await workers.drop(task_id)
        if self._connected_since is None:
            self._connected_since = time.monotonic()
        if checks == 0:
            self._clock_offset_s = await self._database.heartbeat(self._url)
            # After a break, a whole lease passes before this host requeues anybody's tasks: their
            # owners renew first (their leases ran out in the database while it was away).
            if time.monotonic() - self._connected_since >= self._lease_s:
                requeued = await self._database.requeue_expired()
                if requeued:
                    await self._store.changed(requeued)
                    workers.wake()
