"""SQLite backup and restore benchmark (prints figures; not a test).

    .venv/bin/python bench/backup_bench.py [--tasks 10000 100000]

For each count: a store filled with that many finished tasks (rows like bench/store_bench.py's),
then `backup` (online backup API, integrity_check, fsync, rename) idle and while a writer inserts
tasks one transaction each as fast as it can, and `restore` of the backup (copy, integrity_check,
fsync, rename). Runs on the file system of the temporary folder (--dir to choose another).
"""

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from store_bench import COLUMNS, rows  # noqa: E402

from app.store.backup import backup, restore  # noqa: E402
from app.store.sqlite import SQLiteTaskStore  # noqa: E402
from tests.support.helpers import make_settings  # noqa: E402


def fill(db: Path, count: int) -> None:
    # Closed, not only its connection: an open store holds the lock a restore waits for.
    asyncio.run(SQLiteTaskStore(db).close())
    with sqlite3.connect(db) as connection:
        connection.executemany(f"INSERT INTO tasks ({COLUMNS}) VALUES ({', '.join('?' * 13)})", rows(count))


def writer(db: Path, stop: threading.Event, written: list[int]) -> None:
    """The service's write pattern: one short transaction per task, synchronous=FULL."""
    with sqlite3.connect(db, isolation_level=None) as connection:
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=5000")
        while not stop.is_set():
            task_id = uuid.uuid4().hex
            connection.execute(
                "INSERT INTO tasks (id, url, options, dedupe_key, status, created_at, updated_at)"
                " VALUES (?, 'http://127.0.0.1/x', '{}', ?, 'completed', 0, 0)",
                (task_id, task_id),
            )
            written[0] += 1


def timed_backup(settings) -> tuple[float, int, int]:
    started = time.perf_counter()
    made, _ = backup(settings)
    return time.perf_counter() - started, made.size, made.tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dir", type=Path, default=None, help="where the store and backups live")
    args = parser.parse_args()
    print(f"{'tasks':>8} {'size MB':>8} {'backup s':>9} {'under load s':>13} {'writes during':>14} {'restore s':>10}")
    for count in args.tasks:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            settings = make_settings(Path(folder))
            fill(settings.db_path, count)
            idle_s, size, tasks = timed_backup(settings)
            assert tasks == count, (tasks, count)
            time.sleep(1)  # the next backup gets a name of its own (one a second)
            stop, written = threading.Event(), [0]
            load = threading.Thread(target=writer, args=(settings.db_path, stop, written))
            load.start()
            time.sleep(0.5)
            before = written[0]
            loaded_s, _, _ = timed_backup(settings)
            during = written[0] - before
            stop.set()
            load.join()
            started = time.perf_counter()
            restore(settings, sorted(settings.backups_dir.iterdir())[-1])
            restore_s = time.perf_counter() - started
            print(f"{count:>8} {size / 1e6:>8.1f} {idle_s:>9.2f} {loaded_s:>13.2f} {during:>14} {restore_s:>10.2f}")


if __name__ == "__main__":
    main()
