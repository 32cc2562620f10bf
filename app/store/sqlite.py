"""SQLiteTaskStore: the task store of a single host, in one SQLite file (WAL mode).

The interface and what every store promises are in app/store/base.py; one test suite checks both
stores against it (tests/store/test_store_contract.py).
"""

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from app.store.base import (
    COMPLETED_SQL,
    ITEMS_BY_STATUS_SQL,
    JSON_COLUMNS,
    PROGRESS_FIELDS,
    USERS_MIGRATION,
    Limits,
    QueueFullError,
    StoreConnectError,
    TaskStore,
    completed_files,
    playlist_fields,
    quota_queries,
)
from app.store.records import ACTIVE, RUNNING, NewFile, NewTask, TaskRecord

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
    # 3: every file of a task listed on it (subtitles and thumbnails too), sealed cookies, and the
    # video a completed task holds (reuse). Tasks completed before list their video and audio.
    """
ALTER TABLE tasks ADD COLUMN files TEXT;
ALTER TABLE tasks ADD COLUMN cookies BLOB;
ALTER TABLE tasks ADD COLUMN media_key TEXT;
CREATE INDEX tasks_media_key ON tasks (media_key) WHERE status = 'completed';
ALTER TABLE files ADD COLUMN language TEXT;
UPDATE tasks SET files = (
    SELECT json_group_array(json_object('id', id, 'kind', kind, 'language', NULL, 'name', name, 'size', size))
    FROM files WHERE files.task_id = tasks.id
) WHERE status = 'completed';
""",
    # 4: playlists: a playlist's items are tasks with its id as parent_id; the playlist sums them up.
    # The items are counted apart too ('item:<status>'), so the list can count top-level tasks.
    """
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
ALTER TABLE tasks ADD COLUMN playlist TEXT;
CREATE INDEX tasks_parent ON tasks (parent_id, seq) WHERE parent_id IS NOT NULL;
INSERT INTO status_counts (status, n) VALUES
    ('item:queued', 0), ('item:downloading', 0), ('item:processing', 0),
    ('item:completed', 0), ('item:failed', 0), ('item:cancelled', 0);
CREATE TRIGGER tasks_item_count_insert AFTER INSERT ON tasks WHEN NEW.parent_id IS NOT NULL BEGIN
    UPDATE status_counts SET n = n + 1 WHERE status = 'item:' || NEW.status;
END;
CREATE TRIGGER tasks_item_count_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status <> NEW.status AND NEW.parent_id IS NOT NULL BEGIN
    UPDATE status_counts SET n = n - 1 WHERE status = 'item:' || OLD.status;
    UPDATE status_counts SET n = n + 1 WHERE status = 'item:' || NEW.status;
END;
CREATE TRIGGER tasks_item_count_delete AFTER DELETE ON tasks WHEN OLD.parent_id IS NOT NULL BEGIN
    UPDATE status_counts SET n = n - 1 WHERE status = 'item:' || OLD.status;
END;
""",
    # 5: users (the same SQL in both stores), and their tasks counted by status.
    USERS_MIGRATION
    + """
CREATE TABLE tenant_counts (tenant TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (tenant, status));
INSERT INTO tenant_counts (tenant, status, n)
    SELECT tenant, status, COUNT(*) FROM tasks WHERE parent_id IS NULL GROUP BY tenant, status;
CREATE TRIGGER tasks_tenant_count_insert AFTER INSERT ON tasks WHEN NEW.parent_id IS NULL BEGIN
    INSERT INTO tenant_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1)
        ON CONFLICT (tenant, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_tenant_count_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status <> NEW.status AND NEW.parent_id IS NULL BEGIN
    UPDATE tenant_counts SET n = n - 1 WHERE tenant = OLD.tenant AND status = OLD.status;
    INSERT INTO tenant_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1)
        ON CONFLICT (tenant, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_tenant_count_delete AFTER DELETE ON tasks WHEN OLD.parent_id IS NULL BEGIN
    UPDATE tenant_counts SET n = n - 1 WHERE tenant = OLD.tenant AND status = OLD.status;
END;
""",
)


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for column in JSON_COLUMNS:
        if record.get(column) is not None:
            record[column] = json.loads(record[column])
    return record


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, whole (a trigger's body holds semicolons of its own)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


WAL_SWITCH_TRIES = 50


def own_like_folder(fd: int, folder: Path) -> None:
    """Give what root creates (a restore or backup run by hand) to the folder's owner, the
    service user, who could not open it otherwise."""
    if os.geteuid() == 0:
        info = folder.stat()
        os.fchown(fd, info.st_uid, info.st_gid)


def lock_file(db_path: Path, exclusive: bool) -> int | None:
    """Lock db/tasks.lock; the open descriptor (closing it unlocks), or None when another process
    holds it the other way. Every store holds it shared for as long as it is open, so a restore,
    which needs it exclusive, knows reliably that no service is using the file (the kernel drops
    the lock of a process that dies, however it dies)."""
    fd = os.open(db_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    own_like_folder(fd, db_path.parent)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _marks(values: Collection[object]) -> str:
    return ", ".join("?" for _ in values)


class SQLiteTaskStore(TaskStore):
    """SQLite in WAL mode. Queries are indexed point reads and short writes (well under a
    millisecond), so they run on the event loop instead of paying a thread hand-off each."""

    def __init__(self, path: Path, node: str | None = None) -> None:
        super().__init__(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_file(path, exclusive=False)
        if lock is None:
            raise StoreConnectError(f"{path} is being restored (`python -m app restore` holds its lock)")
        self._lock = lock
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

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> list[tuple[int, list[Any]]]:
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

    def _select_then_update(
        self, where: str, params: tuple[Any, ...], assignments: str, values: tuple[Any, ...]
    ) -> list[str]:
        """Ids of the tasks matching where, updated in the same transaction (no RETURNING: see claim_next)."""
        (_, rows), _ = self._write(
            (f"SELECT id FROM tasks WHERE {where}", params),
            (f"UPDATE tasks SET {assignments} WHERE {where}", (*values, *params)),
        )
        return [row[0] for row in rows]

    async def _create(self, task: NewTask, queue_limit: int, limits: Limits) -> tuple[TaskRecord, bool]:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = self._db.execute(
                "SELECT * FROM tasks WHERE dedupe_key = ? AND status IN (?, ?, ?)",
                (task["dedupe_key"], *ACTIVE),
            ).fetchone()
            if existing is not None:
                self._db.execute("COMMIT")
                return _decoded(existing), False  # type: ignore[return-value]
            for sql, params, check in quota_queries(limits, now):
                check(dict(self._db.execute(sql.format(mark="?"), params).fetchone()))
            queued = self._db.execute("SELECT n FROM status_counts WHERE status = 'queued'").fetchone()[0]
            if queued >= queue_limit:
                raise QueueFullError(queued)
            self._insert(task, None, now)
            created = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task["id"],)).fetchone()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return _decoded(created), True  # type: ignore[return-value]

    def _insert(self, task: NewTask, parent_id: str | None, now: float) -> None:
        self._db.execute(
            "INSERT INTO tasks (id, url, options, dedupe_key, status, message, cookies, video_info, parent_id,"
            " tenant, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (
                task["id"],
                task["url"],
                json.dumps(task["options"], sort_keys=True),
                task["dedupe_key"],
                task.get("message", ""),
                task.get("cookies"),
                None if task.get("video_info") is None else json.dumps(task.get("video_info")),
                parent_id,
                task["tenant"],
                now,
                now,
            ),
        )

    async def _expand(self, parent_id: str, playlist: dict[str, Any], items: list[NewTask], queue_limit: int) -> bool:
        now = time.time()
        owned, owner = self._owned()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            mine = self._db.execute(
                f"SELECT 1 FROM tasks WHERE id = ? AND status IN (?, ?) AND playlist IS NULL{owned}",
                (parent_id, *RUNNING, *owner),
            ).fetchone()
            if mine is None:
                self._db.execute("ROLLBACK")
                return False
            queued = self._db.execute("SELECT n FROM status_counts WHERE status = 'queued'").fetchone()[0]
            if queued + len(items) > queue_limit:
                raise QueueFullError(max(0, queue_limit - queued))
            for item in items:
                self._insert(item, parent_id, now)
            self._db.execute(
                "UPDATE tasks SET playlist = ?, message = ?, owner = NULL, lease_until = NULL, cookies = NULL,"
                " updated_at = ? WHERE id = ?",
                (json.dumps(playlist), f"{len(items)} items queued", now, parent_id),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    async def _sum_up_playlist(self, parent_id: str) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            parent = self._db.execute(
                "SELECT * FROM tasks WHERE id = ? AND playlist IS NOT NULL", (parent_id,)
            ).fetchone()
            if parent is None:
                self._db.execute("ROLLBACK")
                return False
            items = [dict(row) for row in self._db.execute(ITEMS_BY_STATUS_SQL.format(mark="?"), (parent_id,))]
            fields = playlist_fields(_decoded(parent), items, time.time())  # type: ignore[arg-type]
            values = {k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()}
            self._db.execute(
                f"UPDATE tasks SET {', '.join(f'{column} = ?' for column in values)}, updated_at = ? WHERE id = ?",
                (*values.values(), time.time(), parent_id),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [_decoded(row) for row in self._db.execute(sql, params)]

    async def counters(self) -> dict[str, int]:
        return {status: n for status, n in self._db.execute("SELECT status, n FROM status_counts")}

    async def _claim_next(self) -> TaskRecord | None:
        now = time.time()
        # No UPDATE ... RETURNING: SQLite < 3.35 (Debian 11, Ubuntu 20.04, EL 8/9) lacks it. Both
        # statements run in one immediate transaction, so they see the same next task.
        next_queued = "seq = (SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1)"
        claimed = self._select_then_update(
            next_queued,
            (),
            "status = 'downloading', owner = ?, lease_until = NULL, attempts = attempts + 1, started_at = ?,"
            " updated_at = ?",
            (self.owner, now, now),
        )
        return await self.get(claimed[0]) if claimed else None

    async def _update(self, task_id: str, fields: dict[str, Any], only_if: tuple[str, ...], owned: bool) -> bool:
        values = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        scope, owner = self._owned() if owned else ("", ())
        statement = (
            f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ? AND status IN ({_marks(only_if)}){scope}",
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

    async def _complete(self, task_id: str, files: list[NewFile]) -> bool:
        now = time.time()
        owned, owner = self._owned()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for file in files:
                self._db.execute(
                    "INSERT INTO files (id, task_id, kind, language, path, name, size, created_at, node)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT owner FROM tasks WHERE id = ?))",
                    (
                        file["id"],
                        task_id,
                        file["kind"],
                        file["language"],
                        file["path"],
                        file["name"],
                        file["size"],
                        now,
                        task_id,
                    ),
                )
            video, audio, listing = completed_files(files)
            cursor = self._db.execute(
                f"UPDATE tasks SET {COMPLETED_SQL}, video_file_id = ?, audio_file_id = ?, files = ?, finished_at = ?,"
                f" updated_at = ? WHERE id = ? AND status IN ('downloading', 'processing'){owned}",
                (video, audio, json.dumps(listing), now, now, task_id, *owner),
            )
            if cursor.rowcount != 1:
                self._db.execute("ROLLBACK")
                return False
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return True

    async def _requeue_running(self, message: str, count_attempt: bool) -> list[str]:
        attempts = "attempts" if count_attempt else "MAX(attempts - 1, 0)"
        owned, owner = self._owned()
        return self._select_then_update(
            f"status IN ('downloading', 'processing') AND playlist IS NULL{owned}",
            owner,
            f"status = 'queued', attempts = {attempts}, lease_until = NULL, message = ?, speed = NULL, eta = NULL,"
            " updated_at = ?",
            (message, time.time()),
        )

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
        os.close(self._lock)
