"""The cluster's share of the PostgreSQL database: live nodes, the leases of running tasks, and
announcements of task changes (LISTEN/NOTIFY). The tables are the task store's schema
(app/store/postgres.py); this is the SQL that only several hosts need. Every deadline is written
and compared on the database's clock, so the hosts' own clocks do not matter."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from app.store.base import EXPIRED_MESSAGE
from app.store.postgres import DATABASE_NOW, RUNNING_SQL, Connection, PostgresTaskStore, scrub

# LISTEN/NOTIFY channel of task changes: payload "<node> <task id>".
CHANNEL = "video_api_tasks"
RELISTEN_S = 1.0
log = logging.getLogger(__name__)


class ClusterDatabase:
    def __init__(self, store: PostgresTaskStore, node: str) -> None:
        self._store = store  # its connections, and its one view of whether the database is reachable
        self.node = node

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async def fetch(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self._store.run(fetch)

    async def heartbeat(self, url: str) -> float:
        """Record that this node is alive and reachable at url; returns the database's time minus
        this host's (seconds), measured at the middle of the round trip."""
        sent = time.time()
        (row,) = await self._rows(
            f"INSERT INTO nodes (node, url, last_seen) VALUES (%s, %s, {DATABASE_NOW})"
            " ON CONFLICT (node) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen"
            " RETURNING last_seen",
            (self.node, url),
        )
        return float(row["last_seen"]) - (sent + time.time()) / 2

    async def nodes_alive(self, within_s: float) -> list[dict[str, Any]]:
        """{node, url, last_seen} of the nodes seen in the last within_s seconds, by node."""
        return await self._rows(
            f"SELECT node, url, last_seen FROM nodes WHERE last_seen >= {DATABASE_NOW} - %s ORDER BY node",
            (within_s,),
        )

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
            f" UPDATE tasks SET lease_until = {DATABASE_NOW} + %s FROM mine WHERE tasks.seq = mine.seq"
            " RETURNING tasks.id",
            (task_ids, self.node, lease_s),
        )
        held = {row["id"] for row in rows}
        return [task_id for task_id in task_ids if task_id not in held]

    async def requeue_expired(self, ahead_s: float = 0.0) -> list[str]:
        """Put running tasks whose lease has ended (ahead_s seconds from now, for tests) back to
        queued, the attempt counted; returns their ids. Each is requeued once, however many hosts
        call this at once."""
        # SKIP LOCKED: a row another host is requeuing (or its owner renewing) is theirs to settle;
        # a row requeued meanwhile no longer matches when its lock is taken, so none goes twice.
        rows = await self._rows(
            f"WITH expired AS (SELECT seq FROM tasks WHERE {RUNNING_SQL} AND lease_until < {DATABASE_NOW} + %s"
            " ORDER BY seq FOR UPDATE SKIP LOCKED)"
            f" UPDATE tasks SET status = 'queued', lease_until = NULL, message = {EXPIRED_MESSAGE}, speed = NULL,"
            " eta = NULL, updated_at = %s FROM expired WHERE tasks.seq = expired.seq RETURNING tasks.id",
            (ahead_s, time.time()),
        )
        return [row["id"] for row in rows]

    async def announce(self, task_ids: list[str]) -> None:
        """Tell the other hosts that this node changed these tasks."""
        if task_ids:
            await self._rows(
                f"SELECT pg_notify('{CHANNEL}', %s || ' ' || id) FROM unnest(%s::text[]) AS id", (self.node, task_ids)
            )

    async def listen(self, on_change: Callable[[str | None], Awaitable[None]], on_lost: Callable[[], None]) -> None:
        """Until cancelled, await on_change(task_id) for each task another host announced, and
        on_change(None) after (re)connecting, when announcements may have been missed; on_lost()
        as soon as the connection breaks. A lost connection is said once, with its cause, and again
        once it is back."""
        conninfo = self._store.pool.conninfo
        assert isinstance(conninfo, str)  # the store builds its pool from a string
        interrupted = False
        while True:
            try:
                # Named, so an operator (or a test) can tell this host's listener in pg_stat_activity.
                name = f"video-api listener {self.node}"[:63]
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, application_name=name
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if interrupted:
                        log.warning("task announcements from other hosts resumed")
                        interrupted = False
                    await on_change(None)
                    async for notice in conn.notifies():
                        origin, _, task_id = notice.payload.partition(" ")
                        if origin != self.node:
                            await on_change(task_id)
            except Exception as exc:  # whatever broke, listening must go on
                on_lost()
                if not interrupted:
                    cause = scrub(str(exc).strip() or type(exc).__name__, self._store.url)
                    log.warning("task announcements from other hosts interrupted (%s); reconnecting", cause)
                    interrupted = True
                await asyncio.sleep(RELISTEN_S)
