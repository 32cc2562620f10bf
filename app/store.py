"""Task store: the only module that knows how tasks and files are persisted.

Handlers and the manager use the TaskStore interface. SQLiteTaskStore implements it for one host;
PostgresTaskStore (app/store_pg.py) for several hosts sharing one database. Both keep the same
contract, checked by one test suite (app/tests/test_store_contract.py).

Several hosts: a running task has an owner node and a lease (lease_until, epoch seconds by the
hosts' clocks, which must agree to well within a lease) that its owner renews. A host that
restarts requeues only its own running tasks; any host requeues tasks whose lease expired.
"""

import abc
import json
import sqlite3
import time
from pathlib import Path

from app.records import ACTIVE, Status

STATUSES = tuple(Status)
# The owner of tasks claimed without a node: a single host, whose leases never expire.
LOCAL_NODE = "local"

# Columns a caller may change with update(); everything else changes through dedicated methods.
_UPDATABLE = frozenset(
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
    }
)


# The fields of a progress tick: an update of only these is no state change.
PROGRESS_FIELDS = frozenset({"progress", "downloaded_bytes", "total_bytes", "speed", "eta", "message"})


class QueueFullError(Exception):
    """The queue already holds queue_limit waiting tasks."""


class StoreConnectError(Exception):
    """The database cannot be reached or refused us; the message names it without the password."""


def changes_tasks(method):
    """Marks an interface method that changes tasks as clients see them: the publishing store
    (app/events.py) must publish every task it changed, and a test holds it to that."""
    method.changes_tasks = True
    return method


class TaskStore(abc.ABC):
    """What the service needs from task persistence. Every method commits before returning.

    Methods that take node=None apply to every host's tasks; with a node, only to that node's.
    """

    shared = False  # several hosts use the same store

    @changes_tasks
    @abc.abstractmethod
    async def create(self, task: dict, queue_limit: int) -> tuple[dict, bool]:
        """Insert a queued task, or return the active task with the same dedupe_key.

        Returns (task, created). Raises QueueFullError when queue_limit tasks already wait.
        """

    @abc.abstractmethod
    async def get(self, task_id: str) -> dict | None: ...

    @abc.abstractmethod
    async def page(self, status: str | None, limit: int, offset: int, before: int | None = None) -> list[dict]:
        """Newest first; with before, only tasks older than the task whose seq it is."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Number of tasks in each status."""

    @changes_tasks
    @abc.abstractmethod
    async def claim_next(self, node: str = LOCAL_NODE, lease_s: float | None = None) -> dict | None:
        """Move the oldest queued task to downloading, owned by node with a lease of lease_s
        (None: no expiry), count the attempt, and return it. No two callers get the same task."""

    @abc.abstractmethod
    async def renew_leases(self, node: str, lease_s: float, task_ids: list[str]) -> list[str]:
        """Extend the leases of task_ids that node still owns and runs; returns the others: their
        workers must stop (cancelled or finished by another host, or requeued after the lease
        expired and maybe claimed elsewhere)."""

    @changes_tasks
    @abc.abstractmethod
    async def update(self, task_id: str, fields: dict, only_if: tuple = ACTIVE, node: str | None = None) -> bool:
        """Change fields if the task's status is in only_if (and node owns it); False when not."""

    @changes_tasks
    @abc.abstractmethod
    async def complete(self, task_id: str, files: list[dict], node: str | None = None) -> bool:
        """Record the task's files and mark it completed in one step, if it is still running (and
        node owns it). The files belong to the task's owner node."""

    @changes_tasks
    @abc.abstractmethod
    async def requeue_running(self, message: str, count_attempt: bool, node: str | None = None) -> list[str]:
        """Put downloading/processing tasks (of node) back to queued; returns their ids."""

    @changes_tasks
    @abc.abstractmethod
    async def requeue_expired(self, now: float | None = None) -> list[str]:
        """Put running tasks whose lease ended before now back to queued, the attempt counted;
        returns their ids. Each is requeued once, however many hosts call this at once."""

    @abc.abstractmethod
    async def heartbeat(self, node: str, url: str) -> None:
        """Record that node is alive and reachable at url."""

    @abc.abstractmethod
    async def nodes_alive(self, since: float) -> list[dict]:
        """{node, url, last_seen} of the nodes seen since then, by node."""

    @abc.abstractmethod
    async def get_file(self, file_id: str) -> dict | None: ...

    @abc.abstractmethod
    async def task_files(self, task_id: str) -> list[dict]: ...

    @abc.abstractmethod
    async def live_files(self, node: str | None = None) -> list[dict]:
        """Files not yet removed, oldest first."""

    @abc.abstractmethod
    async def live_bytes(self, node: str | None = None) -> tuple[int, int]:
        """(number, total size) of files not yet removed."""

    @abc.abstractmethod
    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None: ...

    @abc.abstractmethod
    async def announce(self, node: str, task_ids: list[str]) -> None:
        """Tell the other hosts that node changed these tasks (nothing to tell on one host)."""

    @abc.abstractmethod
    async def listen(self, node: str, on_change) -> None:
        """Until cancelled, await on_change(task_id) for each task another host announced, and
        on_change(None) after (re)connecting, when announcements may have been missed."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the store does not answer."""

    @abc.abstractmethod
    async def close(self) -> None: ...


# Ordered schema migrations, applied once each and recorded in schema_version. Each one must work
# with the previous release's code, which may still run against the same database.
_SQLITE_MIGRATIONS = (
    # 1: the schema before schema_version existed (IF NOT EXISTS: such a database already has it).
    """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    options TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    downloaded_bytes INTEGER,
    total_bytes INTEGER,
    speed REAL,
    eta REAL,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    video_info TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    video_file_id TEXT,
    audio_file_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_status_seq ON tasks (status, seq);
-- At most one active task per URL+options: a concurrent duplicate POST cannot slip in.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_active_dedupe ON tasks (dedupe_key)
    WHERE status IN ('queued', 'downloading', 'processing');

-- Counts by status kept by triggers, so GET /api/tasks never scans the table.
CREATE TABLE IF NOT EXISTS status_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO status_counts (status, n) VALUES
    ('queued', 0), ('downloading', 0), ('processing', 0),
    ('completed', 0), ('failed', 0), ('cancelled', 0);
CREATE TRIGGER IF NOT EXISTS tasks_count_insert AFTER INSERT ON tasks BEGIN
    UPDATE status_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER IF NOT EXISTS tasks_count_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status <> NEW.status BEGIN
    UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE status_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER IF NOT EXISTS tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
END;

CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    removed_at REAL,
    removed_reason TEXT
);
CREATE INDEX IF NOT EXISTS files_task ON files (task_id);
CREATE INDEX IF NOT EXISTS files_live ON files (created_at) WHERE removed_at IS NULL;
""",
    # 2: owners and leases of running tasks, the node holding each file, and live nodes.
    """
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_until REAL;
CREATE INDEX tasks_running_lease ON tasks (lease_until) WHERE status IN ('downloading', 'processing');
ALTER TABLE files ADD COLUMN node TEXT;
CREATE INDEX files_node_live ON files (node, created_at) WHERE removed_at IS NULL;
CREATE TABLE nodes (node TEXT PRIMARY KEY, url TEXT NOT NULL, last_seen REAL NOT NULL);
""",
)

_JSON_COLUMNS = ("options", "video_info")
# SQL (the same in both stores) for the message of a task requeued after its owner's lease expired.
_EXPIRED_MESSAGE = "'requeued: host ' || owner || ' stopped renewing its lease'"


def _task_row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    task = dict(row)
    for column in _JSON_COLUMNS:
        if task[column] is not None:
            task[column] = json.loads(task[column])
    return task


def _statements(script: str):
    """The statements of a script, whole (a trigger's body holds semicolons of its own)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


WAL_SWITCH_TRIES = 50


def _marks(values) -> str:
    return ", ".join("?" for _ in values)


class SQLiteTaskStore(TaskStore):
    """SQLite in WAL mode. Queries are indexed point reads and short writes (well under a
    millisecond), so they run on the event loop instead of paying a thread hand-off each."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")
        self._to_wal()
        # FULL: a committed state change survives power loss, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _to_wal(self) -> None:
        # Another process opening a new file at the same moment can make the switch to WAL answer
        # "database is locked" at once, without waiting through busy_timeout: wait here instead.
        for _ in range(WAL_SWITCH_TRIES - 1):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.1)
        self._db.execute("PRAGMA journal_mode=WAL")

    def _migrate(self) -> None:
        # The immediate transaction is the lock: a second process opening the file waits for it.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in self._db.execute("SELECT version FROM schema_version")}
            for version, script in enumerate(_SQLITE_MIGRATIONS, 1):
                if version not in applied:
                    for statement in _statements(script):
                        self._db.execute(statement)
                    self._db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write(self, *statements: tuple[str, tuple]) -> list[tuple[int, list]]:
        """Run statements in one immediate transaction; returns (rowcount, returned rows) of each."""
        results = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                cursor = self._db.execute(sql, params)
                rows = cursor.fetchall()  # a SELECT's rows must be read before COMMIT
                results.append((cursor.rowcount, rows))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return results

    def _select_then_update(self, where: str, params: tuple, assignments: str, values: tuple) -> list[str]:
        """Ids of the tasks matching where, updated in the same transaction (no RETURNING: see claim_next)."""
        (_, rows), _ = self._write(
            (f"SELECT id FROM tasks WHERE {where}", params),
            (f"UPDATE tasks SET {assignments} WHERE {where}", (*values, *params)),
        )
        return [row[0] for row in rows]

    async def create(self, task: dict, queue_limit: int) -> tuple[dict, bool]:
        now = time.time()
        row = {**task, "options": json.dumps(task["options"], sort_keys=True)}
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = self._db.execute(
                "SELECT * FROM tasks WHERE dedupe_key = ? AND status IN (?, ?, ?)",
                (row["dedupe_key"], *ACTIVE),
            ).fetchone()
            if existing is not None:
                self._db.execute("COMMIT")
                return _task_row(existing), False
            queued = self._db.execute("SELECT n FROM status_counts WHERE status = 'queued'").fetchone()[0]
            if queued >= queue_limit:
                raise QueueFullError(queued)
            self._db.execute(
                "INSERT INTO tasks (id, url, options, dedupe_key, status, message, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (row["id"], row["url"], row["options"], row["dedupe_key"], row.get("message", ""), now, now),
            )
            created = self._db.execute("SELECT * FROM tasks WHERE id = ?", (row["id"],)).fetchone()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return _task_row(created), True

    async def get(self, task_id: str) -> dict | None:
        return _task_row(self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone())

    async def page(self, status: str | None, limit: int, offset: int, before: int | None = None) -> list[dict]:
        conditions, params = ["seq < ?"], [before if before is not None else 2**63 - 1]
        if status is not None:
            conditions.append("status = ?")
            params.append(status)
        rows = self._db.execute(
            f"SELECT * FROM tasks WHERE {' AND '.join(conditions)} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_task_row(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        return {status: n for status, n in self._db.execute("SELECT status, n FROM status_counts")}

    async def claim_next(self, node: str = LOCAL_NODE, lease_s: float | None = None) -> dict | None:
        now = time.time()
        lease_until = None if lease_s is None else now + lease_s
        # No UPDATE ... RETURNING: SQLite < 3.35 (Debian 11, Ubuntu 20.04, EL 8/9) lacks it. Both
        # statements run in one immediate transaction, so they see the same next task.
        next_queued = "seq = (SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1)"
        claimed = self._select_then_update(
            next_queued,
            (),
            "status = 'downloading', owner = ?, lease_until = ?, attempts = attempts + 1, started_at = ?,"
            " updated_at = ?",
            (node, lease_until, now, now),
        )
        return await self.get(claimed[0]) if claimed else None

    async def renew_leases(self, node: str, lease_s: float, task_ids: list[str]) -> list[str]:
        if not task_ids:
            return []
        held = self._select_then_update(
            f"id IN ({_marks(task_ids)}) AND owner = ? AND status IN ('downloading', 'processing')",
            (*task_ids, node),
            "lease_until = ?",
            (time.time() + lease_s,),
        )
        return [task_id for task_id in task_ids if task_id not in held]

    async def update(self, task_id: str, fields: dict, only_if: tuple = ACTIVE, node: str | None = None) -> bool:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        owned, owner = ("", ()) if node is None else (" AND owner = ?", (node,))
        statement = (
            f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ? AND status IN ({_marks(only_if)}){owned}",
            (*values.values(), time.time(), task_id, *only_if, *owner),
        )
        if fields.keys() <= PROGRESS_FIELDS:
            # Progress, several times a second per download, need not survive a power cut (a lost tick
            # is replaced by the next); WAL stays consistent without the fsync. Status changes keep it.
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                ((rowcount, _),) = self._write(statement)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
        else:
            ((rowcount, _),) = self._write(statement)
        return rowcount == 1

    async def complete(self, task_id: str, files: list[dict], node: str | None = None) -> bool:
        now = time.time()
        owned, owner = ("", ()) if node is None else (" AND owner = ?", (node,))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            file_ids = {}
            for file in files:
                self._db.execute(
                    "INSERT INTO files (id, task_id, kind, path, name, size, created_at, node)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT owner FROM tasks WHERE id = ?))",
                    (file["id"], task_id, file["kind"], file["path"], file["name"], file["size"], now, task_id),
                )
                file_ids[file["kind"]] = file["id"]
            cursor = self._db.execute(
                "UPDATE tasks SET status = 'completed', progress = 100, message = 'completed', error = NULL,"
                " video_file_id = ?, audio_file_id = ?, finished_at = ?, updated_at = ?"
                f" WHERE id = ? AND status IN ('downloading', 'processing'){owned}",
                (file_ids.get("video"), file_ids.get("audio"), now, now, task_id, *owner),
            )
            if cursor.rowcount != 1:
                self._db.execute("ROLLBACK")
                return False
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    async def requeue_running(self, message: str, count_attempt: bool, node: str | None = None) -> list[str]:
        attempts = "attempts" if count_attempt else "MAX(attempts - 1, 0)"
        owned, owner = ("", ()) if node is None else (" AND owner = ?", (node,))
        return self._select_then_update(
            f"status IN ('downloading', 'processing'){owned}",
            owner,
            f"status = 'queued', attempts = {attempts}, lease_until = NULL, message = ?, speed = NULL, eta = NULL,"
            " updated_at = ?",
            (message, time.time()),
        )

    async def requeue_expired(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        return self._select_then_update(
            "status IN ('downloading', 'processing') AND lease_until < ?",
            (now,),
            f"status = 'queued', lease_until = NULL, message = {_EXPIRED_MESSAGE}, speed = NULL, eta = NULL,"
            " updated_at = ?",
            (time.time(),),
        )

    async def heartbeat(self, node: str, url: str) -> None:
        self._write(
            (
                "INSERT INTO nodes (node, url, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (node) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen",
                (node, url, time.time()),
            )
        )

    async def nodes_alive(self, since: float) -> list[dict]:
        rows = self._db.execute("SELECT node, url, last_seen FROM nodes WHERE last_seen >= ? ORDER BY node", (since,))
        return [dict(row) for row in rows]

    async def get_file(self, file_id: str) -> dict | None:
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else dict(row)

    async def task_files(self, task_id: str) -> list[dict]:
        return [dict(row) for row in self._db.execute("SELECT * FROM files WHERE task_id = ?", (task_id,))]

    async def live_files(self, node: str | None = None) -> list[dict]:
        owned, owner = ("", ()) if node is None else (" AND node = ?", (node,))
        rows = self._db.execute(f"SELECT * FROM files WHERE removed_at IS NULL{owned} ORDER BY created_at, id", owner)
        return [dict(row) for row in rows]

    async def live_bytes(self, node: str | None = None) -> tuple[int, int]:
        owned, owner = ("", ()) if node is None else (" AND node = ?", (node,))
        count, size = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE removed_at IS NULL{owned}", owner
        ).fetchone()
        return count, size

    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None:
        now = time.time()
        self._write(
            *(
                (
                    "UPDATE files SET removed_at = ?, removed_reason = ? WHERE id = ? AND removed_at IS NULL",
                    (now, reason, fid),
                )
                for fid in file_ids
            )
        )

    async def announce(self, node: str, task_ids: list[str]) -> None:
        pass  # one host: nobody else to tell

    async def listen(self, node: str, on_change) -> None:
        pass  # one host: nobody else announces

    async def ping(self) -> None:
        self._db.execute("SELECT 1 FROM status_counts LIMIT 1").fetchone()

    async def close(self) -> None:
        self._db.close()
