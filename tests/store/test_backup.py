"""Backups of the SQLite task store: `python -m app backup` while the service works, `restore`
with the service stopped (and refused while it runs, or from a bad backup), pruning, the metric."""

import asyncio
import os
import re
import resource
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.store.backup import BackupError, backup, backups, prune
from app.store.base import StoreConnectError
from app.store.records import NewTask
from app.store.sqlite import SQLiteTaskStore, lock_file
from tests.support.helpers import ON_POSTGRES, REPO, make_settings

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="SQLite backups; PostgreSQL's are pgBackRest's")
LINE = re.compile(r"backup (\S+) ([0-9]+) bytes ([0-9]+) tasks")


def app_command(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "VIDEO_API_DATA_DIR": str(data_dir), **env}
    command = [sys.executable, "-m", "app", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)


def task_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM tasks").fetchone()[0]


def store_with_tasks(data_dir: Path, n: int, first: int = 0) -> None:
    async def fill() -> None:
        store = SQLiteTaskStore(data_dir / "db" / "tasks.sqlite3")
        for i in range(first, first + n):
            url = f"http://127.0.0.1/{i}"
            await store.create(
                NewTask(id=f"t{i}", url=url, options={}, dedupe_key=url, message="", tenant="admin"), 1000
            )
        await store.close()

    asyncio.run(fill())


def last_backup_metric(service) -> float:
    metrics = service.http.get(service.base + "/metrics", timeout=10).text
    return float(re.search(r"^video_api_backup_last_success_timestamp_seconds (\S+)$", metrics, re.M)[1])


def test_a_backup_taken_while_tasks_are_submitted_is_whole_and_shows_in_metrics(service_factory, media_server):
    service = service_factory(VIDEO_API_RATE_PER_MINUTE="0", VIDEO_API_QUEUE_LIMIT="1000000")
    assert last_backup_metric(service) == 0
    submitted: list[str] = []
    stop = threading.Event()

    def submit_forever() -> None:
        while not stop.is_set():
            submitted.append(service.submit(media_server.url(f"/media/sample.mp4?noffmpeg=1&n={len(submitted)}")))

    submitter = threading.Thread(target=submit_forever)
    submitter.start()
    try:
        lines = [app_command(service.data_dir, "backup").stdout for _ in range(3)]
    finally:
        stop.set()
        submitter.join()
    counts = []
    for line in lines:
        match = LINE.fullmatch(line.strip())
        assert match, line
        path = Path(match[1])
        assert path.parent == service.data_dir / "backups" and int(match[2]) == path.stat().st_size
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert task_count(path) == int(match[3])
        counts.append(int(match[3]))
    assert counts == sorted(counts) and counts[-1] <= len(submitted), (counts, len(submitted))
    assert not list((service.data_dir / "backups").glob(".*")), "a temporary file was left behind"
    assert last_backup_metric(service) == backups(service.data_dir / "backups")[-1].taken.timestamp()


def test_a_restore_brings_back_the_backup_and_what_came_after_is_404(service_factory, media_server):
    service = service_factory()
    task_a = service.submit(media_server.url("/media/sample.mp4?noffmpeg=1"))
    status_a = service.wait(task_a, lambda s: s["status"] == "completed")
    assert app_command(service.data_dir, "backup").returncode == 0
    task_b = service.submit(media_server.url("/media/sample.mp4?noffmpeg=1&b=1"))
    service.wait(task_b, lambda s: s["status"] == "completed")
    refused = app_command(service.data_dir, "restore")
    assert refused.returncode == 1 and "the service is running" in refused.stderr and "stop it first" in refused.stderr
    service.stop()

    done = app_command(service.data_dir, "restore")
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout and "(1 tasks)" in done.stdout, done.stdout
    aside = next((service.data_dir / "db").glob("replaced-*"))
    assert task_count(aside / "tasks.sqlite3") == 2 and str(aside) in done.stdout
    again = service_factory(data_dir=service.data_dir)
    restored = again.get(f"/api/status/{task_a}")
    assert restored["status"] == "completed" and restored["files"] == status_a["files"]
    assert again.http.get(again.base + restored["files"]["video"], timeout=10).status_code == 200
    assert again.http.get(f"{again.base}/api/status/{task_b}", timeout=10).status_code == 404
    task_c = again.submit(media_server.url("/media/sample.mp4?noffmpeg=1&c=1"))
    assert again.wait(task_c, lambda s: s["status"] in ("completed", "failed"))["status"] == "completed"


def test_backups_taken_within_one_second_are_all_kept(tmp_path):
    settings = make_settings(tmp_path)
    store_with_tasks(settings.data_dir, 1)
    first, _ = backup(settings)
    store_with_tasks(settings.data_dir, 1, first=1)
    second, _ = backup(settings)
    assert first.path != second.path
    assert [task_count(b.path) for b in backups(settings.backups_dir)] == [1, 2]
    with pytest.raises(BackupError, match="already exists; nothing was overwritten"):
        backup(settings, now=second.taken)
    assert task_count(second.path) == 2
    assert not list(settings.backups_dir.glob(".*")), "a temporary file was left behind"


def test_restore_at_takes_the_newest_backup_at_or_before_that_time(tmp_path):
    settings = make_settings(tmp_path)
    store_with_tasks(settings.data_dir, 1)
    start = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    backup(settings, now=start)
    store_with_tasks(settings.data_dir, 1, first=1)
    backup(settings, now=start + timedelta(hours=1))

    early = app_command(settings.data_dir, "restore", "--at", "2026-12-06 10:59:59+00")
    assert early.returncode == 0, early.stderr
    assert "tasks-20261206T100000.000000Z.sqlite3 (1 tasks)" in early.stdout
    # The same instant in another offset.
    late = app_command(settings.data_dir, "restore", "--at", "2026-12-06T12:00:00+01:00")
    assert "tasks-20261206T110000.000000Z.sqlite3 (2 tasks)" in late.stdout, late.stderr
    assert task_count(settings.db_path) == 2
    assert len(list((settings.data_dir / "db").glob("replaced-*"))) == 2
    none = app_command(settings.data_dir, "restore", "--at", "2026-12-06T09:59:59Z")
    assert none.returncode == 1 and "no backup taken at or before 2026-12-06T09:59:59+00:00" in none.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_backup_is_refused_and_nothing_changes(tmp_path, damage):
    settings = make_settings(tmp_path)
    store_with_tasks(settings.data_dir, 50)
    made, _ = backup(settings)
    data = made.path.read_bytes()
    made.path.write_bytes(b"not a database" * 100 if damage == "garbage" else data[: len(data) // 2])
    before = {path.name: path.read_bytes() for path in settings.db_path.parent.iterdir()}

    refused = app_command(settings.data_dir, "restore", str(made.path))
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.startswith("restore refused: ") and str(made.path) not in refused.stdout
    assert {path.name: path.read_bytes() for path in settings.db_path.parent.iterdir()} == before


def test_a_backup_that_cannot_be_written_says_why_and_leaves_nothing(tmp_path):
    settings = make_settings(tmp_path)
    store_with_tasks(settings.data_dir, 1000)
    environment = {**os.environ, "VIDEO_API_DATA_DIR": str(settings.data_dir)}
    # A file size limit below the database's: the backup folder's disk is full, as far as SQLite can tell.
    full = subprocess.run(
        [sys.executable, "-m", "app", "backup"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024)),
    )
    assert full.returncode == 1, full.stdout
    assert full.stderr.startswith(f"backup refused: cannot back up {settings.db_path} into {settings.backups_dir}: ")
    assert "Traceback" not in full.stderr, full.stderr
    assert list(settings.backups_dir.iterdir()) == []


def test_pruning_deletes_old_backups_but_never_the_newest(tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    now = datetime(2026, 12, 6, tzinfo=UTC)
    for days in (30, 20, 10):
        (folder / f"tasks-{(now - timedelta(days=days)).strftime('%Y%m%dT%H%M%SZ')}.sqlite3").touch()
    (folder / ".tasks-20261101T000000Z.sqlite3.7.tmp").touch()  # not a backup: left alone
    assert len(prune(folder, 7, now)) == 2
    assert [b.taken for b in backups(folder)] == [now - timedelta(days=10)]
    assert prune(folder, 7, now) == []
    assert len(list(folder.iterdir())) == 2


def test_a_backup_prunes_with_the_keep_setting(tmp_path):
    settings = make_settings(tmp_path, backup_keep_days=2, backup_dir=str(tmp_path / "elsewhere"))
    store_with_tasks(settings.data_dir, 1)
    now = datetime(2026, 12, 6, tzinfo=UTC)
    for days in (3, 1, 0):
        backup(settings, now=now - timedelta(days=days))
    assert [b.taken for b in backups(tmp_path / "elsewhere")] == [now - timedelta(days=1), now]


def test_a_service_does_not_start_while_a_restore_holds_the_lock(tmp_path):
    db = tmp_path / "db" / "tasks.sqlite3"
    db.parent.mkdir()
    held = lock_file(db, exclusive=True)
    try:
        with pytest.raises(StoreConnectError, match="being restored"):
            SQLiteTaskStore(db)
    finally:
        os.close(held)
    asyncio.run(SQLiteTaskStore(db).close())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("restore", "--at", "2026-12-06 10:15:00"), "has no UTC offset"),
        (("restore", "--at", "yesterday"), "is not an ISO-8601 time"),
        (("restore", "--at", "2026-12-06T10:15:00Z", "some.sqlite3"), "not allowed with argument"),
        (("backup", "extra"), "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_refused_clearly(tmp_path, args, message):
    result = app_command(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_refusals_name_the_reason(tmp_path):
    nothing = app_command(tmp_path / "data", "backup")
    assert nothing.returncode == 1 and "no task database at" in nothing.stderr
    assert not (tmp_path / "data" / "db" / "tasks.sqlite3").exists()
    no_backup = app_command(tmp_path / "data", "restore")
    assert no_backup.returncode == 1 and "no backup in" in no_backup.stderr
    missing = app_command(tmp_path / "data", "restore", str(tmp_path / "missing.sqlite3"))
    assert missing.returncode == 1 and "cannot copy the backup" in missing.stderr
    fleet = app_command(
        tmp_path / "data",
        "backup",
        VIDEO_API_DATABASE_URL="postgresql://u:p@db.invalid/tasks",
        VIDEO_API_CLUSTER_SECRET="s" * 16,
    )
    assert fleet.returncode == 2 and "pgBackRest" in fleet.stderr and "u:p" not in fleet.stderr


@pytest.mark.parametrize("raw", ["0", "\u0667", "7.5", "3651", " "])
def test_the_keep_setting_takes_ascii_whole_days(raw):
    if raw.strip():
        with pytest.raises(ConfigError, match="VIDEO_API_BACKUP_KEEP_DAYS"):
            load_settings({"VIDEO_API_BACKUP_KEEP_DAYS": raw})
    else:
        assert load_settings({"VIDEO_API_BACKUP_KEEP_DAYS": raw}).backup_keep_days == 7


@pytest.mark.skipif(os.geteuid() != 0, reason="what root creates by hand")
def test_what_root_creates_by_hand_belongs_to_the_service_user(tmp_path):
    settings = make_settings(tmp_path)
    store_with_tasks(settings.data_dir, 1)
    for path in (settings.data_dir, settings.db_path.parent):
        os.chown(path, 65534, 65534)
    made, _ = backup(settings)
    assert app_command(settings.data_dir, "restore").returncode == 0
    for path in (made.path.parent, made.path, settings.db_path, settings.db_path.with_suffix(".lock")):
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path
