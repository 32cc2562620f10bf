"""The cluster's share of the PostgreSQL database: live nodes, the leases of running tasks, and
announcements of task changes (LISTEN/NOTIFY). The tables are the task store's schema
(app/store/postgres.py); this is the SQL that only several hosts need."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from app.store.base import EXPIRED_MESSAGE
from app.store.postgres import RUNNING_SQL, Pool, scrub

# LISTEN/NOTIFY channel of task changes: payload "<node> <task id>".
CHANNEL = "video_api_tasks"
RELISTEN_S = 1.0
log = logging.getLogger(__name__)


class ClusterDatabase:
    def __init__(self, pool: Pool, url: str, node: str) -> None:
        self._pool = pool
        self._url = url  # for messages: scrubbed of its password before it is shown
        self.node = node

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def heartbeat(self, url: str) -> None:
        """Record that this node is alive and reachable at url."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO nodes (node, url, last_seen) VALUES (%s, %s, %s)"
                " ON CONFLICT (node) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen",
                (self.node, url, time.time()),
            )

    async def nodes_alive(self, since: float) -> list[dict[str, Any]]:
        """{node, url, last_seen} of the nodes seen since then, by node."""
        return await self._rows("SELECT node, url, last_seen FROM nodes WHERE last_seen >= %s ORDER BY node", (since,))

    async def renew_leases(self, lease_s: float, task_ids: list[str]) -> list[str]:
        """Extend the leases of task_ids that this node still owns and runs; returns the others: their
        workers must stop (cancelled or finished by another host, or requeued after the lease
        expired and maybe claimed elsewhere)."""
        if not task_ids:
            return []
        # Rows locked in seq order by every multi-row update here: no deadlock between hosts.
        rows = await self._rows(
            f"WITH mine AS (SELECT seq FROM tasks WHERE id = ANY(%s) AND owner = %s AND {RUNNING_SQL}"
            " ORDER BY seq FOR UPDATE)"
            " UPDATE tasks SET lease_until = %s FROM mine WHERE tasks.seq = mine.seq RETURNING tasks.id",
            (task_ids, self.node, time.time() + lease_s),
        )
        held = {row["id"] for row in rows}
        return [task_id for task_id in task_ids if task_id not in held]

    async def requeue_expired(self, now: float | None = None) -> list[str]:
        """Put running tasks whose lease ended before now back to queued, the attempt counted;
        returns their ids. Each is requeued once, however many hosts call this at once."""
        now = time.time() if now is None else now
        # SKIP LOCKED: a row another host is requeuing (or its owner renewing) is theirs to settle;
        # a row requeued meanwhile no longer matches when its lock is taken, so none goes twice.
        rows = await self._rows(
            f"WITH expired AS (SELECT seq FROM tasks WHERE {RUNNING_SQL} AND lease_until < %s"
            " ORDER BY seq FOR UPDATE SKIP LOCKED)"
            f" UPDATE tasks SET status = 'queued', lease_until = NULL, message = {EXPIRED_MESSAGE}, speed = NULL,"
            " eta = NULL, updated_at = %s FROM expired WHERE tasks.seq = expired.seq RETURNING tasks.id",
            (now, time.time()),
        )
        return [row["id"] for row in rows]

    async def announce(self, task_ids: list[str]) -> None:
        """Tell the other hosts that this node changed these tasks."""
        if task_ids:
            await self._rows(
                f"SELECT pg_notify('{CHANNEL}', %s || ' ' || id) FROM unnest(%s::text[]) AS id", (self.node, task_ids)
            )

    async def listen(self, on_change: Callable[[str | None], Awaitable[None]]) -> None:
        """Until cancelled, await on_change(task_id) for each task another host announced, and
        on_change(None) after (re)connecting, when announcements may have been missed."""
        conninfo = self._pool.conninfo
        # PostgresTaskStore.connect() builds the pool from a string, not a function returning one.
        assert isinstance(conninfo, str)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await on_change(None)
                    async for notice in conn.notifies():
                        origin, _, task_id = notice.payload.partition(" ")
                        if origin != self.node:
                            await on_change(task_id)
            except psycopg.Error as exc:
                log.warning("task announcements interrupted (%s); reconnecting", scrub(str(exc), self._url))
                await asyncio.sleep(RELISTEN_S)
