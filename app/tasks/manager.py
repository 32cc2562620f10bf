"""Runs tasks: FIFO from the store, at most max_concurrent worker processes, cancel, resume.

Workers are forked from a fork server that has yt-dlp imported already, so a task pays neither
the interpreter's nor yt-dlp's start-up, and yt-dlp never runs in this (the main) process.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from app.metrics import Metrics
from app.settings import Settings
from app.store.base import STATUSES, Limits, QueueFullError, StoreUnavailableError, TaskStore
from app.store.file_ids import new_file_id
from app.store.records import ACTIVE, RUNNING, NewFile, NewTask, TaskRecord
from app.tasks import worker
from app.tasks.cookies import CookieSealer, CookiesError, cookie_folder
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

# A task whose worker dies (or whose service dies under it) this many times fails for good.
MAX_ATTEMPTS = 3
SHUTDOWN_WAIT_S = 5.0
# yt-dlp matches a URL against its extractors' patterns in well under a second.
MEDIA_KEY_TIMEOUT_S = 10.0
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
    process: BaseProcess
    conn: Connection
    exited: asyncio.Future[int | None]
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


def _kill_group(pid: int | None) -> None:
    if pid is None:  # a process never started has no group to kill
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not yet its own group leader (killed before os.setsid()): kill the process itself.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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
        # Every worker process ever started, appended by the starting thread itself: a start that
        # outlives a cancelled scheduler is still found (and killed) at shutdown.
        self._started: list[BaseProcess] = []
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._scheduler: asyncio.Task[None] | None = None
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["app.tasks.lifeline", "app.tasks.downloader", "app.tasks.media_keys"])
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
            # Its worker died with the service (with systemd's PrivateTmp the folder went with it
            # too); only this host's tasks: another service may share this /tmp.
            shutil.rmtree(cookie_folder(task_id), ignore_errors=True)
        # Start the fork server now, so the first task does not wait for its imports; from this
        # thread, whose end is the one the fork server's lifeline watches (a quick spawn).
        multiprocessing.forkserver.ensure_running()
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
                running.ended = True
                _kill_group(running.process.pid)
                await asyncio.shield(running.exited)
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
        """Kill all workers and leave their tasks queued, to resume on the next start."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
        for running in list(self._running.values()):
            running.ended = True
        self.kill_workers()
        exits = [asyncio.shield(r.exited) for r in self._running.values()]
        if exits:
            await asyncio.wait(exits, timeout=SHUTDOWN_WAIT_S)
        requeued = await self.store.requeue_running(
            "interrupted by service shutdown; resumes on next start", count_attempt=False
        )
        for task_id in requeued:
            log.info("task %s running -> queued (service stopping; resumes on next start)", task_id)

    def kill_workers(self) -> None:
        """Kill the process group of every worker still alive. Safe from any thread."""
        for process in list(self._started):
            if process.exitcode is None:
                _kill_group(process.pid)

    def _start_process(self, process: BaseProcess) -> None:
        """Runs in a thread. A stop that began meanwhile kills the new worker at once: the
        scheduler awaiting this may have been cancelled, and nobody else would know the process."""
        process.start()
        self._started.append(process)
        if self._stopping:
            _kill_group(process.pid)

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
                log.exception("task %s: cannot start a worker", task["id"])
                await self._fail(task["id"], f"cannot start a worker process: {exc}")

    def _reserved(self) -> int:
        return sum(running.reserved for running in self._running.values())

    async def _size_estimate(self) -> int:
        """What a download whose size is not known yet will likely take: the mean finished file."""
        count, used = await self.store.live_bytes()
        return used // count if count else 0

    async def media_key(self, url: str) -> str:
        """The video url names, as reuse compares it (app/tasks/media_keys.py), worked out in a
        short-lived process from the fork server: yt-dlp stays out of this process."""
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(target=worker.send_media_key, args=(url, sender), name="media-key")
        await asyncio.to_thread(self._start_process, process)
        sender.close()
        try:
            return str(await asyncio.wait_for(asyncio.to_thread(receiver.recv), MEDIA_KEY_TIMEOUT_S))
        finally:
            _kill_group(process.pid)  # gone already, unless it hung: then its recv() ends with EOF
            receiver.close()
            await asyncio.to_thread(process.join)
            self._started.remove(process)

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
            allow_networks=tuple(str(network) for network in self.settings.allow_networks),
            log_level=self.settings.log_level,
            download_attempts=self.settings.download_attempts,
            retry_delay_s=self.settings.retry_delay_s,
            cookies=cookies,
            max_items=None if task["parent_id"] else self._max_items(task["options"]),
        )
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(target=worker.run, args=(spec, child_conn), name=f"task-{task['id']}")
        await asyncio.to_thread(self._start_process, process)
        child_conn.close()
        loop = asyncio.get_running_loop()
        running = _Running(task=task, process=process, conn=parent_conn, exited=loop.create_future(), reserved=reserved)
        self._running[task["id"]] = running
        running.watcher = asyncio.create_task(self._watch(running))
        try:
            current = await self.store.get(task["id"])
        except StoreUnavailableError:
            return  # a cancel meanwhile reaches the worker at the next lease renewal
        if current is None or current["status"] not in RUNNING:  # cancelled while the worker started
            running.ended = True
            _kill_group(process.pid)
            await asyncio.shield(running.exited)
            await asyncio.to_thread(shutil.rmtree, self.task_dir(task["id"]), ignore_errors=True)

    def _max_items(self, options: dict[str, Any]) -> int:
        cap = self.settings.playlist_max_items
        return min(options.get("max_items") or cap, cap)

    async def _watch(self, running: _Running) -> None:
        loop = asyncio.get_running_loop()
        task_id = running.task["id"]
        reports: asyncio.Queue[Report | None] = asyncio.Queue()

        def readable() -> None:
            try:
                reports.put_nowait(running.conn.recv())
            except (EOFError, OSError):
                loop.remove_reader(running.conn.fileno())
                reports.put_nowait(None)

        def exited() -> None:
            loop.remove_reader(running.process.sentinel)
            running.process.join(0)
            running.exited.set_result(running.process.exitcode)

        pipe = running.conn.fileno()
        loop.add_reader(pipe, readable)
        loop.add_reader(running.process.sentinel, exited)
        try:
            while (report := await reports.get()) is not None:
                if not running.ended:
                    await self._handle_report(running, report)
            exitcode = await asyncio.shield(running.exited)
            if not running.ended and not self._stopping:
                await self._worker_died(running, exitcode)
        except StoreUnavailableError:
            pass  # the service stopped while a final status waited: the task resumes on the next start
        except Exception:
            log.exception("task %s: watcher failed", task_id)
            await self._fail(task_id, "internal error while watching the worker")
        finally:
            # However the watcher ends: a reader left on a closed descriptor would take the events of
            # the next connection that gets its number, and that request would never be read.
            loop.remove_reader(pipe)
            if not running.exited.done():
                _kill_group(running.process.pid)
            shutil.rmtree(cookie_folder(task_id), ignore_errors=True)  # the worker's, if it was killed
            running.conn.close()
            del self._running[task_id]
            self._started.remove(running.process)
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
        log.info("task %s is no longer ours (cancelled or taken over elsewhere): stopping its worker", task_id)
        running.ended = True
        _kill_group(running.process.pid)
        await asyncio.shield(running.exited)
        await asyncio.to_thread(shutil.rmtree, self.task_dir(task_id), ignore_errors=True)

    async def _worker_died(self, running: _Running, exitcode: int | None) -> None:
        task_id = running.task["id"]
        if running.task["attempts"] >= MAX_ATTEMPTS:
            await self._fail(task_id, f"worker process died {MAX_ATTEMPTS} times (last exit code {exitcode})")
            return
        message = f"worker process died (exit code {exitcode}); retrying"
        requeue = {"status": "queued", "message": message, "speed": None, "eta": None}
        if await self._until_stored(lambda: self.store.update_owned(task_id, requeue)):
            log.info("task %s running -> queued (%s)", task_id, message)
