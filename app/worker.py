"""Entry point of a worker process: one download, in its own process group, behind the guard.

Started from the fork server (see manager.py). Reports go to the service over `conn` as small
dicts; the service, not the worker, writes them to the task store.
"""

import ipaddress
import logging
import os
import signal
import sys
import threading
import traceback

from app import guard


def _die_with_service(conn) -> None:
    """Kill this process group when the service's end of the pipe closes (service crashed or
    was killed), so no orphan keeps writing the .part file that a restarted service resumes."""
    try:
        while True:
            conn.recv()
    except (EOFError, OSError):
        pass
    os.killpg(0, signal.SIGKILL)


def run(spec: dict, conn) -> None:
    # Own process group: cancelling kills yt-dlp's process and every FFmpeg it started.
    os.setsid()
    logging.basicConfig(
        stream=sys.stderr, level=spec["log_level"], format="%(levelname)s %(name)s[%(process)d]: %(message)s"
    )
    threading.Thread(target=_die_with_service, args=(conn,), daemon=True).start()
    guard.install_socket_guard(ipaddress.ip_network(cidr) for cidr in spec["allow_networks"])
    from app import ytdl  # already imported in the fork server

    try:
        result = ytdl.download(spec, conn.send)
    except ytdl.TaskError as exc:
        message = str(exc)
        if guard.refused:
            message = f"address guard refused a connection: {guard.refused[-1]} ({message})"
        conn.send({"type": "error", "message": message})
    except Exception as exc:  # the service must learn why, whatever broke
        traceback.print_exc()
        conn.send({"type": "error", "message": f"internal error: {type(exc).__name__}: {exc}"})
    else:
        conn.send({"type": "done", **result})
