"""The service's side of the download host (app/tasks/host.py): starts it, sends it tasks and cancels,
hands each task's reports to the manager, asks it for media keys. A host that dies (killed, or
crashed) ends every task it ran with its exit code; the next task starts a new host.

Everything here runs on the event loop's thread, except DownloadHost.kill(), safe from any thread.
"""

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from app.tasks.messages import (
    Cancel,
    HostConfig,
    MediaKeyIs,
    MediaKeyOf,
    Report,
    RunSpec,
    TaskEnded,
    TaskReport,
    ToHost,
)

log = logging.getLogger(__name__)


class HostGoneError(RuntimeError):
    """The download host died before it answered."""


class HostedTask:
    """A download running in the host, as the manager follows it."""

    def __init__(self, task_id: str, host: "_HostProcess") -> None:
        self.task_id = task_id
        self.host = host
        self.reports: asyncio.Queue[Report | None] = asyncio.Queue()  # None: no more reports
        # Set once nothing of the task runs any more: 0 when its thread ended, else the exit code of
        # the host that died under it.
        self.ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def finish(self, exitcode: int | None) -> None:
        if not self.ended.done():
            self.reports.put_nowait(None)
            self.ended.set_result(exitcode)


class _HostProcess:
    """One run of the host process, from its start to its death."""

    def __init__(self, config: HostConfig) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            # The service's interpreter, environment and working directory: `app` imports as it does
            # here. Its own session: killing the group kills the host and every FFmpeg it started.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.tasks.host", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.conn = Connection(ours.detach())
        self.tasks: dict[str, HostedTask] = {}
        self.media_keys: dict[int, asyncio.Future[str | None]] = {}
        self.alive = True
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.send(config)
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._readable)
        log.info("download host started (pid %d)", self.process.pid)

    def send(self, message: ToHost) -> None:
        """A host that died meanwhile gets nothing: its death ends what was sent to it."""
        try:
            self.conn.send(message)
        except OSError:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self._died()
            return
        match message:
            case TaskReport():
                if (task := self.tasks.get(message.task_id)) is not None:
                    task.reports.put_nowait(message.report)
            case TaskEnded():
                if (task := self.tasks.pop(message.task_id, None)) is not None:
                    task.finish(0)
            case MediaKeyIs():
                future = self.media_keys.pop(message.request, None)
                if future is not None and not future.done():
                    future.set_result(message.key)

    def _died(self) -> None:
        """Its end of the connection closed: it is dead, or dies now with whatever it started."""
        self.alive = False
        asyncio.get_running_loop().remove_reader(self.conn.fileno())
        self.conn.close()
        self.kill()
        asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        exitcode = await asyncio.to_thread(self.process.wait)
        log.log(logging.INFO if exitcode == -signal.SIGKILL else logging.ERROR, "download host ended (%d)", exitcode)
        for task in self.tasks.values():
            task.finish(exitcode)
        self.tasks.clear()
        for future in self.media_keys.values():
            if not future.done():
                future.set_exception(HostGoneError("the download host ended"))
        self.gone.set_result(None)


class DownloadHost:
    def __init__(self, allow_networks: tuple[str, ...], log_level: str) -> None:
        self._config = HostConfig(allow_networks=allow_networks, log_level=log_level)
        self._current: _HostProcess | None = None
        self._processes: list[_HostProcess] = []  # every host not reaped yet
        self._requests = itertools.count()
        self._closed = False

    def _host(self) -> _HostProcess:
        if self._closed:
            raise HostGoneError("the service is stopping")
        if self._current is None or not self._current.alive:
            self._current = _HostProcess(self._config)
            self._processes.append(self._current)
            self._current.gone.add_done_callback(functools.partial(self._reaped, self._current))
        return self._current

    def _reaped(self, host: _HostProcess, _: object) -> None:
        self._processes.remove(host)

    def start(self) -> None:
        """Start the host now, so the first task does not wait for its imports (about a second). From
        the event loop's thread, whose end the host's lifeline watches."""
        self._host()

    def run(self, spec: RunSpec) -> HostedTask:
        host = self._host()
        task = host.tasks[spec.task_id] = HostedTask(spec.task_id, host)
        host.send(spec)
        return task

    def cancel(self, task: HostedTask) -> None:
        """Stop the task's download; task.ended is set when nothing of it runs any more."""
        if not task.ended.done():
            task.host.send(Cancel(task.task_id))

    async def media_key(self, url: str) -> str:
        host = self._host()
        request = next(self._requests)
        future = host.media_keys[request] = asyncio.get_running_loop().create_future()
        host.send(MediaKeyOf(request, url))
        try:
            key: str | None = await future
        finally:
            host.media_keys.pop(request, None)
        if key is None:
            raise HostGoneError("the download host could not work out the media key")
        return key

    def kill(self, task: HostedTask | None = None) -> None:
        """Kill the host that runs task (every task it runs ends), or every host. Safe from any thread."""
        for host in [task.host] if task else list(self._processes):
            host.kill()

    async def close(self) -> None:
        """Kill every host and wait until each is reaped: no process left behind."""
        self._closed = True
        processes = list(self._processes)
        self.kill()
        if processes:
            await asyncio.gather(*(asyncio.shield(host.gone) for host in processes))
