"""Entry point of a worker process: one download, in its own process group, behind the guard.

Started from the fork server (see manager.py). It reports over `conn` in the worker protocol
(app/tasks/messages.py); the service, not the worker, writes what it reports to the task store.
"""

import ipaddress
import logging
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection

from app.tasks import address_guard
from app.tasks.messages import Failed, RunSpec


def _die_with_service(conn: Connection) -> None:
    """Kill this process group when the service's end of the pipe closes (service crashed or
    was killed), so no orphan keeps writing the .part file that a restarted service resumes."""
    try:
        while True:
            conn.recv()
    except (EOFError, OSError):
        pass
    os.killpg(0, signal.SIGKILL)


def run(spec: RunSpec, conn: Connection) -> None:
    # Own process group: cancelling kills yt-dlp's process and every FFmpeg it started.
    os.setsid()
    logging.basicConfig(
        stream=sys.stderr, level=spec.log_level, format="%(levelname)s %(name)s[%(process)d]: %(message)s"
    )
    threading.Thread(target=_die_with_service, args=(conn,), daemon=True).start()
    address_guard.install_socket_guard(ipaddress.ip_network(cidr) for cidr in spec.allow_networks)
    from app.tasks import downloader  # already imported in the fork server

    try:
        conn.send(downloader.download(spec, conn.send))
    except downloader.TaskError as exc:
        message = str(exc)
        if address_guard.refused:
            message = f"address guard refused a connection: {address_guard.refused[-1]} ({message})"
        conn.send(Failed(message))
    except Exception as exc:  # the service must learn why, whatever broke
        traceback.print_exc()
        conn.send(Failed(f"internal error: {type(exc).__name__}: {exc}"))


def send_media_key(url: str, conn: Connection) -> None:
    """Entry point of the short-lived process that tells the service which video url names (reuse)."""
    from app.tasks import media_keys  # already imported in the fork server

    try:
        conn.send(media_keys.media_key(url))
    finally:
        conn.close()
