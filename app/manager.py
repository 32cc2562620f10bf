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
from dataclasses import dataclass, field
from pathlib import Path

from app import worker
from app.config import Settings
from app.metrics import Metrics
from app.records import ACTIVE, RUNNING
from app.retention import Retention
from app.store import TaskStore

# A task whose worker dies (or whose service dies under it) this many times fails for good.
MAX_ATTEMPTS = 3
SHUTDOWN_WAIT_S = 5.0
# A download of unknown size makes room again each time it has grown by this much.
RESERVE_STEP_BYTES = 1024 * 1024
# Several hosts: leases are renewed this often, which is also how soon a cancel on another host
# (or a lost lease) reaches this host's worker; liveness and expired leases are looked at every
# LEASE_CHECKS_PER_LEASE-th of a lease.
RENEW_INTERVAL_S = 1.0
LEASE_CHECKS_PER_LEASE = 6
log = logging.getLogger("app.manager")


@dataclass
class _Running:
    task: dict
    process: multiprocessing.process.BaseProcess
    conn: object
    exited: asyncio.Future
    ended: bool = False  # a final report arrived, or the service cancelled or stopped the task
    status: str = "downloading"
    # Bytes this download will take in the media folder: an estimate at start, then its known size.
    reserved: int = 0
    watcher: asyncio.Task | None = field(default=None, repr=False)


def dedupe_key(url: str, options: dict) -> str:
    return hashlib.sha256(json.dumps([url, options], sort_keys=True).encode()).hexdigest()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not yet its own group leader (killed before os.setsid()): kill the process itself.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Manager:
    def __init__(self, settings: Settings, store: TaskStore, metrics: Metrics, retention: Retention):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.retention = retention
        self.node = settings.node_name
        # The node that owner-only writes are scoped to: None on one host, where every task is ours.
        self.own = self.node if store.shared else None
        self._lease_s = settings.lease_s if store.shared else None
        self._running: dict[str, _Running] = {}
        # Every worker process ever started, appended by the starting thread itself: a start that
        # outlives a cancelled scheduler is still found (and killed) at shutdown.
        self._started: list[multiprocessing.process.BaseProcess] = []
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._scheduler: asyncio.Task | None = None
        self._leases: asyncio.Task | None = None
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["app.ytdl"])

    @property
    def running_count(self) -> int:
        return len(self._running)

    def task_dir(self, task_id: str) -> Path:
        return self.settings.media_dir / task_id

    async def start(self) -> None:
        self.settings.media_dir.mkdir(parents=True, exist_ok=True)
        resumed = await self.store.requeue_running("resuming after restart", count_attempt=True, node=self.own)
        for task_id in resumed:
            log.info("task %s running -> queued (service restarted; resumes)", task_id)
        # Start the fork server now, so the first task does not wait for its imports.
        await asyncio.to_thread(multiprocessing.forkserver.ensure_running)
        self._scheduler = asyncio.create_task(self._schedule())
        if self.store.shared:
            await self.store.heartbeat(self.node, self.settings.node_base_url)
            self._leases = asyncio.create_task(self._keep_leases())
        self._wakeup.set()

    async def submit(self, url: str, options: dict) -> tuple[dict, bool]:
        """Queue a task, or return the active one for the same URL and options."""
        task = {
            "id": uuid.uuid4().hex,
            "url": url,
            "options": options,
            "dedupe_key": dedupe_key(url, options),
            "message": "waiting for a free worker",
        }
        task, created = await self.store.create(task, self.settings.queue_limit)
        if created:
            log.info("task %s -> queued (%s)", task["id"], url)
            self._wakeup.set()
        return task, created

    async def cancel(self, task: dict) -> dict:
        """Stop the task if it is active and delete its files; returns the task as it is now."""
        task_id = task["id"]
        if task["status"] in ACTIVE:
            fields = {
                "status": "cancelled",
                "message": "cancelled",
                "finished_at": time.time(),
                "speed": None,
                "eta": None,
            }
            if await self.store.update(task_id, fields):
                log.info("task %s %s -> cancelled", task_id, task["status"])
                self.metrics.task_finished("cancelled")
        running = self._running.get(task_id)
        if running is not None:
            running.ended = True
            _kill_group(running.process.pid)
            await asyncio.shield(running.exited)
        await self._delete_files(task_id, "deleted with the task")
        return await self.store.get(task_id)

    async def shutdown(self) -> None:
        """Kill all workers and leave their tasks queued, to resume on the next start."""
        self._stopping = True
        for loop_task in (self._scheduler, self._leases):
            if loop_task is not None:
                loop_task.cancel()
        for running in list(self._running.values()):
            running.ended = True
        self.kill_workers()
        exits = [asyncio.shield(r.exited) for r in self._running.values()]
        if exits:
            await asyncio.wait(exits, timeout=SHUTDOWN_WAIT_S)
        requeued = await self.store.requeue_running(
            "interrupted by service shutdown; resumes on next start", count_attempt=False, node=self.own
        )
        for task_id in requeued:
            log.info("task %s running -> queued (service stopping; resumes on next start)", task_id)

    def kill_workers(self) -> None:
        """Kill the process group of every worker still alive. Safe from any thread."""
        for process in list(self._started):
            if process.exitcode is None:
                _kill_group(process.pid)

    def _start_process(self, process: multiprocessing.process.BaseProcess) -> None:
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
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while not self._stopping and len(self._running) < self.settings.max_concurrent:
                # The storage cap holds while downloads run: room for this one (its likely size)
                # is made before it starts; one that does not fit waits for a running one to end.
                estimate = await self._size_estimate()
                if not await self.retention.make_room(self._reserved() + estimate) and self._running:
                    break
                task = await self.store.claim_next(self.node, self._lease_s)
                if task is None:
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
        count, used = await self.store.live_bytes(self.own)
        return used // count if count else 0

    async def _start_worker(self, task: dict, reserved: int) -> None:
        await self.store.update(task["id"], {"message": "starting download"}, node=self.own)
        spec = {
            "task_id": task["id"],
            "url": task["url"],
            "options": task["options"],
            "task_dir": str(self.task_dir(task["id"])),
            "max_filesize": self.settings.max_filesize_bytes,
            "allow_networks": [str(network) for network in self.settings.allow_networks],
            "log_level": self.settings.log_level,
            "download_attempts": self.settings.download_attempts,
            "retry_delay": self.settings.retry_delay_s,
        }
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(target=worker.run, args=(spec, child_conn), name=f"task-{task['id']}")
        await asyncio.to_thread(self._start_process, process)
        child_conn.close()
        loop = asyncio.get_running_loop()
        running = _Running(task=task, process=process, conn=parent_conn, exited=loop.create_future(), reserved=reserved)
        self._running[task["id"]] = running
        running.watcher = asyncio.create_task(self._watch(running))
        current = await self.store.get(task["id"])
        if current is None or current["status"] not in RUNNING:  # cancelled while the worker started
            running.ended = True
            _kill_group(process.pid)

    async def _watch(self, running: _Running) -> None:
        loop = asyncio.get_running_loop()
        task_id = running.task["id"]
        reports: asyncio.Queue = asyncio.Queue()

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

        loop.add_reader(running.conn.fileno(), readable)
        loop.add_reader(running.process.sentinel, exited)
        try:
            while (report := await reports.get()) is not None:
                if not running.ended:
                    await self._handle_report(running, report)
            exitcode = await asyncio.shield(running.exited)
            if not running.ended and not self._stopping:
                await self._worker_died(running, exitcode)
        except Exception:
            log.exception("task %s: watcher failed", task_id)
            await self._fail(task_id, "internal error while watching the worker")
        finally:
            if not running.exited.done():
                _kill_group(running.process.pid)
            running.conn.close()
            del self._running[task_id]
            self._started.remove(running.process)
            self._wakeup.set()

    async def _handle_report(self, running: _Running, report: dict) -> None:
        task_id = running.task["id"]
        kind = report["type"]
        if kind == "progress":
            fields = {k: report[k] for k in ("progress", "downloaded_bytes", "total_bytes", "speed", "eta")}
            fields["message"] = "downloading"
            await self.store.update(task_id, fields, only_if=RUNNING, node=self.own)
            size = max(report["total_bytes"] or 0, report["downloaded_bytes"] or 0)
            if size >= running.reserved + RESERVE_STEP_BYTES or (report["total_bytes"] and size > running.reserved):
                running.reserved = size
                await self.retention.make_room(self._reserved())
        elif kind == "processing":
            fields = {"status": "processing", "message": report["message"]}
            if report.get("video_info"):
                fields["video_info"] = report["video_info"]
            if running.status != "processing":
                log.info("task %s downloading -> processing", task_id)
                running.status = "processing"
            await self.store.update(task_id, fields, only_if=RUNNING, node=self.own)
        elif kind == "retry":
            log.info("task %s: %s", task_id, report["message"])
            await self.store.update(
                task_id, {"message": report["message"], "speed": None, "eta": None}, only_if=RUNNING
            )
        elif kind == "done":
            running.ended = True
            running.reserved = 0  # its files count as finished files from now on
            await self._complete(task_id, report)
            await self.retention.make_room(self._reserved())
        elif kind == "error":
            running.ended = True
            await self._fail(task_id, report["message"])

    async def _complete(self, task_id: str, report: dict) -> None:
        task_dir = self.task_dir(task_id)
        files = []
        for file in report["files"]:
            path = task_dir / file["file"]
            if not path.is_file() or path.stat().st_size != file["size"]:
                await self._fail(task_id, f"{file['kind']} file {file['file']} vanished before completion")
                return
            files.append(
                {
                    "id": uuid.uuid4().hex,
                    "kind": file["kind"],
                    "path": f"{task_id}/{file['file']}",
                    "name": file["name"],
                    "size": file["size"],
                }
            )
        await self.store.update(task_id, {"video_info": report["video_info"]}, only_if=RUNNING, node=self.own)
        if await self.store.complete(task_id, files, node=self.own):
            log.info("task %s processing -> completed (%s)", task_id, ", ".join(f["kind"] for f in files))
            task = await self.store.get(task_id)
            self.metrics.task_finished("completed", report.get("timings"), task["downloaded_bytes"] or 0)
        else:
            await asyncio.to_thread(shutil.rmtree, task_dir, ignore_errors=True)

    async def _fail(self, task_id: str, reason: str) -> None:
        # A failed task is final: its partial files would only take space. Deleted before the status
        # says failed, so no client sees a failed task that still has files on disk.
        await self._delete_files(task_id, "task failed")
        fields = {
            "status": "failed",
            "error": reason,
            "message": "failed",
            "finished_at": time.time(),
            "speed": None,
            "eta": None,
        }
        if await self.store.update(task_id, fields, node=self.own):
            log.info("task %s -> failed: %s", task_id, reason)
            self.metrics.task_finished("failed")

    async def _keep_leases(self) -> None:
        """Several hosts: renew this host's leases, drop the tasks it no longer holds (cancelled or
        taken over elsewhere), say it is alive and requeue tasks of hosts that died."""
        checks = 0
        while True:
            await asyncio.sleep(RENEW_INTERVAL_S)
            try:
                lost = await self.store.renew_leases(self.node, self._lease_s, list(self._running))
                for task_id in lost:
                    await self._drop(task_id)
                checks += 1
                if checks * RENEW_INTERVAL_S >= self._lease_s / LEASE_CHECKS_PER_LEASE:
                    checks = 0
                    await self.store.heartbeat(self.node, self.settings.node_base_url)
                    if await self.store.requeue_expired():
                        self._wakeup.set()
            except Exception:
                log.exception("lease upkeep failed; retrying")

    async def _drop(self, task_id: str) -> None:
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
        if await self.store.update(task_id, requeue, node=self.own):
            log.info("task %s running -> queued (%s)", task_id, message)
