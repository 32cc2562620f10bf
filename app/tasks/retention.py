"""Keeps the media folder bounded: by age, then each user within its storage limit, then by size
cap and free-disk floor, oldest first.

It works only below the media folder (the database lives elsewhere) and records every removal
in the task store, so no task points at a file that is gone without saying so.
"""

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import TypedDict

from app.settings import Settings
from app.store.base import StoreUnavailableError, TaskStore
from app.store.records import ACTIVE, FileRecord

MB = 1024 * 1024
# Why a file's record is marked removed when its file is not on this host's disk as recorded: the
# database was restored from before retention (or a cancel) deleted it, or the disk was replaced.
MISSING_REASON = "missing on disk (database restored or disk replaced)"
log = logging.getLogger(__name__)


class Deleted(TypedDict):
    """One file a pass deleted (the API's DeletedFile, app/api/contract.py)."""

    file_id: str | None
    task_id: str | None
    kind: str
    bytes: int
    reason: str


class Summary(TypedDict):
    """What a pass deleted (the API's Cleanup)."""

    deleted: list[Deleted]
    files_deleted: int
    bytes_freed: int


class Retention:
    def __init__(self, settings: Settings, store: TaskStore, storage_limits: Callable[[], dict[str, int]]) -> None:
        """storage_limits(): the users' storage limits in bytes, by name (app/tenants/directory.py)."""
        self.settings = settings
        self.store = store
        self.storage_limits = storage_limits
        self._lock = asyncio.Lock()

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.settings.media_dir).free

    async def run(self) -> Summary:
        """One pass; returns what was deleted and how many bytes that freed."""
        async with self._lock:
            deleted: list[Deleted] = []
            cutoff = time.time() - self.settings.retention_hours * 3600
            live = await self._forget_missing()
            expired = [f for f in live if f["created_at"] <= cutoff]
            await self._remove(expired, f"older than {self.settings.retention_hours:g} hours", deleted)
            live = [f for f in live if f["created_at"] > cutoff]
            live = await self._fit_users(live, await self._users_over(), deleted)
            await self._remove_excess(live, 0, deleted)
            await self._remove_leftovers(deleted)
        return self._summary(deleted)

    async def reconcile(self) -> None:
        """Mark removed this host's files that are not on its disk as recorded (the service's start
        does this before any download: the storage cap must not count files that are gone)."""
        async with self._lock:
            await self._forget_missing()

    async def make_room(self, reserved: int) -> bool:
        """Delete the oldest finished files until they and `reserved` bytes (downloads under way)
        fit the storage cap and the free-disk floor holds; False when they cannot fit."""
        deleted: list[Deleted] = []
        async with self._lock:
            # Before each download starts and after each ends: this host's files are listed only when
            # a user is over its limit (usually nobody is).
            over = await self._users_over()
            if any(excess > 0 for excess, _ in over.values()):
                await self._fit_users(await self.store.live_files(), over, deleted)
            _, used = await self.store.live_bytes()
            if await self._excess(used + reserved) is None:
                self._summary(deleted)
                return True  # the usual case, without listing the files
            fits = await self._remove_excess(await self.store.live_files(), reserved, deleted)
        self._summary(deleted)
        return fits

    async def run_periodically(self) -> None:
        while True:
            try:
                await self.run()
            except StoreUnavailableError:
                pass  # the store says so once; the next pass catches up
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(self.settings.retention_interval_s)

    @staticmethod
    def _summary(deleted: list[Deleted]) -> Summary:
        freed = sum(item["bytes"] for item in deleted)
        if deleted:
            log.info("retention deleted %d files, %d bytes", len(deleted), freed)
        return {"deleted": deleted, "files_deleted": len(deleted), "bytes_freed": freed}

    async def _remove_excess(self, live: list[FileRecord], reserved: int, deleted: list[Deleted]) -> bool:
        """Oldest first, while the live files and `reserved` exceed the cap or free disk is under
        the floor; returns whether they fit in the end. The newest task's files are never taken
        for size: a download bigger than the cap stays until it expires (the cap holds within
        one download)."""
        used = sum(f["size"] for f in live) + reserved
        newest = live[-1]["task_id"] if live else None
        candidates = [f for f in live if f["task_id"] != newest]
        while (reason := await self._excess(used)) is not None:
            if not candidates:
                return False
            oldest = candidates.pop(0)
            used -= oldest["size"]
            await self._remove([oldest], reason, deleted)
        return True

    async def _users_over(self) -> dict[str, tuple[int, int]]:
        """(bytes over, limit) of each user with a storage limit: its files on every host; <= 0 bytes
        over, none to remove."""
        limits = self.storage_limits()
        used = await self.store.bytes_by_tenant() if limits else {}
        return {tenant: (used.get(tenant, 0) - limit, limit) for tenant, limit in limits.items()}

    async def _fit_users(
        self, live: list[FileRecord], users_over: dict[str, tuple[int, int]], deleted: list[Deleted]
    ) -> list[FileRecord]:
        """Each user over its storage limit loses this host's oldest files of its own, never those
        of its newest task (as the cap, within one download), until it fits. Returns the live files
        left."""
        removed: set[str] = set()
        for tenant, (over, limit) in users_over.items():
            own = [f for f in live if f["tenant"] == tenant]
            newest = own[-1]["task_id"] if own else None
            taken = []
            for file in own:
                if over <= 0 or file["task_id"] == newest:
                    break
                taken.append(file)
                over -= file["size"]
            await self._remove(taken, f"{tenant}'s files over its {limit // MB} MB (max_storage_mb)", deleted)
            removed |= {f["id"] for f in taken}
        return [f for f in live if f["id"] not in removed]

    async def _excess(self, used: int) -> str | None:
        """Why files must go with `used` bytes in the media folder, or None when none must."""
        if used > self.settings.max_storage_mb * MB:
            return f"storage over {self.settings.max_storage_mb} MB"
        if await asyncio.to_thread(self._free_bytes) < self.settings.min_free_mb * MB:
            return f"free disk under {self.settings.min_free_mb} MB"
        return None

    async def _remove(self, files: list[FileRecord], reason: str, deleted: list[Deleted]) -> None:
        if not files:
            return
        media_dir = self.settings.media_dir
        for file in files:
            await asyncio.to_thread(_unlink, media_dir / file["path"])
            deleted.append(
                {
                    "file_id": file["id"],
                    "task_id": file["task_id"],
                    "kind": file["kind"],
                    "bytes": file["size"],
                    "reason": reason,
                }
            )
        await self._record_removed(files, reason, f"files removed by retention: {reason}")

    async def _record_removed(self, files: list[FileRecord], reason: str, message: str) -> None:
        """Mark the files removed for reason and tell their completed tasks with message."""
        await self.store.mark_files_removed([f["id"] for f in files], reason)
        for task_id in {f["task_id"] for f in files}:
            await self.store.update(task_id, {"message": message}, ("completed",))

    async def _forget_missing(self) -> list[FileRecord]:
        """This host's live files, less those missing from its disk or of another size than recorded,
        which are marked removed (a download answers 410 with why, the task's message says so). A
        file of another size at a recorded path is not the recorded one: the leftover sweep deletes it."""
        live = await self.store.live_files()
        media_dir = self.settings.media_dir
        present = await asyncio.to_thread(lambda: {f["id"] for f in live if _size(media_dir / f["path"]) == f["size"]})
        missing = [f for f in live if f["id"] not in present]
        if missing:
            log.warning("%d files recorded on this host are not on its disk: marked removed", len(missing))
            await self._record_removed(missing, MISSING_REASON, f"files removed: {MISSING_REASON}")
        return [f for f in live if f["id"] in present]

    async def _remove_leftovers(self, deleted: list[Deleted]) -> None:
        """Partial files of tasks that are no longer active, and anything of unknown tasks."""
        media_dir = self.settings.media_dir
        live_paths = {f["path"] for f in await self.store.live_files()}
        for entry in await asyncio.to_thread(_list_dir, media_dir):
            is_dir = entry.is_dir(follow_symlinks=False)
            task = await self.store.get(entry.name) if is_dir else None
            if task is not None and task["status"] in ACTIVE:
                continue
            keep = {path for path in live_paths if path.startswith(entry.name + "/")} if task else set()
            for path in await asyncio.to_thread(_walk_files, entry.path) if is_dir else [entry.path]:
                if os.path.relpath(path, media_dir) in keep:
                    continue
                size = await asyncio.to_thread(_unlink, path)
                deleted.append(
                    {
                        "file_id": None,
                        "task_id": None if task is None else task["id"],
                        "kind": "leftover",
                        "bytes": size,
                        "reason": "leftover of a task that is not active",
                    }
                )
            if is_dir and not keep:
                await asyncio.to_thread(shutil.rmtree, entry.path, True)


def _list_dir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []


def _walk_files(top: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(top) for name in names]


def _size(path: Path) -> int | None:
    """The size of a regular file at path (not followed if a link), None if there is none."""
    try:
        stat = os.lstat(path)
    except OSError:
        return None
    return stat.st_size if S_ISREG(stat.st_mode) else None


def _unlink(path: str | Path) -> int:
    """Remove a file; returns the bytes it held (0 if it was already gone)."""
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size
