"""Task store benchmark (prints figures; not a test): PostgreSQL against SQLite, in one run.

    .venv/bin/python bench/store_bench.py [--tasks 100000] [--seconds 3]

reads   get by id and page-of-50 (first page, keyset page deep in the table, one status) per
        second with --tasks stored tasks, one caller and 16 concurrent callers; PostgreSQL over
        TCP loopback and over its unix socket
claims  claim_next throughput with 2/4/8 concurrent claimers (one store each) on PostgreSQL,
        and with 8 claimers when counts are one counter row per status instead of delta rows

PostgreSQL is a throwaway server of Debian's `postgresql` (tests/support/postgres.py) with its durable
defaults (fsync on); SQLite runs with the service's settings (WAL, synchronous=FULL). Client and
server share this machine's cores, so the figures are floors.
"""

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.store.postgres import _FOLD_COUNTS, PostgresTaskStore  # noqa: E402
from app.store.sqlite import SQLiteTaskStore  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

OPTIONS = {
    "audio_bitrate": "192",
    "audio_format": "mp3",
    "extract_audio": True,
    "keep_video": True,
    "video_quality": "best",
}
STATUSES = ("completed", "completed", "completed", "failed", "cancelled")
COLUMNS = (
    "id, url, options, dedupe_key, status, progress, downloaded_bytes, total_bytes, message, created_at,"
    " updated_at, started_at, finished_at"
)
# The alternative to delta rows: one counter row per status, updated in place by the trigger.
COUNTER_ROWS = """
CREATE TABLE status_counts (status TEXT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO status_counts SELECT s, 0 FROM unnest(ARRAY['queued', 'downloading', 'processing', 'completed',
    'failed', 'cancelled']) AS s;
CREATE OR REPLACE FUNCTION tasks_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN UPDATE status_counts SET n = n - 1 WHERE status = OLD.status; END IF;
    IF TG_OP <> 'DELETE' THEN UPDATE status_counts SET n = n + 1 WHERE status = NEW.status; END IF;
    RETURN NULL;
END $$;
"""


def rows(count: int, status=None):
    now = time.time()
    options = json.dumps(OPTIONS)
    for n in range(count):
        task_id, at = uuid.uuid4().hex, now - count + n
        yield (
            task_id,
            f"http://127.0.0.1/video/{n}.mp4",
            options,
            task_id,
            status or STATUSES[n % 5],
            100.0,
            123456,
            123456,
            "completed",
            at,
            at,
            at,
            at,
        )


def fill_sqlite(path: Path, count: int) -> list[str]:
    """count finished tasks in one transaction; returns their ids, oldest first."""
    SQLiteTaskStore(path)._db.close()  # the schema
    tasks = list(rows(count))
    with sqlite3.connect(path) as db:
        db.executemany(f"INSERT INTO tasks ({COLUMNS}) VALUES ({', '.join('?' * 13)})", tasks)
    return [task[0] for task in tasks]


def fill_postgres(url: str, count: int, status=None) -> None:
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(f"COPY tasks ({COLUMNS}) FROM STDIN") as copy:
            for row in rows(count, status):
                copy.write_row(row)
        for sql in _FOLD_COUNTS:  # the load's count deltas, as the store folds them in use
            conn.execute(sql)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE tasks, task_counts")


async def rate(call, seconds: float, callers: int = 1) -> str:
    """Calls per second of call(i) by `callers` concurrent loops, and the median latency."""
    latencies = []
    stop = time.perf_counter() + seconds

    async def loop(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)
            i += callers

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(callers)))
    elapsed = time.perf_counter() - started
    return f"{len(latencies) / elapsed:9.0f}/s  p50 {statistics.median(latencies) * 1e6:7.0f} us"


async def reads(name: str, store, seconds: float, callers_levels=(1, 16)) -> None:
    newest = await store.page(None, 1000, 0)
    ids = [task["id"] for task in newest]
    random.seed(1)
    ids = random.sample(ids, len(ids))
    deep = newest[-1]["seq"] - 50_000 if newest[-1]["seq"] > 60_000 else newest[-1]["seq"]
    cases = {
        "get by id": lambda i: store.get(ids[i % len(ids)]),
        "page 50 (first)": lambda i: store.page(None, 50, 0),
        "page 50 (keyset, deep)": lambda i: store.page(None, 50, 0, before=deep - i % 1000),
        "page 50 (status=failed)": lambda i: store.page("failed", 50, 0),
        "counts": lambda i: store.counts(),
    }
    for label, call in cases.items():
        for callers in callers_levels:
            print(f"  {name:22} {label:24} x{callers:<3} {await rate(call, seconds, callers)}", flush=True)


async def claims(url: str, claimers: int, queued: int) -> str:
    fill_postgres(url, queued, status="queued")
    stores = [await PostgresTaskStore.connect(url, f"n{index}", 30, pool_size=1) for index in range(claimers)]

    async def claim_all(store, index) -> int:
        claimed = 0
        while await store.claim_next() is not None:
            claimed += 1
        return claimed

    started = time.perf_counter()
    counts = await asyncio.gather(*(claim_all(store, i) for i, store in enumerate(stores)))
    elapsed = time.perf_counter() - started
    for store in stores:
        await store.close()
    assert sum(counts) == queued, counts
    spread = f"{min(counts)}-{max(counts)}"
    return f"{queued / elapsed:7.0f} claims/s ({queued} tasks in {elapsed:.2f} s; per claimer {spread})"


async def new_database(server: PostgresServer) -> str:
    """URL of a new database with the store's schema."""
    url = server.url(server.create_database())
    await (await PostgresTaskStore.connect(url)).close()
    return url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--claim-tasks", type=int, default=2000)
    args = parser.parse_args()
    server = PostgresServer(durable=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"reads with {args.tasks:,} tasks ({args.seconds:g} s each)")
            sqlite_path = Path(tmp) / "tasks.sqlite3"
            fill_sqlite(sqlite_path, args.tasks)
            sqlite = SQLiteTaskStore(sqlite_path)
            await reads("SQLite", sqlite, args.seconds, callers_levels=(1,))  # runs on the loop: 1 = any
            await sqlite.close()

            url = await new_database(server)
            fill_postgres(url, args.tasks)
            pg = await PostgresTaskStore.connect(url)
            await reads("PostgreSQL (TCP)", pg, args.seconds)
            await pg.close()
            pg = await PostgresTaskStore.connect(server.socket_url(url.rsplit("/", 1)[1]))
            await reads("PostgreSQL (socket)", pg, args.seconds)
            await pg.close()

        print(f"claims on PostgreSQL (TCP, fsync on), {args.claim_tasks} queued tasks")
        for claimers in (1, 2, 4, 8):
            url = await new_database(server)
            print(f"  {claimers} claimers: {await claims(url, claimers, args.claim_tasks)}", flush=True)
        url = await new_database(server)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(COUNTER_ROWS)
        print(f"  8 claimers, one counter row per status: {await claims(url, 8, args.claim_tasks)}")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
