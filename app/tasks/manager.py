"""Runs tasks: FIFO from the store, at most max_concurrent downloads at once, cancel, resume.

The downloads run in the download host (app/tasks/host.py), a process that has yt-dlp imported
already, so a task pays neither the interpreter's nor yt-dlp's start-up, and yt-dlp never runs in
this (the main) process.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from app.metrics import Metrics
from app.settings import Settings
from app.store.base import STATUSES, Limits, QueueFullError, StoreUnavailableError, TaskStore
from app.store.file_ids import new_file_id
from app.store.records import ACTIVE, RUNNING, NewFile, NewTask, TaskRecord
from app.tasks.cookies import CookieSealer, CookiesError, cookie_folder
from app.tasks.host_client import DownloadHost, HostedTask, HostGoneError
from app.tasks.messages import (
    Done,
    DownloadOptions,
    Failed,
    Playlist,
    Processing,
    Progress,
    Report,
    Retrying,
    RunSpec,
)
from app.tasks.retention import Retention

# A task whose download host dies (or whose service dies under it) this many times fails for good.
MAX_ATTEMPTS = 3
SHUTDOWN_WAIT_S = 5.0
# yt-dlp matches a URL against its extractors' patterns in well under a second.
MEDIA_KEY_TIMEOUT_S = 10.0
# A cancelled download stops at its next block, or when its connection or FFmpeg is cut: at once.
# One that does not within this is stuck somewhere else: the host is killed (its other downloads
# are queued again and resume their files).
CANCEL_GRACE_S = 10.0
# A download of unknown size makes room again each time it has grown by this much.
RESERVE_STEP_BYTES = 1024 * 1024
# While the task database cannot be reached: how often the scheduler tries again, and a task's
# final status is written again (its worker's files wait on disk meanwhile).
STORE_RETRY_S = 1.0
Result = TypeVar("Result")
log = logging.getLogger(__name__)


@dataclass
class _Running:
    task: TaskRecord
    hosted: HostedTask
    ended: bool = False  # a final report arrived, or the service cancelled or stopped the task
    status: str = "downloading"
    # Bytes this download will take in the media folder: an estimate at start, then its known size.
    reserved: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


# Options of a playlist that its items, each one video, do not take: which items, and whom to tell
# (the playlist's callback tells when all its items have ended).
_PLAYLIST_ONLY_OPTIONS = ("playlist_items", "max_items", "callback_url")


def dedupe_key(url: str, options: dict[str, Any], tenant: str) -> str:
    # The user in the key: two users asking for the same video each get a task of their own.
    return hashlib.sha256(json.dumps([url, options, tenant], sort_keys=True).encode()).hexdigest()


class Manager:
    """This host's workers. Its store is scoped to this host (app/store/base.py): the tasks it
    claims, reports on and requeues are its own."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        metrics: Metrics,
        retention: Retention,
        claim_poll_s: float | None = None,
    ) -> None:
        """claim_poll_s: look for queued work at least this often (several hosts: a task queued on
        another host, should its announcement be lost); None: only when woken."""
        self.settings = settings
        self._claim_poll_s = claim_poll_s
        self.store = store
        self.metrics = metrics
        self.retention = retention
        self._running: dict[str, _Running] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._scheduler: asyncio.Task[None] | None = None
        allow_networks = tuple(str(network) for network in settings.allow_networks)
        self._host = DownloadHost(allow_networks, settings.log_level)
        self._sealer = CookieSealer(settings.cookie_secret) if settings.cookie_secret else None

    @property
    def running_count(self) -> int:
        return len(self._running)

    def running_ids(self) -> list[str]:
        return list(self._running)

    def wake(self) -> None:
        """Look for queued work now (a task was requeued, a worker freed)."""
        self._wakeup.set()

    def task_dir(self, task_id: str) -> Path:
        return self.settings.media_dir / task_id

    async def start(self) -> None:
        self.settings.media_dir.mkdir(parents=True, exist_ok=True)
        # After a database restore or a replaced disk, files the store lists may be gone: they are
        # marked removed before the first download makes room by them (retention's first pass,
        # started alongside, also cleans what the store does not know).
        await self.retention.reconcile()
        resumed = await self.store.requeue_running("resuming after restart", count_attempt=True)
        for task_id in resumed:
            log.info("task %s running -> queued (service restarted; resumes)", task_id)
            # Its download died with the service (with systemd's PrivateTmp the folder went with it
            # too); only this host's tasks: another service may share this /tmp.
            shutil.rmtree(cookie_folder(task_id), ignore_errors=True)
        self._host.start()
        self._scheduler = asyncio.create_task(self._schedule())
        self._wakeup.set()

    @property
    def takes_cookies(self) -> bool:
        return self._sealer is not None

    async def submit(
        self, url: str, options: dict[str, Any], limits: Limits, cookies: str | None = None
    ) -> tuple[TaskRecord, bool]:
        """Queue a task of limits.tenant within its limits, or return its active one for the same URL
        and options. cookies (a cookies.txt) are stored sealed; only a manager with a cookie secret
        takes them."""
        task_id = uuid.uuid4().hex
        sealed = None
        if cookies is not None:
            assert self._sealer is not None, "cookies without VIDEO_API_COOKIE_SECRET"
            sealed = self._sealer.seal(task_id, cookies)
        new = NewTask(
            id=task_id,
            url=url,
            options=options,
            dedupe_key=dedupe_key(url, options, limits.tenant),
            message="waiting for a free worker",
            cookies=sealed,
            tenant=limits.tenant,
        )
        task, created = await self.store.create(new, self.settings.queue_limit, limits)
        if created:
            log.info("task %s -> queued (%s)", task["id"], url)
            self._wakeup.set()
        return task, created

    async def cancel(self, task: TaskRecord) -> TaskRecord:
        """Stop the task if it is active and delete its files, a playlist's with all its items;
        returns the task as it is now."""
        task_id = task["id"]
        await self._mark_cancelled(task)
        # A playlist's items (none when it is no playlist, or not yet expanded: being cancelled, it
        # will not be). All are marked before any worker is waited for, so no host starts one meanwhile.
        items = [] if task["parent_id"] is not None else await self.store.items_of(task_id)
        for item in items:
            await self._mark_cancelled(item)
        for stopped in (task_id, *(item["id"] for item in items)):
            running = self._running.get(stopped)
            if running is not None:
                await self._stop(running)
            await self._delete_files(stopped, "deleted with the task")
        current = await self.store.get(task_id)
        assert current is not None  # tasks are never deleted, only cancelled
        return current

    async def _mark_cancelled(self, task: TaskRecord) -> None:
        if task["status"] not in ACTIVE:
            return
        fields = {"status": "cancelled", "message": "cancelled", "finished_at": time.time(), "speed": None, "eta": None}
        if await self.store.update(task["id"], fields):
            log.info("task %s %s -> cancelled", task["id"], task["status"])
            if task["playlist"] is None:  # the metrics count downloads: a playlist's are its items
                self.metrics.task_finished("cancelled")

    async def shutdown(self) -> None:
        """Kill the download host and leave its tasks queued, to resume on the next start."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
        for running in list(self._running.values()):
            running.ended = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._host.close(), SHUTDOWN_WAIT_S)
        requeued = await self.store.requeue_running(
            "interrupted by service shutdown; resumes on next start", count_attempt=False
        )
        for task_id in requeued:
            log.info("task %s running -> queued (service stopping; resumes on next start)", task_id)

    def kill_workers(self) -> None:
        """Kill the download host with every download and FFmpeg it runs. Safe from any thread."""
        self._host.kill()

    async def _stop(self, running: _Running) -> None:
        """Stop a running download; returns once nothing of it runs or writes any more."""
        running.ended = True
        self._host.cancel(running.hosted)
        try:
            await asyncio.wait_for(asyncio.shield(running.hosted.ended), CANCEL_GRACE_S)
        except TimeoutError:
            log.error(
                "task %s did not stop within %g s of its cancel: killing the download host",
                running.task["id"],
                CANCEL_GRACE_S,
            )
            self._host.kill(running.hosted)
            await asyncio.shield(running.hosted.ended)

    async def _delete_files(self, task_id: str, reason: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.task_dir(task_id), ignore_errors=True)
        files = await self.store.task_files(task_id)
        await self.store.mark_files_removed([f["id"] for f in files if f["removed_at"] is None], reason)

    async def _schedule(self) -> None:
        """Until the service stops, whatever fails: start queued tasks while workers are free."""
        failing = False
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), STORE_RETRY_S if failing else self._claim_poll_s)
            self._wakeup.clear()
            try:
                await self._start_queued()
            except StoreUnavailableError:
                failing = True  # the store says so once; the next round tries again
            except Exception:
                if not failing:
                    log.exception("scheduler failed; trying again every %g s", STORE_RETRY_S)
                failing = True
            else:
                failing = False

    async def _start_queued(self) -> None:
        while not self._stopping and len(self._running) < self.settings.max_concurrent:
            # The storage cap holds while downloads run: room for this one (its likely size)
            # is made before it starts; one that does not fit waits for a running one to end.
            estimate = await self._size_estimate()
            if not await self.retention.make_room(self._reserved() + estimate) and self._running:
                break
            task = await self.store.claim_next()
            if task is None:
                # Nothing left to start: the moment to catch up a playlist whose end was not summed up.
                await self.store.settle_playlists()
                break
            if task["attempts"] > MAX_ATTEMPTS:
                await self._fail(task["id"], f"gave up after {MAX_ATTEMPTS} attempts that did not finish")
                continue
            log.info("task %s queued -> downloading (attempt %d)", task["id"], task["attempts"])
            try:
                await self._start_worker(task, estimate)
            except Exception as exc:
                log.exception("task %s: cannot start its download", task["id"])
                await self._fail(task["id"], f"cannot start the download: {exc}")

    def _reserved(self) -> int:
        return sum(running.reserved for running in self._running.values())

    async def _size_estimate(self) -> int:
        """What a download whose size is not known yet will likely take: the mean finished file."""
        count, used = await self.store.live_bytes()
        return used // count if count else 0

    async def media_key(self, url: str) -> str | None:
        """The video url names, as reuse compares it (app/tasks/media_keys.py), worked out by the
        download host: yt-dlp stays out of this process. None: the host did not tell in time (it is
        restarting, or stuck)."""
        try:
            return await asyncio.wait_for(self._host.media_key(url), MEDIA_KEY_TIMEOUT_S)
        except (TimeoutError, HostGoneError) as exc:
            log.warning("the download host did not tell which video a URL names (%s): no reuse", exc or "timeout")
            return None

    def _open_cookies(self, task: TaskRecord) -> str | None:
        if task["cookies"] is None:
            return None
        if self._sealer is None:
            raise CookiesError("the task has cookies, and this host has no VIDEO_API_COOKIE_SECRET to open them")
        return self._sealer.open(task["id"], bytes(task["cookies"]))

    async def _start_worker(self, task: TaskRecord, reserved: int) -> None:
        try:
            cookies = self._open_cookies(task)
        except CookiesError as exc:
            await self._fail(task["id"], str(exc))
            return
        with contextlib.suppress(StoreUnavailableError):  # only a message: the worker starts anyway
            await self.store.update_owned(task["id"], {"message": "starting download"})
        spec = RunSpec(
            task_id=task["id"],
            url=task["url"],
            options=msgspec.convert(task["options"], DownloadOptions),
            task_dir=str(self.task_dir(task["id"])),
            max_filesize=self.settings.max_filesize_bytes,
            download_attempts=self.settings.download_attempts,
            retry_delay_s=self.settings.retry_delay_s,
            cookies=cookies,
            max_items=None if task["parent_id"] else self._max_items(task["options"]),
        )
        running = _Running(task=task, hosted=self._host.run(spec), reserved=reserved)
        self._running[task["id"]] = running
        running.watcher = asyncio.create_task(self._watch(running))
        try:
            current = await self.store.get(task["id"])
        except StoreUnavailableError:
            return  # a cancel meanwhile reaches the worker at the next lease renewal
        if current is None or current["status"] not in RUNNING:  # cancelled while the download started
            await self._stop(running)
            await asyncio.to_thread(shutil.rmtree, self.task_dir(task["id"]), ignore_errors=True)

    def _max_items(self, options: dict[str, Any]) -> int:
        cap = self.settings.playlist_max_items
        return min(options.get("max_items") or cap, cap)

    async def _watch(self, running: _Running) -> None:
        task_id = running.task["id"]
        hosted = running.hosted
        try:
            while (report := await hosted.reports.get()) is not None:
                if not running.ended:
                    await self._handle_report(running, report)
            exitcode = await asyncio.shield(hosted.ended)
            if not running.ended and not self._stopping:
                await self._host_died(running, exitcode)
        except StoreUnavailableError:
            pass  # the service stopped while a final status waited: the task resumes on the next start
        except Exception:
            log.exception("task %s: watcher failed", task_id)
            await self._stop(running)  # before its files are deleted: nothing writes them again
            await self._fail(task_id, "internal error while watching the download")
        finally:
            self._host.cancel(hosted)  # its download, if the watcher was cancelled before it ended
            shutil.rmtree(cookie_folder(task_id), ignore_errors=True)  # the download's, if its host was killed
            del self._running[task_id]
            self._wakeup.set()

    async def _handle_report(self, running: _Running, report: Report) -> None:
        task_id = running.task["id"]
        match report:
            case Progress():
                fields: dict[str, Any] = {
                    "progress": report.progress,
                    "downloaded_bytes": report.downloaded_bytes,
                    "total_bytes": report.total_bytes,
                    "speed": report.speed,
                    "eta": report.eta,
                    "message": "downloading",
                }
                await self._note(task_id, fields)
                size = max(report.total_bytes or 0, report.downloaded_bytes)
                if size >= running.reserved + RESERVE_STEP_BYTES or (report.total_bytes and size > running.reserved):
                    running.reserved = size
                    with contextlib.suppress(StoreUnavailableError):  # room is made again at the next step
                        await self.retention.make_room(self._reserved())
            case Processing():
                fields = {"status": "processing", "message": report.message}
                if report.video_info:
                    fields["video_info"] = report.video_info
                if running.status != "processing":
                    log.info("task %s downloading -> processing", task_id)
                    running.status = "processing"
                await self._note(task_id, fields)
            case Retrying():
                log.info("task %s: %s", task_id, report.message)
                await self._note(task_id, {"message": report.message, "speed": None, "eta": None})
            case Done():
                running.ended = True
                running.reserved = 0  # its files count as finished files from now on
                await self._complete(task_id, report)
                with contextlib.suppress(StoreUnavailableError):
                    await self.retention.make_room(self._reserved())
            case Playlist():
                running.ended = True
                await self._expand(running.task, report)
            case Failed():
                running.ended = True
                await self._fail(task_id, report.message)

    async def _note(self, task_id: str, fields: dict[str, Any]) -> None:
        """A running task's progress or message. While the database cannot be reached it is
        skipped: the worker keeps downloading, and the next report carries the state on."""
        with contextlib.suppress(StoreUnavailableError):
            await self.store.update_owned(task_id, fields, only_if=RUNNING)

    async def _until_stored(self, write: Callable[[], Awaitable[Result]]) -> Result:
        """A write that ends a task, tried again until the database takes it. A service that stops
        meanwhile leaves the task running in the store: the next start resumes it."""
        while True:
            try:
                return await write()
            except StoreUnavailableError:
                if self._stopping:
                    raise
                await asyncio.sleep(STORE_RETRY_S)

    async def _complete(self, task_id: str, report: Done) -> None:
        task_dir = self.task_dir(task_id)
        files = []
        for file in report.files:
            path = task_dir / file.file
            if not path.is_file() or path.stat().st_size != file.size:
                await self._fail(task_id, f"{file.kind} file {file.file} vanished before completion")
                return
            files.append(
                NewFile(
                    id=new_file_id(self.settings.node_name),
                    kind=file.kind,
                    language=file.language,
                    path=f"{task_id}/{file.file}",
                    name=file.name,
                    size=file.size,
                )
            )
        info = {"video_info": report.video_info, "media_key": report.media_key}
        await self._until_stored(lambda: self.store.update_owned(task_id, info, only_if=RUNNING))
        if await self._until_stored(lambda: self._completed(task_id, files)):
            log.info("task %s processing -> completed (%s)", task_id, ", ".join(f["kind"] for f in files))
            task = await self.store.get(task_id)
            downloaded = (task and task["downloaded_bytes"]) or 0
            self.metrics.task_finished("completed", downloaded, report.download_s, report.extract_s)
        else:
            await asyncio.to_thread(shutil.rmtree, task_dir, ignore_errors=True)

    async def _completed(self, task_id: str, files: list[NewFile]) -> bool:
        """store.complete(), or True when an earlier try did complete it (the connection broke
        after the commit, before the answer)."""
        if await self.store.complete(task_id, files):
            return True
        task = await self.store.get(task_id)
        if task is None or task["status"] != "completed":
            return False
        return any(file["id"] in (task["video_file_id"], task["audio_file_id"]) for file in files)

    async def _expand(self, task: TaskRecord, playlist: Playlist) -> None:
        """Queue the items of a playlist as tasks of their own, with the playlist's options and
        cookies (sealed again for each item); or fail the playlist saying why not."""
        task_id = task["id"]
        if not playlist.items:
            await self._fail(task_id, f"the playlist has no item to download ({playlist.skipped} skipped)")
            return
        cookies = self._open_cookies(task)  # opened once already, to start the worker
        options = {k: v for k, v in task["options"].items() if k not in _PLAYLIST_ONLY_OPTIONS}
        items = []
        for item in playlist.items:
            item_id = uuid.uuid4().hex
            sealed = None if cookies is None or self._sealer is None else self._sealer.seal(item_id, cookies)
            # The playlist in the key: the same video in two playlists is an item of each.
            key = dedupe_key(item.url, {**options, "parent_id": task_id}, task["tenant"])
            items.append(
                NewTask(
                    id=item_id,
                    url=item.url,
                    options=options,
                    dedupe_key=key,
                    message="waiting for a free worker",
                    cookies=sealed,
                    tenant=task["tenant"],
                    video_info={"title": item.title} if item.title else None,  # until the download tells more
                )
            )
        summary = {
            "title": playlist.title,
            "total": playlist.total,
            "items": len(items),
            "skipped": playlist.skipped,
            "counts": dict.fromkeys(STATUSES, 0) | {"queued": len(items)},
        }
        limit = self.settings.queue_limit
        try:
            expanded = await self._until_stored(lambda: self.store.expand(task_id, summary, items, limit))
        except QueueFullError as exc:
            await self._fail(
                task_id,
                f"the playlist has {len(items)} items to download and the queue has room for {exc.args[0]}"
                f" (VIDEO_API_QUEUE_LIMIT={limit}): ask for fewer with max_items or playlist_items, or try again"
                " when the queue is shorter",
            )
            return
        await asyncio.to_thread(shutil.rmtree, self.task_dir(task_id), ignore_errors=True)
        if expanded:
            log.info("task %s is a playlist: %d items queued (%d skipped)", task_id, len(items), playlist.skipped)
            self._wakeup.set()

    async def _fail(self, task_id: str, reason: str) -> None:
        # A failed task is final: its partial files would only take space. Deleted before the status
        # says failed, so no client sees a failed task that still has files on disk.
        await self._until_stored(lambda: self._delete_files(task_id, "task failed"))
        fields = {
            "status": "failed",
            "error": reason,
            "message": "failed",
            "finished_at": time.time(),
            "speed": None,
            "eta": None,
        }
        if await self._until_stored(lambda: self.store.update_owned(task_id, fields)):
            log.info("task %s -> failed: %s", task_id, reason)
            self.metrics.task_finished("failed")

    async def drop(self, task_id: str) -> None:
        """Stop a worker whose task this host no longer holds, and delete what it wrote here."""
        running = self._running.get(task_id)
        if running is None or running.ended:
            return
        log.info("task %s is no longer ours (cancelled or taken over elsewhere): stopping its download", task_id)
        await self._stop(running)
        await asyncio.to_thread(shutil.rmtree, self.task_dir(task_id), ignore_errors=True)

    async def _host_died(self, running: _Running, exitcode: int | None) -> None:
        task_id = running.task["id"]
        if running.task["attempts"] >= MAX_ATTEMPTS:
            await self._fail(task_id, f"its download host died {MAX_ATTEMPTS} times (last exit code {exitcode})")
            return
        message = f"its download host died (exit code {exitcode}); retrying"
        requeue = {"status": "queued", "message": message, "speed": None, "eta": None}
        if await self._until_stored(lambda: self.store.update_owned(task_id, requeue)):
            log.info("task %s running -> queued (%s)", task_id, message)
