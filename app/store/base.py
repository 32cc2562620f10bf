"""The task store's interface: a repository of tasks and of the files they produced.

A store is built for one node. Writes that belong to the host running a task (claiming it, its
progress, completing it, requeuing at a restart) apply to that node's tasks only; a single host's
store has no node and every task is its own. What exists only with several hosts (membership,
leases, announcements) is the cluster's (app/cluster/), not the store's.

Every method commits before returning. The methods that change a task as clients see it are
written here once: each runs its store's implementation (the abstract `_` method), then tells the
observers (events, the cluster's announcements) which tasks changed.
"""

import abc
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from app.store.records import ACTIVE, FINISHED, FileRecord, NewFile, NewTask, Status, TaskFile, TaskRecord

STATUSES = tuple(Status)
# The owner of tasks claimed by a store without a node: a single host.
LOCAL_NODE = "local"
# Columns a caller may change with update(); everything else changes through dedicated methods.
UPDATABLE = frozenset(
    {
        "status",
        "progress",
        "downloaded_bytes",
        "total_bytes",
        "speed",
        "eta",
        "message",
        "error",
        "video_info",
        "finished_at",
        "media_key",
    }
)
# The fields of a progress tick: an update of only these is no state change.
PROGRESS_FIELDS = frozenset({"progress", "downloaded_bytes", "total_bytes", "speed", "eta", "message"})
JSON_COLUMNS = ("options", "video_info", "files", "playlist")
# SQL (the same in both stores) for the message of a task requeued after its owner's lease expired.
EXPIRED_MESSAGE = "'requeued: host ' || owner || ' stopped renewing its lease'"
# SQL (the same in both stores) of a task's completion, but for its files; its cookies go with it.
COMPLETED_SQL = "status = 'completed', progress = 100, message = 'completed', error = NULL, cookies = NULL"
# The database's counters of playlists' items: this prefix and the status.
ITEM_COUNT_PREFIX = "item:"
# SQL (the same in both stores; {mark}: the driver's) of a playlist's items summed up by status.
ITEMS_BY_STATUS_SQL = (
    "SELECT status, COUNT(*) AS n, SUM(progress) AS progress, SUM(COALESCE(downloaded_bytes, 0)) AS downloaded,"
    " SUM(total_bytes) AS total, COUNT(total_bytes) AS sized, SUM(speed) AS speed FROM tasks WHERE parent_id = {mark}"
    " GROUP BY status"
)
# A user's tasks that count against its limits: top-level ones (a playlist counts once, not its items).
_TENANT_TASKS = "FROM tasks WHERE tenant = {mark} AND parent_id IS NULL"
# The window of a user's submissions_per_minute, and when a user at its active-task limit should try again.
RATE_WINDOW_S = 60.0
ACTIVE_LIMIT_RETRY_AFTER_S = 30
# The schema migration (the same in both stores) that gives every task its user (app/tenants/): those from
# before belong to the admin. A file's user is its task's, read through the join (_FILES), never stored twice:
# a host of the release before, writing files during a rolling upgrade, cannot give a file another user.
# Indexed for a user's page and its submissions of the last minute. Each store adds tenant_counts, the user's
# top-level tasks by status kept by triggers.
USERS_MIGRATION = """
ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'admin';
CREATE INDEX tasks_tenant_seq ON tasks (tenant, seq) WHERE parent_id IS NULL;
CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at) WHERE parent_id IS NULL;
"""
# File records with their task's user.
_FILES = "SELECT files.*, tasks.tenant FROM files JOIN tasks ON tasks.id = files.task_id"
# SQL (both stores; {mark}: the driver's) of a user's top-level tasks by status, from the counters the
# triggers keep (SQLite: one row per user and status; PostgreSQL: delta rows, summed): a point read
# however many tasks the user has.
TENANT_COUNTS_SQL = "SELECT status, SUM(n) AS n FROM tenant_counts WHERE tenant = {mark} GROUP BY status"
_TENANT_ACTIVE_SQL = (
    "SELECT COALESCE(SUM(n), 0) AS n FROM tenant_counts WHERE tenant = {mark}"
    " AND status IN ('queued', 'downloading', 'processing')"
)
# Rows of the next page start below this seq when no cursor is given.
_NO_CURSOR = 2**63 - 1

Observer = Callable[[list[TaskRecord]], Awaitable[None]]


def completed_files(files: list[NewFile]) -> tuple[str | None, str | None, list[TaskFile]]:
    """What complete() records on the task: its video's and audio's file ids, and the listing of all."""
    ids = {file["kind"]: file["id"] for file in files if file["kind"] in ("video", "audio")}
    listing = [
        TaskFile(id=f["id"], kind=f["kind"], language=f["language"], name=f["name"], size=f["size"]) for f in files
    ]
    return ids.get("video"), ids.get("audio"), listing


def playlist_fields(parent: TaskRecord, items: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """A playlist task's fields from its items summed up by status (ITEMS_BY_STATUS_SQL): counts,
    progress (the items' mean, a completed one counting 100), bytes, speed, and, once no item is
    active, its final status: completed (100 %) when any item completed, else failed when any
    failed, else cancelled."""
    counts = {status: 0 for status in STATUSES} | {row["status"]: int(row["n"]) for row in items}
    total_items = sum(counts.values())
    active = sum(counts[status] for status in ACTIVE)
    progress = sum(
        100.0 * int(row["n"]) if row["status"] == Status.COMPLETED else float(row["progress"] or 0) for row in items
    )
    summary = ", ".join(f"{counts[status]} {status}" for status in STATUSES if counts[status])
    fields: dict[str, Any] = {
        "playlist": {**(parent["playlist"] or {}), "counts": counts},
        "progress": round(progress / total_items, 1) if total_items else 0.0,
        "downloaded_bytes": sum(int(row["downloaded"] or 0) for row in items),
        "total_bytes": sum(int(row["total"]) for row in items if row["total"] is not None)
        if sum(int(row["sized"]) for row in items) == total_items
        else None,
        "speed": sum(float(row["speed"] or 0) for row in items if row["status"] in ACTIVE) or None,
        "message": f"{total_items} items: {summary}",
    }
    if active == 0 and parent["status"] in ACTIVE:
        final = Status.COMPLETED if counts["completed"] else Status.FAILED if counts["failed"] else Status.CANCELLED
        fields |= {"status": final, "finished_at": now, "eta": None, "speed": None}
        if final == Status.COMPLETED:
            fields["progress"] = 100.0
        if final == Status.FAILED:
            fields["error"] = f"no item of the playlist completed ({summary})"
    return fields


class Limits(NamedTuple):
    """A user's limits that create() enforces in the task store, so they hold across hosts (None: no limit)."""

    tenant: str
    max_active: int | None = None
    per_minute: int | None = None


class QuotaExceededError(Exception):
    """The user is at one of its limits; the message names the limit, retry_after says when to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Row = dict[str, Any]
QuotaQuery = tuple[str, tuple[Any, ...], Callable[[Row], None]]


def quota_queries(limits: Limits, now: float) -> list[QuotaQuery]:
    """What create() asks the database, inside its transaction, to enforce limits: each query's SQL
    ({mark}: the driver's), its parameters, and a check of its one row that raises QuotaExceededError."""
    tenant, queries = limits.tenant, list[QuotaQuery]()
    if (max_active := limits.max_active) is not None:

        def active(row: Row) -> None:
            if int(row["n"]) >= max_active:
                raise QuotaExceededError(
                    f"{tenant} has {row['n']} tasks queued or running, its limit (max_active_tasks = {max_active});"
                    " try again when one has ended",
                    ACTIVE_LIMIT_RETRY_AFTER_S,
                )

        queries.append((_TENANT_ACTIVE_SQL, (tenant,), active))
    if (per_minute := limits.per_minute) is not None:

        def recent(row: Row) -> None:
            if int(row["n"]) >= per_minute:
                wait = max(1, math.ceil(float(row["oldest"]) + RATE_WINDOW_S - now))
                raise QuotaExceededError(
                    f"{tenant} asked for {row['n']} new tasks within {RATE_WINDOW_S:g} s, its limit"
                    f" (submissions_per_minute = {per_minute}); try again in {wait} s",
                    wait,
                )

        sql = f"SELECT COUNT(*) AS n, MIN(created_at) AS oldest {_TENANT_TASKS} AND created_at > {{mark}}"
        queries.append((sql, (tenant, now - RATE_WINDOW_S), recent))
    return queries


class Occupancy(NamedTuple):
    """What is running and how long the queue has waited, read in one query (for /metrics)."""

    running: dict[str, int]  # downloading or processing tasks by owning node (LOCAL_NODE: a single host)
    oldest_queued_at: float | None  # created_at of the task claimed next; None when none waits


class QueueFullError(Exception):
    """The queue already holds queue_limit waiting tasks."""


class StoreUnavailableError(Exception):
    """The database cannot be reached now (it is down, restarting, or unreachable); the same call may
    succeed later. The message says why, without the password."""


class StoreConnectError(Exception):
    """The database cannot be reached or refused us; the message names it without the password."""


class TaskStore(abc.ABC):
    # The parameter mark of the database driver.
    MARK = "?"

    def __init__(self, node: str | None) -> None:
        self.node = node
        self.owner = node or LOCAL_NODE  # what claim_next() records as the task's owner
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        """observer(tasks) after every change of tasks made through this store."""
        self._observers.append(observer)

    async def changed(self, task_ids: Iterable[str]) -> None:
        """Tell the observers that these tasks changed (also for changes made outside the store's methods)."""
        tasks = [task for task_id in task_ids if (task := await self.get(task_id)) is not None]
        await self._tell(tasks)

    async def _tell(self, tasks: list[TaskRecord]) -> None:
        if tasks:
            for observer in self._observers:
                await observer(tasks)
        # A playlist sums its items up whenever one changes, whichever host changed it; the write
        # that leaves no item active also settles the playlist's status (_sum_up_playlist).
        for parent_id in sorted({task["parent_id"] for task in tasks if task["parent_id"]}):
            if await self._sum_up_playlist(parent_id):
                await self.changed([parent_id])

    def _owned(self, column: str = "owner") -> tuple[str, tuple[str, ...]]:
        """The SQL condition (and its parameter) that scopes a write to this store's node."""
        return ("", ()) if self.node is None else (f" AND {column} = {self.MARK}", (self.node,))

    # Changes, each told to the observers.

    async def create(self, task: NewTask, queue_limit: int, limits: Limits | None = None) -> tuple[TaskRecord, bool]:
        """Insert a queued task, or return the active task with the same dedupe_key.

        Returns (task, created). Raises QueueFullError when queue_limit tasks already wait, and
        QuotaExceededError when a new task would pass one of the user's limits.
        """
        created, is_new = await self._create(task, queue_limit, limits or Limits(task["tenant"]))
        if is_new:
            await self._tell([created])
        return created, is_new

    async def claim_next(self) -> TaskRecord | None:
        """Move the oldest queued task to downloading, owned by this node (with its lease, when the
        store has one), count the attempt, and return it. No two callers get the same task."""
        task = await self._claim_next()
        if task is not None:
            await self._tell([task])
        return task

    async def update(self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...] = ACTIVE) -> bool:
        """Change fields of any host's task if its status is in only_if; False when not."""
        return await self._update_and_tell(task_id, fields, only_if, owned=False)

    async def update_owned(self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...] = ACTIVE) -> bool:
        """update(), only while this node owns the task."""
        return await self._update_and_tell(task_id, fields, only_if, owned=True)

    async def _update_and_tell(
        self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...], owned: bool
    ) -> bool:
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if fields.get("status") in FINISHED:
            fields = {**fields, "cookies": None}  # a task's cookies live no longer than the task
        changed = await self._update(task_id, fields, only_if, owned)
        if changed:
            await self.changed([task_id])
        return changed

    async def expand(self, parent_id: str, playlist: dict[str, Any], items: list[NewTask], queue_limit: int) -> bool:
        """Make this node's running task a playlist: its items queued as tasks of their own (with
        parent_id), the playlist no longer owned by any node (no worker runs it), in one step, so
        a crash leaves either the task to expand again or the whole playlist. False when the task
        is no longer this node's to expand. Raises QueueFullError(free room) when the items do not
        fit into queue_limit."""
        expanded = await self._expand(parent_id, playlist, items, queue_limit)
        if expanded:
            await self.changed([parent_id, *(item["id"] for item in items)])
        return expanded

    async def settle_playlists(self) -> None:
        """Sum up every playlist still running none of whose items is active: the service stopped, or
        the database went away, between its last item's final write and the sum-up that follows it."""
        sql = (
            "SELECT id FROM tasks WHERE status IN ('downloading', 'processing') AND playlist IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM tasks AS item WHERE item.parent_id = tasks.id"
            " AND item.status IN ('queued', 'downloading', 'processing'))"
        )
        for row in await self._rows(sql):
            if await self._sum_up_playlist(row["id"]):
                await self.changed([row["id"]])

    async def complete(self, task_id: str, files: list[NewFile]) -> bool:
        """Record the task's files and mark it completed in one step, if it is still running and
        this node owns it. The files belong to the task's owner node."""
        completed = await self._complete(task_id, files)
        if completed:
            await self.changed([task_id])
        return completed

    async def requeue_running(self, message: str, count_attempt: bool) -> list[str]:
        """Put this node's downloading/processing tasks back to queued; returns their ids."""
        task_ids = await self._requeue_running(message, count_attempt)
        await self.changed(task_ids)
        return task_ids

    @abc.abstractmethod
    async def _create(self, task: NewTask, queue_limit: int, limits: Limits) -> tuple[TaskRecord, bool]: ...

    @abc.abstractmethod
    async def _claim_next(self) -> TaskRecord | None: ...

    @abc.abstractmethod
    async def _update(self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...], owned: bool) -> bool: ...

    @abc.abstractmethod
    async def _complete(self, task_id: str, files: list[NewFile]) -> bool: ...

    @abc.abstractmethod
    async def _expand(
        self, parent_id: str, playlist: dict[str, Any], items: list[NewTask], queue_limit: int
    ) -> bool: ...

    @abc.abstractmethod
    async def _sum_up_playlist(self, parent_id: str) -> bool:
        """Write playlist_fields() of the playlist from its items, read and written under a lock
        of the playlist, so the last of concurrent writers sums up every item's latest state."""

    @abc.abstractmethod
    async def _requeue_running(self, message: str, count_attempt: bool) -> list[str]: ...

    # Reads, and writes no client sees as a task change.

    @abc.abstractmethod
    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of a query, as dicts (JSON columns decoded)."""

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await self._rows(f"SELECT * FROM tasks WHERE id = {self.MARK}", (task_id,))
        return rows[0] if rows else None  # type: ignore[return-value]

    async def get_many(self, task_ids: list[str]) -> list[TaskRecord]:
        """The tasks of these ids that exist, in no particular order."""
        marks = ", ".join([self.MARK] * len(task_ids))
        return await self._rows(f"SELECT * FROM tasks WHERE id IN ({marks})", tuple(task_ids))  # type: ignore[return-value]

    async def page(
        self,
        status: str | None,
        limit: int,
        offset: int,
        before: int | None = None,
        parent_id: str | None = None,
        tenant: str | None = None,
        columns: str = "*",
    ) -> list[TaskRecord]:
        """Tasks that are no playlist's items (with tenant: that user's), newest first; with before,
        only tasks older than the task whose seq it is. With parent_id: that playlist's items, in the
        playlist's order. columns: the columns to read (SQL), all by default."""
        mark = self.MARK
        conditions = [f"seq < {mark}"]
        params: list[int | str] = [_NO_CURSOR if before is None else before]
        if tenant is not None:
            conditions.append(f"tenant = {mark}")
            params.append(tenant)
        if parent_id is None:
            conditions.append("parent_id IS NULL")
        else:
            conditions.append(f"parent_id = {mark}")
            params.append(parent_id)
        if status is not None:
            conditions.append(f"status = {mark}")
            params.append(status)
        order = "DESC" if parent_id is None else "ASC"
        where = " AND ".join(conditions)
        sql = f"SELECT {columns} FROM tasks WHERE {where} ORDER BY seq {order} LIMIT {mark} OFFSET {mark}"
        return await self._rows(sql, (*params, limit, offset))  # type: ignore[return-value]

    async def counts(self, top_level: bool = False) -> dict[str, int]:
        """Number of tasks in each status; with top_level, playlists' items are not counted."""
        counted = await self.counters()
        items = ITEM_COUNT_PREFIX if top_level else None
        return {
            status: counted.get(status, 0) - (counted.get(f"{items}{status}", 0) if items else 0) for status in STATUSES
        }

    async def counts_of(self, tenant: str) -> dict[str, int]:
        """A user's tasks by status, its playlists' items not counted."""
        rows = await self._rows(TENANT_COUNTS_SQL.format(mark=self.MARK), (tenant,))
        return dict.fromkeys(STATUSES, 0) | {row["status"]: int(row["n"]) for row in rows}

    async def tenant_usage(self, tenant: str) -> tuple[int, int]:
        """A user's (tasks queued or running, bytes of its files on every host)."""
        mark = self.MARK
        sql = (
            f"SELECT ({_TENANT_ACTIVE_SQL.format(mark=mark)}) AS active, (SELECT COALESCE(SUM(files.size), 0)"
            f" FROM files JOIN tasks ON tasks.id = files.task_id WHERE tasks.tenant = {mark}"
            " AND files.removed_at IS NULL) AS used"
        )
        row = (await self._rows(sql, (tenant, tenant)))[0]
        return int(row["active"]), int(row["used"])

    async def bytes_by_tenant(self) -> dict[str, int]:
        """Bytes of every user's files not yet removed, on every host."""
        sql = (
            "SELECT tasks.tenant, SUM(files.size) AS used FROM files JOIN tasks ON tasks.id = files.task_id"
            " WHERE files.removed_at IS NULL GROUP BY tasks.tenant"
        )
        return {row["tenant"]: int(row["used"]) for row in await self._rows(sql)}

    @abc.abstractmethod
    async def counters(self) -> dict[str, int]:
        """The counters the database keeps: tasks by status, and playlists' items by ITEM_COUNT_PREFIX + status."""

    async def occupancy(self) -> Occupancy:
        """Every node's running tasks, and when the head of the queue was created. One round trip: the
        head (an index read on (status, seq)) with the running tasks by owner joined to it, so the one
        row of a queue without running tasks still carries it."""
        owner = f"COALESCE(owner, '{LOCAL_NODE}')"
        sql = (
            "SELECT head.created_at AS oldest_queued_at, running.node, running.n"
            " FROM (SELECT (SELECT created_at FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1) AS created_at)"
            f" AS head LEFT JOIN (SELECT {owner} AS node, COUNT(*) AS n FROM tasks"
            f" WHERE status IN ('downloading', 'processing') AND playlist IS NULL GROUP BY {owner}) AS running ON 1 = 1"
        )
        rows = await self._rows(sql)
        running = {row["node"]: int(row["n"]) for row in rows if row["n"] is not None}
        return Occupancy(running, rows[0]["oldest_queued_at"])

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._rows(f"{_FILES} WHERE files.id = {self.MARK}", (file_id,))
        return rows[0] if rows else None  # type: ignore[return-value]

    async def reusable(self, media_key: str, tenant: str) -> list[TaskRecord]:
        """The user's completed tasks of this video (newest first) none of whose files has been removed."""
        mark = self.MARK
        sql = (
            f"SELECT * FROM tasks WHERE media_key = {mark} AND status = 'completed' AND tenant = {mark} AND NOT EXISTS"
            " (SELECT 1 FROM files WHERE files.task_id = tasks.id AND files.removed_at IS NOT NULL)"
            " ORDER BY seq DESC LIMIT 20"
        )
        return await self._rows(sql, (media_key, tenant))  # type: ignore[return-value]

    async def items_of(self, parent_id: str) -> list[TaskRecord]:
        """Every item of a playlist, in its order."""
        sql = f"SELECT * FROM tasks WHERE parent_id = {self.MARK} ORDER BY seq"
        return await self._rows(sql, (parent_id,))  # type: ignore[return-value]

    async def task_files(self, task_id: str) -> list[FileRecord]:
        return await self._rows(f"{_FILES} WHERE files.task_id = {self.MARK}", (task_id,))  # type: ignore[return-value]

    async def live_files(self) -> list[FileRecord]:
        """This node's files not yet removed, oldest first."""
        owned, owner = self._owned("files.node")
        sql = f"{_FILES} WHERE files.removed_at IS NULL{owned} ORDER BY files.created_at, files.id"
        return await self._rows(sql, owner)  # type: ignore[return-value]

    async def live_bytes(self, every_node: bool = False) -> tuple[int, int]:
        """(number, total size) of this node's files not yet removed; of every node's with every_node."""
        owned, owner = ("", ()) if every_node else self._owned("node")
        sql = f"SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS size FROM files WHERE removed_at IS NULL{owned}"
        row = (await self._rows(sql, owner))[0]
        return int(row["n"]), int(row["size"])

    @abc.abstractmethod
    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the store does not answer."""

    @abc.abstractmethod
    async def close(self) -> None: ...
