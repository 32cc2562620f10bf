"""`python -m app` runs the service; `python -m app --dev` restarts it when its code changes;
`python -m app backup` and `python -m app restore` back up and restore a single host's task store;
`python -m app tenants` edits the users of the tenants file."""

import argparse
import asyncio
import gc
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from aiohttp import web

from app.api.application import create_app
from app.api.keys import DIRECTORY, MANAGER
from app.api.protocol_errors import AppRunner
from app.settings import ConfigError, Settings, load_settings
from app.store import backup
from app.store.base import StoreConnectError
from app.tenants import cli as tenants_cli
from app.tenants.tenants_file import TenantsFileError
from app.tls import reload_certificate, server_context

SHUTDOWN_TIMEOUT_S = 3.0
# From SIGTERM to exit, whatever happens: SHUTDOWN_TIMEOUT_S for open requests plus some slack.
STOP_DEADLINE_S = 4.5
RELOAD_POLL_S = 1.0
log = logging.getLogger("app")


def _exit_now(application: web.Application) -> None:
    """The stop overran its deadline: kill every worker and leave at once. Queued and running
    tasks are safe in the store; the next start resumes them."""
    log.error("stop did not finish within %g s: killing the workers and exiting now", STOP_DEADLINE_S)
    if MANAGER in application:
        application[MANAGER].kill_workers()
    logging.shutdown()
    os._exit(1)


def _reload(application: web.Application, tls: ssl.SSLContext | None, settings: Settings) -> None:
    """SIGHUP: a renewed certificate, and the tenants file, are read again without a restart."""
    if tls is not None:
        reload_certificate(tls, settings)
    application[DIRECTORY].reload("SIGHUP")


async def serve(settings: Settings) -> None:
    tls = server_context(settings)
    application = create_app(settings)
    runner = AppRunner(application, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
    await site.start()
    # Start-up objects live for the whole run: keep them out of every later GC pass.
    gc.freeze()
    scheme = "http" if tls is None else "https"
    log.info("listening on %s://%s:%d (data in %s)", scheme, settings.host, settings.port, settings.data_dir.resolve())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, application, tls, settings)
    await stop.wait()
    log.info("stopping: no new requests, workers stopped, their tasks resume on next start")
    # The stop is bounded here, not by a supervisor's timeout: a daemon thread, so it still fires
    # if the exit hangs after the event loop is gone (thread pool or multiprocessing joins).
    watchdog = threading.Timer(STOP_DEADLINE_S, _exit_now, args=(application,))
    watchdog.daemon = True
    watchdog.start()
    # Stops the listener first, then runs cleanup: manager.shutdown() kills workers and requeues.
    await runner.cleanup()
    log.info("stopped")


def _code_stamp() -> dict[Path, float]:
    root = Path(__file__).parent
    # The web page's files count too: app/api/webpage.py reads them once per process.
    paths = [*root.rglob("*.py"), *(root / "api" / "static").iterdir()]
    return {path: path.stat().st_mtime for path in paths}


def reload_loop() -> int:
    """Run the service in a child process and restart it whenever a source file changes."""
    command = [sys.executable, "-m", "app"]
    # SIGTERM to the reloader stops the service too, instead of leaving it orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    child = None
    try:
        while True:
            stamp = _code_stamp()
            child = subprocess.Popen(command)
            while child.poll() is None and _code_stamp() == stamp:
                time.sleep(RELOAD_POLL_S)
            if child.poll() is None:
                log.info("code changed: restarting")
                child.terminate()
                child.wait()
            elif child.returncode == 2:  # configuration error: restarting will not help
                return 2
            else:
                log.info("service exited with %s; restarting when the code changes", child.returncode)
                while _code_stamp() == stamp:
                    time.sleep(RELOAD_POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()


def _time_with_offset(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time like 2026-12-06T10:15:00+00:00") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add +00:00 or Z)")
    return moment


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="video-download-api service")
    parser.add_argument("--dev", action="store_true", help="restart automatically when the code changes")
    commands = parser.add_subparsers(dest="command", metavar="{backup,restore,tenants}")
    commands.add_parser("backup", help="back up the SQLite task store online, then prune old backups")
    restore = commands.add_parser("restore", help="put a SQLite backup back, with the service stopped")
    which = restore.add_mutually_exclusive_group()
    which.add_argument("--at", type=_time_with_offset, help="the newest backup taken at or before this time")
    which.add_argument("file", nargs="?", type=Path, help="this backup file (default: the newest backup)")
    tenants_cli.add_parser(commands)
    return parser.parse_args()


def _backup_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.command == "backup":
            made, pruned = backup.backup(settings)
            pruned_note = f", pruned {len(pruned)} older" if pruned else ""
            print(f"backup {made.path} {made.size} bytes {made.tasks} tasks{pruned_note}")
        else:
            source = args.file or backup.choose(settings, args.at).path
            tasks, aside = backup.restore(settings, source)
            print(f"restored {source} ({tasks} tasks) into {settings.db_path}", end="")
            print(f"; the replaced database is in {aside}" if aside else "; there was no database before")
    except backup.BackupError as exc:
        print(f"{args.command} refused: {exc}", file=sys.stderr)
        return 2 if settings.database_url else 1
    return 0


def main() -> int:
    args = _arguments()
    if args.command == "tenants":  # edits a file: needs no settings
        return tenants_cli.run(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command:
        return _backup_command(args, settings)
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.dev:
        return reload_loop()
    os.makedirs(settings.data_dir, exist_ok=True)
    try:
        asyncio.run(serve(settings))
    except TenantsFileError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except (OSError, StoreConnectError) as exc:
        log.error("cannot start: %s", exc)  # StoreConnectError names the database without its password
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
