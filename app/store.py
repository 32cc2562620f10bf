"""Task store: the only module that knows how tasks and files are persisted.

Handlers and the manager use the TaskStore interface; SQLiteTaskStore implements it for one
host. A shared database for several hosts would be another TaskStore implementation.
"""

import abc
import json
import sqlite3
import time
from pathlib import Path

ACTIVE = ("queued", "downloading", "processing")
RUNNING = ("downloading", "processing")
FINISHED = ("completed", "failed", "cancelled")
STATUSES = ACTIVE + FINISHED

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


class QueueFullError(Exception):
    """The queue already holds queue_limit waiting tasks."""


class TaskStore(abc.ABC):
    """What the service needs from task persistence. Every method commits before returning."""

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

    @abc.abstractmethod
    async def claim_next(self) -> dict | None:
        """Move the oldest queued task to downloading, count the attempt, and return it."""

    @abc.abstractmethod
    async def update(self, task_id: str, fields: dict, only_if: tuple = ACTIVE) -> bool:
        """Change fields if the task's status is in only_if; False when it is not."""

    @abc.abstractmethod
    async def complete(self, task_id: str, files: list[dict]) -> bool:
        """Record the task's files and mark it completed in one step, if it is still running."""

    @abc.abstractmethod
    async def requeue_running(self, message: str, count_attempt: bool) -> list[str]:
        """Put downloading/processing tasks back to queued; returns their ids."""

    @abc.abstractmethod
    async def get_file(self, file_id: str) -> dict | None: ...

    @abc.abstractmethod
    async def task_files(self, task_id: str) -> list[dict]: ...

    @abc.abstractmethod
    async def live_files(self) -> list[dict]:
        """Files not yet removed, oldest first."""

    @abc.abstractmethod
    async def live_bytes(self) -> tuple[int, int]:
        """(number, total size) of files not yet removed."""

    @abc.abstractmethod
    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the store does not answer."""

    @abc.abstractmethod
    async def close(self) -> None: ...


_SCHEMA = """
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
"""

_JSON_COLUMNS = ("options", "video_info")


def _task_row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    task = dict(row)
    for column in _JSON_COLUMNS:
        if task[column] is not None:
            task[column] = json.loads(task[column])
    return task


class SQLiteTaskStore(TaskStore):
    """SQLite in WAL mode. Queries are indexed point reads and short writes (well under a
    millisecond), so they run on the event loop instead of paying a thread hand-off each."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed state change survives power loss, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

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

    async def claim_next(self) -> dict | None:
        now = time.time()
        # No UPDATE ... RETURNING: SQLite < 3.35 (Debian 11, Ubuntu 20.04, EL 8/9) lacks it. Both
        # statements run in one immediate transaction, so they see the same next task.
        next_queued = "(SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1)"
        (_, rows), _ = self._write(
            (f"SELECT id FROM tasks WHERE seq = {next_queued}", ()),
            (
                "UPDATE tasks SET status = 'downloading', attempts = attempts + 1, started_at = ?, updated_at = ?"
                f" WHERE seq = {next_queued}",
                (now, now),
            ),
        )
        return await self.get(rows[0][0]) if rows else None

    async def update(self, task_id: str, fields: dict, only_if: tuple = ACTIVE) -> bool:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        marks = ", ".join("?" for _ in only_if)
        ((rowcount, _),) = self._write(
            (
                f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ? AND status IN ({marks})",
                (*values.values(), time.time(), task_id, *only_if),
            )
        )
        return rowcount == 1

    async def complete(self, task_id: str, files: list[dict]) -> bool:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            file_ids = {}
            for file in files:
                self._db.execute(
                    "INSERT INTO files (id, task_id, kind, path, name, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (file["id"], task_id, file["kind"], file["path"], file["name"], file["size"], now),
                )
                file_ids[file["kind"]] = file["id"]
            cursor = self._db.execute(
                "UPDATE tasks SET status = 'completed', progress = 100, message = 'completed', error = NULL,"
                " video_file_id = ?, audio_file_id = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('downloading', 'processing')",
                (file_ids.get("video"), file_ids.get("audio"), now, now, task_id),
            )
            if cursor.rowcount != 1:
                self._db.execute("ROLLBACK")
                return False
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    async def requeue_running(self, message: str, count_attempt: bool) -> list[str]:
        attempts = "attempts" if count_attempt else "MAX(attempts - 1, 0)"
        running = "status IN ('downloading', 'processing')"
        (_, rows), _ = self._write(
            (f"SELECT id FROM tasks WHERE {running}", ()),
            (
                f"UPDATE tasks SET status = 'queued', attempts = {attempts}, message = ?, speed = NULL, eta = NULL,"
                f" updated_at = ? WHERE {running}",
                (message, time.time()),
            ),
        )
        return [row[0] for row in rows]

    async def get_file(self, file_id: str) -> dict | None:
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else dict(row)

    async def task_files(self, task_id: str) -> list[dict]:
        return [dict(row) for row in self._db.execute("SELECT * FROM files WHERE task_id = ?", (task_id,))]

    async def live_files(self) -> list[dict]:
        rows = self._db.execute("SELECT * FROM files WHERE removed_at IS NULL ORDER BY created_at, id")
        return [dict(row) for row in rows]

    async def live_bytes(self) -> tuple[int, int]:
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE removed_at IS NULL"
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

    async def ping(self) -> None:
        self._db.execute("SELECT 1 FROM status_counts LIMIT 1").fetchone()

    async def close(self) -> None:
        self._db.close()
