"""What one download owns inside the download host (app/tasks/host.py), so it can be stopped alone.

Downloads run as threads of one process, and a thread cannot be killed: a cancelled download is
stopped through what it waits on. Its processes (FFmpeg, ffprobe) are killed, its connections shut
down, and its next progress report, retry or connect raises Cancelled.
"""

import contextlib
import socket
import subprocess
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import _socket  # the class socket methods are patched on, in typeshed


class Cancelled(Exception):
    """The service cancelled this download. Not an OSError: no retry loop takes it for a network error."""


class TaskScope:
    def __init__(self) -> None:
        # Connections the address guard refused to this download, newest last: named when it fails.
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._processes: list[subprocess.Popen[Any]] = []
        self._sockets: weakref.WeakSet[_socket.socket] = weakref.WeakSet()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("cancelled")

    def sleep(self, seconds: float) -> None:
        """time.sleep() that a cancel ends at once, raising Cancelled."""
        self._cancelled.wait(seconds)
        self.check()

    def adopt_process(self, process: "subprocess.Popen[Any]") -> None:
        with self._lock:
            if not self._cancelled.is_set():
                self._processes = [p for p in self._processes if p.returncode is None]
                self._processes.append(process)
                return
        process.kill()  # started while the cancel ran

    def adopt_socket(self, sock: "_socket.socket") -> None:
        """Called before sock connects: a cancelled download opens no connection."""
        with self._lock:
            self.check()
            self._sockets.add(sock)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            processes, sockets = list(self._processes), list(self._sockets)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for sock in sockets:
            with contextlib.suppress(OSError):  # closed already, or never connected
                sock.shutdown(socket.SHUT_RDWR)


_thread = threading.local()
# Code that runs outside any download (a worker-like test process, the media key) shares this one.
_unscoped = TaskScope()


def current() -> TaskScope:
    scope: TaskScope = getattr(_thread, "scope", _unscoped)
    return scope


def enter(scope: TaskScope) -> None:
    """From now on, this thread works for scope's download."""
    _thread.scope = scope


def adopt_started_processes() -> None:
    """Every process started from now on belongs to the scope of the thread that starts it
    (yt-dlp's Popen and subprocess.run() both go through Popen.__init__)."""
    started = subprocess.Popen.__init__

    def init(self: "subprocess.Popen[Any]", *args: Any, **kwargs: Any) -> None:
        started(self, *args, **kwargs)
        current().adopt_process(self)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]  # patching the class is the point
