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
from app.cluster.signing import is_signed
from app.settings import Settings
from app.store.postgres import PostgresTaskStore
from app.store.records import FileRecord, TaskRecord
from app.tasks.events import EventHub

# Leases are renewed this often, which is also how soon a cancel on another host (or a lost lease)
# reaches this host's worker; liveness and expired leases are looked at every
# LEASE_CHECKS_PER_LEASE-th of a lease.
RENEW_INTERVAL_S = 1.0
LEASE_CHECKS_PER_LEASE = 6
log = logging.getLogger(__name__)


class Workers(Protocol):
    """What the cluster needs of this host's task manager."""

    def running_ids(self) -> list[str]: ...

    async def drop(self, task_id: str) -> None: ...

    def wake(self) -> None: ...


class Cluster:
    def __init__(self, settings: Settings, store: PostgresTaskStore) -> None:
        self.node = settings.node_name
        self.secret = settings.cluster_secret
        self._url = settings.node_base_url
        self._lease_s = settings.lease_s
        self._store = store
        self._database = ClusterDatabase(store.pool, store.url, self.node)
        self._proxy: FileProxy | None = None
        self._loops: list[asyncio.Task[None]] = []

    async def start(self, workers: Workers, hub: EventHub) -> None:
        """Join: announce this host's task changes, follow the others', keep leases and liveness."""
        await self._database.heartbeat(self._url)
        self._proxy = FileProxy(self.secret, self.node)
        self._store.observe(self._announce)
        self._loops = [
            asyncio.create_task(self._keep_leases(workers)),
            asyncio.create_task(self._database.listen(lambda task_id: self._republish(hub, task_id))),
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
        return await self._database.nodes_alive(time.time() - self._lease_s)

    def is_signed(self, request: web.Request) -> bool:
        """The request comes from another host of this cluster (signed with the cluster secret)."""
        return is_signed(self.secret, request.headers, request.method, request.path)

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

    async def _republish(self, hub: EventHub, task_id: str | None) -> None:
        """Another host changed a task: its followers here see it too (its callbacks are that host's)."""
        if task_id is not None:
            task = await self._store.get(task_id)
            if task is not None:
                hub.publish(task, local=False)
            return
        # Announcements may have been missed: catch every followed task up.
        for followed_id, updated_at in hub.followed():
            task = await self._store.get(followed_id)
            if task is not None and task["updated_at"] != updated_at:
                hub.publish(task, local=False)

    async def _keep_leases(self, workers: Workers) -> None:
        """Renew this host's leases, drop the tasks it no longer holds (cancelled or taken over
        elsewhere), say it is alive and requeue tasks of hosts that died."""
        checks = 0
        while True:
            await asyncio.sleep(RENEW_INTERVAL_S)
            try:
                for task_id in await self._database.renew_leases(self._lease_s, workers.running_ids()):
                    await workers.drop(task_id)
                checks += 1
                if checks * RENEW_INTERVAL_S >= self._lease_s / LEASE_CHECKS_PER_LEASE:
                    checks = 0
                    await self._database.heartbeat(self._url)
                    requeued = await self._database.requeue_expired()
                    if requeued:
                        await self._store.changed(requeued)
                        workers.wake()
            except Exception:
                log.exception("lease upkeep failed; retrying")
