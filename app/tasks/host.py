"""The download host: one process, started by the service (app/tasks/host_client.py), that runs each
download in a thread of its own behind the address guard, and works out media keys.

    python -m app.tasks.host FD     FD: its end of the control connection (app/tasks/messages.py)

One process for all downloads, not one a download: CPython writes to every object it touches (its
reference counts), so a worker forked from a process with yt-dlp loaded soon copies ~22 MB of the
pages it shared; threads of one process share them (bench/service_bench.py, rss section). The
downloads spend their time in sockets, files and FFmpeg, outside the interpreter lock.

The service's end of the connection closing (a stop or a crash of the service) kills this process
group: the host and every FFmpeg it started; the lifeline covers the host's start-up.
"""

import app.tasks.lifeline  # noqa: F401, I001  # first: see lifeline.py

import gc
import ipaddress
import logging
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection

from app.tasks import address_guard, downloader, media_keys, task_scope
from app.tasks.messages import (
    Cancel,
    Failed,
    FromHost,
    HostConfig,
    MediaKeyIs,
    MediaKeyOf,
    Report,
    RunSpec,
    TaskEnded,
    TaskReport,
)

log = logging.getLogger(__name__)


class Host:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sending = threading.Lock()  # one message at a time on the connection, from any thread
        self._scopes: dict[str, task_scope.TaskScope] = {}

    def send(self, message: FromHost) -> None:
        with self._sending:
            self._conn.send(message)

    def serve(self) -> None:
        """Until the service's end closes: start, cancel and answer what it asks."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                os.killpg(0, signal.SIGKILL)
                return
            match message:
                case RunSpec():
                    scope = self._scopes[message.task_id] = task_scope.TaskScope()
                    threading.Thread(target=self._run, args=(message, scope), name=f"task-{message.task_id}").start()
                case Cancel():
                    if (cancelled := self._scopes.get(message.task_id)) is not None:
                        cancelled.cancel()
                case MediaKeyOf():
                    threading.Thread(target=self._media_key, args=(message,), name="media-key").start()

    def _run(self, spec: RunSpec, scope: task_scope.TaskScope) -> None:
        task_scope.enter(scope)

        def report(message: Report) -> None:
            self.send(TaskReport(spec.task_id, message))

        try:
            report(downloader.download(spec, report))
        except task_scope.Cancelled:
            report(Failed("cancelled"))
        except downloader.TaskError as exc:
            message = str(exc)
            if scope.cancelled:
                message = "cancelled"
            elif scope.refused:
                message = f"address guard refused a connection: {scope.refused[-1]} ({message})"
            report(Failed(message))
        except Exception as exc:  # the service must learn why, whatever broke
            traceback.print_exc()
            report(Failed("cancelled" if scope.cancelled else f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            scope.cancel()  # whatever it left running: an FFmpeg of a failed step
            del self._scopes[spec.task_id]
            self.send(TaskEnded(spec.task_id))
            # yt-dlp's objects point at each other: a download leaves cycles that the collector's
            # thresholds would keep for long, and the host grew by ~20 MB within 90 downloads.
            gc.collect()

    def _media_key(self, request: MediaKeyOf) -> None:
        try:
            key = media_keys.media_key(request.url)
        except Exception:
            log.exception("media key of a URL failed")
            key = None
        self.send(MediaKeyIs(request.request, key))


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    config = conn.recv()
    assert isinstance(config, HostConfig), config
    logging.basicConfig(
        stream=sys.stderr,
        level=config.log_level,
        format="%(levelname)s %(name)s[%(process)d %(threadName)s]: %(message)s",
    )
    address_guard.install_socket_guard(ipaddress.ip_network(cidr) for cidr in config.allow_networks)
    task_scope.adopt_started_processes()
    # What start-up loaded (yt-dlp, its compiled patterns) lives as long as the host: kept out of
    # every collection, so the one after each download takes well under a millisecond, not ~35 ms.
    gc.freeze()
    Host(conn).serve()


if __name__ == "__main__":
    main()
