"""PostgresTaskStore: the task store shared by several hosts, on PostgreSQL with psycopg 3.

The same contract as SQLiteTaskStore (app/store/base.py has it). What differs, and why:
- claim_next takes the oldest queued task with SELECT ... FOR UPDATE SKIP LOCKED and updates it in
  the same statement, so concurrent claimers on any host skip each other's rows instead of waiting.
- Counts by status are delta rows written by a trigger (+1/-1 per change) and summed on read, not
  one counter row per status: a counter row would be locked by every status change until its
  transaction commits, serialising all hosts' claims, and two opposite moves (queued -> downloading,
  downloading -> queued) taking the two rows in opposite orders could deadlock. Deltas are folded
  into one row per status once there are more than _FOLD_AT of them.
- create() is serialised by a transaction-level advisory lock, so the queue limit and dedupe
  hold for concurrent creates on every host (the partial unique index stays the last word on dedupe).
- Migrations run under another advisory lock: hosts starting at once apply each one exactly once.
"""

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.store.base import (
    COMPLETED_SQL,
    ITEMS_BY_STATUS_SQL,
    JSON_COLUMNS,
    USERS_MIGRATION,
    Limits,
    QueueFullError,
    StoreConnectError,
    StoreUnavailableError,
    TaskStore,
    completed_files,
    playlist_fields,
    quota_queries,
)
from app.store.records import NewFile, NewTask, TaskRecord

# Advisory lock keys (per database): arbitrary constants that no other application is likely to use.
_MIGRATION_LOCK = 0x76696431  # "vid1"
_CREATE_LOCK = 0x76696432  # "vid2"
_FOLD_AT = 256
# The pool's connections return rows as dicts (row_factory=dict_row).
Connection = psycopg.AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]
Result = TypeVar("Result")
# A call waits this long at most for a connection: while the database is away, callers get
# StoreUnavailableError (the API a 503) at once instead of a 10 s wait and a 500.
WAIT_FOR_CONNECTION_S = 1.0
# While it is away, how often a call tries whether the database is back.
REPROBE_S = 1.0
log = logging.getLogger(__name__)
# The pool logs every failed reconnection attempt; the store says once that the database is away
# (with the cause) and once that it is back.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
# LISTEN/NOTIFY channel of task changes: payload "<node> <task id>".
_CHANNEL = "video_api_tasks"
_RELISTEN_S = 1.0
# The database server's time, in epoch seconds: leases and liveness are compared against it alone.
DATABASE_NOW = "extract(epoch from clock_timestamp())"
# Literal IN lists, not = ANY(%s): only a literal predicate lets the planner use the partial indexes.
ACTIVE_SQL = "status IN ('queued', 'downloading', 'processing')"
RUNNING_SQL = "status IN ('downloading', 'processing')"

# Ordered schema migrations, applied once each and recorded in schema_version. Each one must work
# with the previous release's code, which may still run against the same database (rolling update).
_MIGRATIONS = (
    """
CREATE TABLE tasks (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    options JSONB NOT NULL,
    dedupe_key TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'downloading', 'processing', 'completed', 'failed', 'cancelled')),
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    downloaded_bytes BIGINT,
    total_bytes BIGINT,
    speed DOUBLE PRECISION,
    eta DOUBLE PRECISION,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    video_info JSONB,
    attempts INTEGER NOT NULL DEFAULT 0,
    video_file_id TEXT,
    audio_file_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    owner TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX tasks_status_seq ON tasks (status, seq);
-- At most one active task per URL+options, across every host.
CREATE UNIQUE INDEX tasks_active_dedupe ON tasks (dedupe_key)
    WHERE status IN ('queued', 'downloading', 'processing');
CREATE INDEX tasks_running_lease ON tasks (lease_until) WHERE status IN ('downloading', 'processing');

CREATE TABLE task_counts (status TEXT NOT NULL, n BIGINT NOT NULL);
CREATE INDEX task_counts_status ON task_counts (status);
CREATE FUNCTION tasks_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO task_counts (status, n) VALUES (OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_count_insert_delete AFTER INSERT OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_count();
CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tasks_count();

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    removed_at DOUBLE PRECISION,
    removed_reason TEXT,
    node TEXT
);
CREATE INDEX files_task ON files (task_id);
CREATE INDEX files_live ON files (created_at) WHERE removed_at IS NULL;
CREATE INDEX files_node_live ON files (node, created_at) WHERE removed_at IS NULL;

CREATE TABLE nodes (node TEXT PRIMARY KEY, url TEXT NOT NULL, last_seen DOUBLE PRECISION NOT NULL);
""",
    # 2: every file of a task listed on it (subtitles and thumbnails too), sealed cookies, and the
    # video a completed task holds (reuse). Tasks completed before list their video and audio.
    """
ALTER TABLE tasks ADD COLUMN files JSONB;
ALTER TABLE tasks ADD COLUMN cookies BYTEA;
ALTER TABLE tasks ADD COLUMN media_key TEXT;
CREATE INDEX tasks_media_key ON tasks (media_key) WHERE status = 'completed';
ALTER TABLE files ADD COLUMN language TEXT;
UPDATE tasks SET files = (
    SELECT COALESCE(jsonb_agg(jsonb_build_object('id', id, 'kind', kind, 'language', NULL, 'name', name, 'size', size)),
                    '[]'::jsonb)
    FROM files WHERE files.task_id = tasks.id
) WHERE status = 'completed';
""",
    # 3: playlists: a playlist's items are tasks with its id as parent_id; the playlist sums them up.
    # The items are counted apart too ('item:<status>'), so the list can count top-level tasks.
    """
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
ALTER TABLE tasks ADD COLUMN playlist JSONB;
CREATE INDEX tasks_parent ON tasks (parent_id, seq) WHERE parent_id IS NOT NULL;
CREATE OR REPLACE FUNCTION tasks_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO task_counts (status, n) VALUES (OLD.status, -1);
        IF OLD.parent_id IS NOT NULL THEN
            INSERT INTO task_counts (status, n) VALUES ('item:' || OLD.status, -1);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1);
        IF NEW.parent_id IS NOT NULL THEN
            INSERT INTO task_counts (status, n) VALUES ('item:' || NEW.status, 1);
        END IF;
    END IF;
    RETURN NULL;
END $$;
""",
    # 4: users (the same SQL in both stores), and their top-level tasks counted by status: delta rows,
    # as task_counts, folded with it.
    USERS_MIGRATION
    + """
CREATE TABLE tenant_counts (tenant TEXT NOT NULL, status TEXT NOT NULL, n BIGINT NOT NULL);
CREATE INDEX tenant_counts_tenant ON tenant_counts (tenant, status);
INSERT INTO tenant_counts (tenant, status, n)
    SELECT tenant, status, COUNT(*) FROM tasks WHERE parent_id IS NULL GROUP BY tenant, status;
CREATE FUNCTION tenant_tasks_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.parent_id IS NULL THEN
            INSERT INTO tenant_counts (tenant, status, n) VALUES (OLD.tenant, OLD.status, -1);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.parent_id IS NULL THEN
            INSERT INTO tenant_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1);
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_tenant_count_insert_delete AFTER INSERT OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tenant_tasks_count();
CREATE TRIGGER tasks_tenant_count_update AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tenant_tasks_count();
""",
)

# Both counter tables folded at once: a user's deltas are never more than all tasks' deltas.
_FOLD_COUNTS = (
    "WITH folded AS (DELETE FROM task_counts RETURNING status, n)"
    " INSERT INTO task_counts (status, n) SELECT status, SUM(n) FROM folded GROUP BY status",
    "WITH folded AS (DELETE FROM tenant_counts RETURNING tenant, status, n)"
    " INSERT INTO tenant_counts (tenant, status, n) SELECT tenant, status, SUM(n) FROM folded GROUP BY tenant, status",
)


def redact_url(url: str) -> str:
    """The database URL with its password (in the user part or ?password=) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    netloc = re.sub(r"^([^@/]*?):[^@/]*@", r"\1:***@", parts.netloc)
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str, url: str) -> str:
    """text with every form of the URL's password removed (libpq quotes none, but be sure)."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    text = text.replace(url, redact_url(url))
    if isinstance(password, str) and password:
        for secret in {password, urllib.parse.quote(password, safe="")}:
            text = text.replace(secret, "***")
    return text


class PostgresTaskStore(TaskStore):
    """A small pool of autocommit connections: a read is one round trip, a multi-statement write
    an explicit transaction. Open with `await PostgresTaskStore.connect(url, node, lease_s)`;
    a task this node claims has a lease of lease_s (None: no expiry) that the cluster renews."""

    MARK = "%s"

    def __init__(self, url: str, conninfo: str, pool_size: int, node: str | None, lease_s: float | None) -> None:
        super().__init__(node)
        self.url = url
        self._conninfo = conninfo
        self._pool_size = pool_size
        self.pool = self._new_pool()
        self._lease_s = lease_s
        self.reachable = True
        self._last_probe = 0.0
        self._closing: set[asyncio.Task[None]] = set()

    def _new_pool(self) -> Pool:
        # timeout: a call waits that long at most for a connection.
        return AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            name="tasks",
            timeout=WAIT_FOR_CONNECTION_S,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def _reopen_if_back(self) -> None:
        """While the database is away the pool retries with a growing backoff (half a minute apart
        after a long outage), so at most once a second a call tries a connection of its own, and
        once one succeeds a fresh pool takes the old one's place: service is back within a second."""
        now = time.monotonic()
        if now - self._last_probe < REPROBE_S:
            return
        self._last_probe = now
        try:
            probe = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=round(REPROBE_S))
        except psycopg.Error:
            return
        await probe.close()
        old, self.pool = self.pool, self._new_pool()
        await self.pool.open()
        closing = asyncio.create_task(old.close())  # its connections are the broken ones
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def run(self, work: Callable[[Connection], Awaitable[Result]], retry: bool = True) -> Result:
        """work(connection) on a pooled connection. A connection the server broke (a restart, a
        terminated backend) is dropped with every other broken one and, with retry (reads and
        idempotent writes), work runs once more on a fresh one. Raises StoreUnavailableError while
        the database cannot be reached; a query the server refused raises as it is."""
        if not self.reachable:
            await self._reopen_if_back()
        for attempt in (1, 2):
            conn: Connection | None = None
            try:
                async with self.pool.connection() as conn:
                    result = await work(conn)
            except PoolTimeout as exc:
                raise self._unreachable(f"no connection within {WAIT_FOR_CONNECTION_S:g} s ({exc})") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn is not None and not conn.broken and not conn.closed:
                    raise
                if retry and attempt == 1:
                    await self.pool.check()
                    continue
                raise self._unreachable(str(exc).strip() or type(exc).__name__) from None
            if not self.reachable:
                self.reachable = True
                log.warning("task database is reachable again")
            return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _unreachable(self, cause: str) -> StoreUnavailableError:
        cause = scrub(cause, self.url)
        if self.reachable:
            self.reachable = False
            log.warning("task database is unreachable (%s); API calls that need it answer 503", cause)
        return StoreUnavailableError(f"task database is unreachable: {cause}")

    def __repr__(self) -> str:
        return f"PostgresTaskStore({redact_url(self.url)!r})"

    @classmethod
    async def connect(
        cls,
        url: str,
        node: str | None = None,
        lease_s: float | None = None,
        pool_size: int = 4,
        timeout_s: float = 10.0,
    ) -> "PostgresTaskStore":
        """Connect, apply pending migrations and open the pool. Raises StoreConnectError."""
        try:
            params = conninfo_to_dict(url)
            extra: dict[str, str | int] = {
                "connect_timeout": round(timeout_s),
                "application_name": "video-download-api",
            }
            conninfo = make_conninfo(url, **{k: v for k, v in extra.items() if k not in params})
            # One connection of its own first: its error says why (the pool's would only time out).
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await _migrate(conn)
            store = cls(url, conninfo, pool_size, node, lease_s)
            await store.pool.open(wait=True, timeout=timeout_s)
        except psycopg.Error as exc:
            raise StoreConnectError(f"task database {redact_url(url)}: {scrub(str(exc), url)}") from None
        return store

    async def _rows(self, sql: str, params: tuple[Any, ...] = (), retry: bool = True) -> list[dict[str, Any]]:
        async def fetch(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self.run(fetch, retry)

    async def _ids(self, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
        return [row["id"] for row in await self._rows(sql, params)]

    async def _create(self, task: NewTask, queue_limit: int, limits: Limits) -> tuple[TaskRecord, bool]:
        # Retried after a broken connection: a create that did commit is then found by its dedupe key.
        return await self.run(lambda conn: self._create_on(conn, task, queue_limit, limits))

    async def _create_on(
        self, conn: Connection, task: NewTask, queue_limit: int, limits: Limits
    ) -> tuple[TaskRecord, bool]:
        now = time.time()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            cursor = await conn.execute(
                f"SELECT * FROM tasks WHERE dedupe_key = %s AND {ACTIVE_SQL}", (task["dedupe_key"],)
            )
            existing = await cursor.fetchone()
            if existing is not None:
                return existing, False  # type: ignore[return-value]
            # Under the create lock: two hosts cannot both take a user's last free place.
            for sql, params, check in quota_queries(limits, now):
                cursor = await conn.execute(sql.format(mark="%s"), params)
                check(await cursor.fetchone())  # type: ignore[arg-type]
            cursor = await conn.execute(
                "SELECT COALESCE(SUM(n), 0) AS queued, COUNT(*) AS deltas FROM task_counts WHERE status = 'queued'"
            )
            counted = await cursor.fetchone()
            assert counted is not None  # an aggregate without GROUP BY: always one row
            if counted["queued"] >= queue_limit:
                raise QueueFullError(counted["queued"])
            await _insert(conn, task, None, now)
            cursor = await conn.execute("SELECT * FROM tasks WHERE id = %s", (task["id"],))
            created = await cursor.fetchone()
        if counted["deltas"] > _FOLD_AT:
            await _fold_counts(conn)
        return created, True  # type: ignore[return-value]

    async def _expand(self, parent_id: str, playlist: dict[str, Any], items: list[NewTask], queue_limit: int) -> bool:
        now = time.time()
        owned, owner = self._owned()

        async def expand(conn: Connection) -> bool:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                cursor = await conn.execute(
                    f"SELECT 1 FROM tasks WHERE id = %s AND {RUNNING_SQL} AND playlist IS NULL{owned} FOR UPDATE",
                    (parent_id, *owner),
                )
                if await cursor.fetchone() is None:
                    return False
                cursor = await conn.execute(
                    "SELECT COALESCE(SUM(n), 0) AS queued FROM task_counts WHERE status = 'queued'"
                )
                counted = await cursor.fetchone()
                assert counted is not None  # an aggregate without GROUP BY: always one row
                if counted["queued"] + len(items) > queue_limit:
                    raise QueueFullError(max(0, queue_limit - counted["queued"]))
                for item in items:
                    await _insert(conn, item, parent_id, now)
                await conn.execute(
                    "UPDATE tasks SET playlist = %s, message = %s, owner = NULL, lease_until = NULL, cookies = NULL,"
                    " updated_at = %s WHERE id = %s",
                    (Jsonb(playlist), f"{len(items)} items queued", now, parent_id),
                )
                return True

        # Retried after a broken connection: an expansion that did commit is then no longer this node's to make.
        return await self.run(expand)

    async def _sum_up_playlist(self, parent_id: str) -> bool:
        async def sum_up(conn: Connection) -> bool:
            async with conn.transaction():
                cursor = await conn.execute(
                    "SELECT * FROM tasks WHERE id = %s AND playlist IS NOT NULL FOR UPDATE", (parent_id,)
                )
                parent = await cursor.fetchone()
                if parent is None:
                    return False
                items = await (await conn.execute(ITEMS_BY_STATUS_SQL.format(mark="%s"), (parent_id,))).fetchall()
                fields = playlist_fields(parent, items, time.time())  # type: ignore[arg-type]
                values = [Jsonb(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
                await conn.execute(
                    f"UPDATE tasks SET {', '.join(f'{column} = %s' for column in fields)}, updated_at = %s"
                    " WHERE id = %s",
                    (*values, time.time(), parent_id),
                )
                return True

        return await self.run(sum_up)

    async def counters(self) -> dict[str, int]:
        async def count(conn: Connection) -> list[DictRow]:
            cursor = await conn.execute(
                "SELECT status, SUM(n) AS n, COUNT(*) AS deltas FROM task_counts GROUP BY status"
            )
            rows = await cursor.fetchall()
            if sum(row["deltas"] for row in rows) > _FOLD_AT:
                await _fold_counts(conn)
            return rows

        rows = await self.run(count)
        return {row["status"]: int(row["n"]) for row in rows}

    async def _claim_next(self) -> TaskRecord | None:
        now = time.time()
        # The lease runs on the database's clock, the one clock every host shares.
        lease_until = "NULL" if self._lease_s is None else f"{DATABASE_NOW} + %s"
        rows = await self._rows(
            "WITH next AS (SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" UPDATE tasks SET status = 'downloading', owner = %s, lease_until = {lease_until},"
            " attempts = attempts + 1, started_at = %s, updated_at = %s FROM next WHERE tasks.seq = next.seq"
            " RETURNING tasks.*",
            (self.owner, *(() if self._lease_s is None else (self._lease_s,)), now, now),
            retry=False,  # a claim that did commit must not take a second task: the scheduler tries again
        )
        return rows[0] if rows else None  # type: ignore[return-value]

    async def _update(self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...], owned: bool) -> bool:
        values = [Jsonb(v) if k in JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        assignments = ", ".join(f"{column} = %s" for column in fields)
        scope, owner = self._owned() if owned else ("", ())

        async def update(conn: Connection) -> bool:
            cursor = await conn.execute(
                f"UPDATE tasks SET {assignments}, updated_at = %s WHERE id = %s AND status = ANY(%s){scope}",
                (*values, time.time(), task_id, list(only_if), *owner),
            )
            return cursor.rowcount == 1

        return await self.run(update)

    async def _complete(self, task_id: str, files: list[NewFile]) -> bool:
        now = time.time()
        video, audio, listing = completed_files(files)
        owned, owner = self._owned()

        async def complete(conn: Connection) -> bool:
            async with conn.transaction():
                cursor = await conn.execute(
                    f"UPDATE tasks SET {COMPLETED_SQL}, video_file_id = %s, audio_file_id = %s, files = %s,"
                    f" finished_at = %s, updated_at = %s WHERE id = %s AND {RUNNING_SQL}{owned} RETURNING owner",
                    (video, audio, Jsonb(listing), now, now, task_id, *owner),
                )
                completed = await cursor.fetchone()
                if completed is None:
                    return False
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO files (id, task_id, kind, language, path, name, size, created_at, node)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [
                            (
                                f["id"],
                                task_id,
                                f["kind"],
                                f["language"],
                                f["path"],
                                f["name"],
                                f["size"],
                                now,
                                completed["owner"],
                            )
                            for f in files
                        ],
                    )
                return True

        # Not retried here: after a connection broke at the commit, a second try would answer False
        # for a task that did complete. The manager asks again and then reads the task.
        return await self.run(complete, retry=False)

    async def _requeue_running(self, message: str, count_attempt: bool) -> list[str]:
        attempts = "attempts" if count_attempt else "GREATEST(attempts - 1, 0)"
        owned, owner = self._owned()
        return await self._ids(
            f"WITH mine AS (SELECT seq FROM tasks WHERE {RUNNING_SQL} AND playlist IS NULL{owned}"
            " ORDER BY seq FOR UPDATE)"
            f" UPDATE tasks SET status = 'queued', attempts = {attempts}, lease_until = NULL, message = %s,"
            " speed = NULL, eta = NULL, updated_at = %s FROM mine WHERE tasks.seq = mine.seq RETURNING tasks.id",
            (*owner, message, time.time()),
        )

    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None:
        async def mark(conn: Connection) -> None:
            await conn.execute(
                "UPDATE files SET removed_at = %s, removed_reason = %s WHERE id = ANY(%s) AND removed_at IS NULL",
                (time.time(), reason, file_ids),
            )

        await self.run(mark)

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    async def close(self) -> None:
        await self.pool.close()
        await asyncio.gather(*self._closing)


async def _fold_counts(conn: Connection) -> None:
    for sql in _FOLD_COUNTS:
        await conn.execute(sql)


async def _insert(conn: Connection, task: NewTask, parent_id: str | None, now: float) -> None:
    await conn.execute(
        "INSERT INTO tasks (id, url, options, dedupe_key, status, message, cookies, video_info, parent_id, tenant,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s)",
        (
            task["id"],
            task["url"],
            Jsonb(task["options"]),
            task["dedupe_key"],
            task.get("message", ""),
            task.get("cookies"),
            None if task.get("video_info") is None else Jsonb(task.get("video_info")),
            parent_id,
            task["tenant"],
            now,
            now,
        ),
    )


async def _migrate(conn: psycopg.AsyncConnection) -> None:
    async with conn.transaction():
        # Taken before anything else, so a second host waits here, then finds the work done.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {row[0] for row in await (await conn.execute("SELECT version FROM schema_version")).fetchall()}
        for version, script in enumerate(_MIGRATIONS, 1):
            if version not in applied:
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (version, time.time()))
