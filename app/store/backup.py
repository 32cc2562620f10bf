"""Backups of the SQLite task store (one host): `python -m app backup` and `python -m app restore`.

A backup is SQLite's online backup API into a temporary file, checked, fsynced and linked to
tasks-<UTC time to the microsecond>.sqlite3, never over another: a file under that name is always
whole. A restore takes the lock every open store holds shared (app/store/sqlite.py), so it never
swaps the file under a running service. A fleet's PostgreSQL store is backed up by pgBackRest
(roles/pgbackrest), not here.
"""

import contextlib
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.settings import Settings
from app.store.sqlite import lock_file, own_like_folder

STAMP = "%Y%m%dT%H%M%SZ"
# Microseconds: backups taken within one second each keep their own file. Whole-second names
# (taken before the microseconds) are still found.
_NAME_STAMP = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(r"tasks-([0-9]{8}T[0-9]{6}(?:\.[0-9]{6})?Z)\.sqlite3")


class BackupError(Exception):
    """A backup or restore that cannot be done; str() says why, and nothing was changed."""


@dataclass(frozen=True)
class Backup:
    path: Path
    taken: datetime
    size: int = 0
    tasks: int = 0


def _sqlite_only(settings: Settings) -> None:
    if settings.database_url:
        raise BackupError(
            "this host uses PostgreSQL (VIDEO_API_DATABASE_URL): a fleet's backups and restores are pgBackRest's"
            " (roles/pgbackrest, playbooks/backup.yml and playbooks/restore.yml)"
        )


def backups(folder: Path) -> list[Backup]:
    """The complete backups in folder, oldest first (temporary files never match the name)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if match := _NAME.fullmatch(entry.name):
                stamp = _NAME_STAMP if "." in match[1] else STAMP
                found.append(Backup(Path(entry.path), datetime.strptime(match[1], stamp).replace(tzinfo=UTC)))
    return sorted(found, key=lambda backup: backup.taken)


def _fsync(path: Path, owner: Path | None = None) -> None:
    """fsync path; with owner, first give it to owner's owner (see own_like_folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if owner is not None:
            own_like_folder(fd, owner)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(path: Path) -> int:
    """The task count of the database at path after its integrity check; BackupError if it fails."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            result = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                raise BackupError(f"{path} fails integrity_check: {'; '.join(result[:3])}")
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a usable task database: {exc}") from None


def backup(settings: Settings, now: datetime | None = None) -> tuple[Backup, list[Path]]:
    """Back up the task store while the service runs; the backup and the older backups pruned."""
    _sqlite_only(settings)
    if not settings.db_path.exists():
        raise BackupError(f"no task database at {settings.db_path} (has the service ever run on this data folder?)")
    taken = now or datetime.now(UTC)
    folder = settings.backups_dir
    if not folder.exists():
        folder.mkdir(parents=True)
        _fsync(folder, settings.data_dir)
    final = folder / f"tasks-{taken.strftime(_NAME_STAMP)}.sqlite3"
    temporary = folder / f".{final.name}.{os.getpid()}.tmp"
    try:
        # mode=rw: never create an empty database where the real one is missing.
        with (
            contextlib.closing(sqlite3.connect(f"file:{settings.db_path}?mode=rw", uri=True)) as source,
            contextlib.closing(sqlite3.connect(temporary, isolation_level=None)) as target,
        ):
            source.execute("PRAGMA busy_timeout=5000")
            # All pages in one step, from one read snapshot: copying in steps restarts whenever the
            # service writes, which under load may never finish. WAL readers do not block writers.
            source.backup(target)
            # One self-contained file: no -wal beside it to lose when it is copied.
            target.execute("PRAGMA journal_mode=DELETE")
        tasks = _check(temporary)
        _fsync(temporary, folder)
        os.link(temporary, final)  # unlike rename, fails rather than replace a backup of that name
        _fsync(folder)
    except FileExistsError:
        raise BackupError(f"a backup named {final} already exists; nothing was overwritten") from None
    except (sqlite3.Error, OSError) as exc:  # a full disk, an unwritable folder: one line, not a traceback
        raise BackupError(f"cannot back up {settings.db_path} into {folder}: {exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    made = Backup(final, taken, final.stat().st_size, tasks)
    return made, prune(folder, settings.backup_keep_days, taken)


def prune(folder: Path, keep_days: int, now: datetime) -> list[Path]:
    """Delete the backups taken more than keep_days before now, except the newest."""
    older = [b.path for b in backups(folder)[:-1] if b.taken < now - timedelta(days=keep_days)]
    for path in older:
        path.unlink(missing_ok=True)
    return older


def newest_backup_time(settings: Settings) -> float | None:
    """When the newest complete backup was taken (Unix time), for /metrics; None without one."""
    found = backups(settings.backups_dir)
    return found[-1].taken.timestamp() if found else None


def choose(settings: Settings, at: datetime | None) -> Backup:
    """The newest backup taken at or before at (default: the newest of all)."""
    found = [b for b in backups(settings.backups_dir) if at is None or b.taken <= at]
    if not found:
        when = "" if at is None else f" taken at or before {at.isoformat()}"
        raise BackupError(f"no backup{when} in {settings.backups_dir}")
    return found[-1]


def _new_folder(path: Path) -> Path:
    """path, or path-2, path-3... when a restore in the same second already made it."""
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def restore(settings: Settings, source: Path) -> tuple[int, Path | None]:
    """Put the backup at source back as the task database, with the service stopped. Returns the
    task count restored and the folder the replaced database was moved into (None: there was none)."""
    _sqlite_only(settings)
    db = settings.db_path
    if not db.parent.exists():
        db.parent.mkdir(parents=True)
        _fsync(db.parent, settings.data_dir)
    lock = lock_file(db, exclusive=True)
    if lock is None:
        raise BackupError(
            f"the service is running on {settings.data_dir} (it holds {db.with_suffix('.lock')}): stop it first"
        )
    temporary = db.with_name(f".{db.name}.restore.tmp")
    try:
        try:
            shutil.copyfile(source, temporary)
        except OSError as exc:  # unreadable, or no room for the copy beside the database
            raise BackupError(f"cannot copy the backup {source} into {db.parent}: {exc}") from None
        # The copy is what gets checked: what is put in place is exactly what passed.
        tasks = _check(temporary)
        _fsync(temporary, db.parent)
        replaced = [path for path in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))) if path.exists()]
        aside = None
        if replaced:
            aside = _new_folder(db.parent / f"replaced-{time.strftime(STAMP, time.gmtime())}")
            for path in replaced:
                path.rename(aside / path.name)
        temporary.rename(db)
        _fsync(db.parent)
        return tasks, aside
    finally:
        temporary.unlink(missing_ok=True)
        os.close(lock)
