"""pgBackRest benchmark (prints figures; not a test): backup and restore of the task store, and
the WAL archive's lag under load.

    .venv/bin/python bench/pgbackrest_bench.py [--sizes 10000 100000] [--rate 200] [--seconds 20]

backup    a full backup (start-fast) of a cluster whose task store holds N tasks (and their file
          rows): wall time, the database's size, and what the backup takes in the repository
restore   that backup into a new, empty data directory (`pgbackrest restore`), then the restored
          server started until recovery has replayed the archived WAL and it promotes (tasks
          counted): both times
WAL lag   the app's PostgresTaskStore takes --rate submissions per second for --seconds: each
          second, now - pg_stat_archiver.last_archived_time, the .ready files waiting in pg_wal
          and the WAL bytes written and not yet archived

The server is a throwaway PostgreSQL of Debian's `postgresql` (tests/support/postgres.py) with its
durable defaults (fsync on), archive_mode on and `archive_command = pgbackrest archive-push %p`
with async push (archive-async, a spool directory), as the pgbackrest role configures it. The
repository is posix, in the same temp dir (same disk: the figures are floors of a real repository
host), encrypted aes-256-cbc, compress-type gz (pgBackRest's default). Needs `pgbackrest`
(`apt-get install -y pgbackrest`, 2.45 on Debian 12) and root (the server runs as `postgres`).
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.api.contract import ProcessRequest  # noqa: E402
from app.store.postgres import PostgresTaskStore  # noqa: E402
from app.store.records import NewTask  # noqa: E402
from tests.support.helpers import free_port  # noqa: E402
from tests.support.postgres import PostgresServer, _bindir  # noqa: E402

STANZA = "bench"
# Concurrent submitters of the load: each waits for its commit (fsync on), so enough of them that
# a slow commit does not hold the rate down.
CALLERS = 50
WAL_SEGMENT_BYTES = 16 * 1024 * 1024  # initdb's default
DATABASE = "tasks"
# N tasks, a fifth of each final status; each completed one with a video and an audio file row, the
# options and video_info as the service records them.
FILL = """
INSERT INTO tasks (id, url, options, dedupe_key, status, progress, downloaded_bytes, total_bytes, message,
                   video_info, attempts, video_file_id, audio_file_id, created_at, updated_at, started_at,
                   finished_at, owner)
SELECT md5('t' || n), 'https://videos.example.com/watch?v=' || md5('u' || n), %(options)s::jsonb, md5('d' || n),
       (ARRAY['completed', 'completed', 'completed', 'failed', 'cancelled'])[n %% 5 + 1], 100, 52428800, 52428800,
       'completed', %(info)s::jsonb, 1,
       CASE WHEN n %% 5 < 3 THEN md5('v' || n) END, CASE WHEN n %% 5 < 3 THEN md5('a' || n) END,
       %(now)s - n, %(now)s - n, %(now)s - n, %(now)s - n, 'api-1'
FROM generate_series(1, %(count)s) AS n;
INSERT INTO files (id, task_id, kind, path, name, size, created_at, node)
SELECT f.id, t.id, f.kind, t.id || '/' || f.kind || '.' || f.ext, 'Some video title.' || f.ext, 26214400,
       t.finished_at, 'api-1'
FROM tasks t, LATERAL (VALUES (t.video_file_id, 'video', 'mp4'), (t.audio_file_id, 'audio', 'mp3')) AS f (id, kind, ext)
WHERE t.status = 'completed';
"""
VIDEO_INFO = {
    "title": "Some video title",
    "duration": 213,
    "uploader": "Somebody",
    "width": 1920,
    "height": 1080,
    "fps": 30,
    "vcodec": "avc1.640028",
    "acodec": "mp4a.40.2",
    "webpage_url": "https://videos.example.com/watch?v=0123456789",
}


def as_postgres(*command: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def postgres_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, "postgres", "postgres")
    return path


class Repository:
    """A posix pgBackRest repository and its stanza for one PostgreSQL server."""

    def __init__(self, server: PostgresServer) -> None:
        base = server.dir
        self.path = postgres_dir(base / "repo")
        self.config = base / "pgbackrest.conf"
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.path}\n"
            "repo1-cipher-type=aes-256-cbc\n"
            f"repo1-cipher-pass={secrets.token_urlsafe(32)}\n"
            "repo1-retention-full=2\n"
            "archive-async=y\n"
            f"spool-path={postgres_dir(base / 'spool')}\n"
            f"lock-path={postgres_dir(base / 'lock')}\n"
            f"log-path={postgres_dir(base / 'log')}\n"
            "log-level-console=warn\n"
            "log-level-file=info\n"
            "process-max=2\n"
            "start-fast=y\n"
            f"[{STANZA}]\n"
            f"pg1-path={server.data}\n"
            f"pg1-socket-path={server.socket_dir}\n"
            f"pg1-port={server.port}\n"
            "pg1-user=postgres\n"
        )
        self.config.chmod(0o600)  # it holds the cipher passphrase
        shutil.chown(self.config, "postgres", "postgres")

    def run(self, command: str, *options: str) -> str:
        return as_postgres("pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *options, command).stdout

    def archive_command(self) -> str:
        return f"pgbackrest --config={self.config} --stanza={STANZA} archive-push %p"

    def last_backup(self) -> dict:
        return json.loads(self.run("info", "--output=json"))[0]["backup"][-1]


def admin(server: PostgresServer, dbname: str = "postgres", port: int | None = None) -> psycopg.Connection:
    return psycopg.connect(
        host=str(server.socket_dir), port=port or server.port, user="postgres", dbname=dbname, autocommit=True
    )


def mb(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def fill(server: PostgresServer, count: int) -> tuple[float, int]:
    """A new task store of `count` tasks (the previous one dropped); returns (seconds, database bytes)."""
    with admin(server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    url = server.url(DATABASE)

    async def schema() -> None:
        await (await PostgresTaskStore.connect(url, "api-1", 30.0)).close()

    asyncio.run(schema())
    started = time.perf_counter()
    options = json.dumps(ProcessRequest(url="https://videos.example.com/").options())
    with admin(server, DATABASE) as conn:
        values = {"options": options, "info": json.dumps(VIDEO_INFO), "now": time.time(), "count": count}
        for statement in FILL.split(";")[:2]:
            conn.execute(statement, values)
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return time.perf_counter() - started, size


def backup_and_restore(server: PostgresServer, repository: Repository, count: int) -> None:
    filled_s, db_size = fill(server, count)
    started = time.perf_counter()
    repository.run("backup", "--type=full")
    backup_s = time.perf_counter() - started
    info = repository.last_backup()["info"]
    target = postgres_dir(server.dir / f"restored-{count}")
    target.chmod(0o700)
    started = time.perf_counter()
    repository.run("restore", f"--pg1-path={target}", "--archive-mode=off")
    restore_s = time.perf_counter() - started
    port = free_port()
    log = server.dir / f"restored-{count}.log"
    options = f"-p {port} -k {server.socket_dir} -c listen_addresses= -c archive_mode=off"
    started = time.perf_counter()
    as_postgres(_bindir() / "pg_ctl", "-D", target, "-l", log, "-w", "-t", "300", "-o", options, "start")
    with admin(server, DATABASE, port) as conn:
        while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            time.sleep(0.05)
        restored = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    recovery_s = time.perf_counter() - started
    as_postgres(_bindir() / "pg_ctl", "-D", target, "-m", "fast", "-w", "stop")
    shutil.rmtree(target)
    assert restored == count, (restored, count)
    print(
        f"{count:>8,} tasks  store {mb(db_size):>9} (filled in {filled_s:5.1f} s)  cluster {mb(info['size']):>9}"
        f"  full backup {backup_s:6.1f} s -> repository {mb(info['repository']['delta']):>8}"
        f"  restore {restore_s:5.1f} s + recovery to promoted {recovery_s:5.1f} s = {restore_s + recovery_s:5.1f} s"
    )


async def submissions(url: str, rate: int, seconds: float) -> tuple[int, float]:
    """`rate` store.create() per second for `seconds`, paced over CALLERS concurrent callers (a commit
    may take a while on a loaded machine); returns how many, in how long."""
    store = await PostgresTaskStore.connect(url, "api-1", 30.0)
    options = ProcessRequest(url="https://videos.example.com/").options()
    done = 0
    start = time.monotonic()

    async def caller(offset: int) -> None:
        nonlocal done
        n = offset
        while (due := start + n / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task_id = uuid.uuid4().hex
            new = NewTask(
                id=task_id,
                url=f"https://videos.example.com/{task_id}",
                options=options,
                dedupe_key=task_id,
                message="",
                tenant="admin",
            )
            await store.create(new, 10**9)
            done += 1
            n += CALLERS

    try:
        await asyncio.gather(*(caller(offset) for offset in range(CALLERS)))
    finally:
        await store.close()
    return done, time.monotonic() - start


def archive_lag(server: PostgresServer, rate: int, seconds: float) -> None:
    samples = []
    status_dir = server.data / "pg_wal" / "archive_status"

    def sample(conn: psycopg.Connection, start: float) -> None:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - last_archived_time), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
            " last_archived_wal, archived_count, failed_count FROM pg_stat_archiver"
        ).fetchone()
        lag_s, lsn, last_wal, archived, failed = row
        pending = sum(1 for name in os.listdir(status_dir) if name.endswith(".ready"))
        # WAL written past the end of the last archived segment (a .backup file names its segment too).
        log_id, segment = int(last_wal[8:16], 16), int(last_wal[16:24], 16)
        archived_end = (log_id * 0x100000000) + (segment + 1) * WAL_SEGMENT_BYTES
        unarchived = max(0.0, float(lsn) - archived_end)
        samples.append((time.monotonic() - start, float(lag_s or 0), pending, unarchived, archived, failed))

    async def load_and_sample() -> tuple[int, float]:
        start = time.monotonic()
        load = asyncio.create_task(submissions(server.url(DATABASE), rate, seconds))
        with admin(server) as conn:
            while not load.done():
                sample(conn, start)
                await asyncio.sleep(1.0)
            for _ in range(5):  # the tail: how soon the archive catches up once the load stops
                sample(conn, start)
                await asyncio.sleep(1.0)
        return await load

    with admin(server) as conn:
        conn.execute("SELECT pg_switch_wal()")  # start from an archived segment boundary
        time.sleep(2)
        lsn_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    done, elapsed = asyncio.run(load_and_sample())
    with admin(server) as conn:
        written = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn_before,)).fetchone()[0]
        timeout = conn.execute("SHOW archive_timeout").fetchone()[0]
    print(
        f"\nWAL archive lag: {done} submissions through PostgresTaskStore.create in {elapsed:.1f} s"
        f" ({done / elapsed:.0f}/s, asked {rate}/s), {mb(float(written))} of WAL"
        f" ({mb(float(written) / elapsed)}/s), archive_timeout {timeout}"
    )
    print("   t (s)  lag (s)  .ready  unarchived  archived  failed")
    for at, lag_s, pending, unarchived, archived, failed in samples:
        print(f"  {at:6.1f}  {lag_s:7.1f}  {pending:6d}  {mb(unarchived):>10}  {archived:8d}  {failed:6d}")
    print(
        f"  max lag {max(s[1] for s in samples):.1f} s, max .ready {max(s[2] for s in samples)},"
        f" max unarchived {mb(max(s[3] for s in samples))}, archive failures {samples[-1][5]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rate", type=int, default=200, help="submissions per second in the WAL lag part")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--archive-timeout",
        default="60s",
        help="the server's archive_timeout: a segment is archived at least this often (0: when full)",
    )
    args = parser.parse_args()
    if shutil.which("pgbackrest") is None:
        sys.exit("pgbackrest is not installed: apt-get install -y pgbackrest")
    server = PostgresServer(durable=True).start()
    try:
        repository = Repository(server)
        with admin(server) as conn:
            for name, value in (
                ("wal_level", "replica"),
                ("archive_mode", "on"),
                ("archive_command", repository.archive_command()),
                ("archive_timeout", args.archive_timeout),
            ):
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        server.restart()
        repository.run("stanza-create")
        repository.run("check")
        version = as_postgres("pgbackrest", "version").stdout.strip()
        with admin(server) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
        print(f"{version}, PostgreSQL {pg}; posix repository aes-256-cbc, gz, process-max 2, archive-push async\n")
        for count in args.sizes:
            backup_and_restore(server, repository, count)
        archive_lag(server, args.rate, args.seconds)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print("kept", server.dir)
        else:
            server.stop()


if __name__ == "__main__":
    main()
