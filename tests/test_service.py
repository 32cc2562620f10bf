"""The real service process: restart, SIGTERM and kill -9 mid-download lose no task."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest
import requests

from tests.support.helpers import REPO, children_of, process_group_members, store_settings, task_worker


def _resumed_ranges(media_server, since: int) -> list[str]:
    return [
        rng for path, rng in media_server.requests[since:] if path == "/slow/noise.mp4" and rng and rng != "bytes=0-"
    ]


def _db_status(service, task_id: str) -> tuple[str, int]:
    """Read straight from the database the stopped service used."""
    shared = store_settings(service.data_dir)
    if shared:
        with psycopg.connect(shared["database_url"]) as db:
            return db.execute("SELECT status, attempts FROM tasks WHERE id = %s", (task_id,)).fetchone()
    with sqlite3.connect(service.data_dir / "db" / "tasks.sqlite3") as db:
        return db.execute("SELECT status, attempts FROM tasks WHERE id = ?", (task_id,)).fetchone()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stop_mid_download_then_restart_resumes_the_part_file(service_factory, media_server, signum):
    service = service_factory()
    mark = len(media_server.requests)
    task_id = service.submit(media_server.url(f"/slow/noise.mp4?rate=250000&stop={signum}"), extract_audio=True)
    service.wait(task_id, lambda s: s["status"] == "downloading" and s["progress"] >= 25)
    host = task_worker(service.process.pid, service.data_dir / "media" / task_id)
    assert host

    elapsed = service.stop(signum)
    assert elapsed < 30
    deadline = time.monotonic() + 10
    while process_group_members(host) and time.monotonic() < deadline:
        time.sleep(0.1)  # after kill -9 the download host notices the closed connection and kills its group
    assert process_group_members(host) == []
    status, attempts = _db_status(service, task_id)
    if signum == signal.SIGTERM:
        assert (status, attempts) == ("queued", 0)  # a clean stop does not count as an attempt
    else:
        assert (status, attempts) == ("downloading", 1)
    part_files = list((service.data_dir / "media" / task_id).glob("*.part"))
    assert part_files and part_files[0].stat().st_size > 0

    restarted = service_factory()
    done = restarted.wait(task_id, lambda s: s["status"] in ("completed", "failed"))
    assert done["status"] == "completed", done
    assert done["files"]["video"] and done["files"]["audio"]
    assert done["attempts"] == (1 if signum == signal.SIGTERM else 2)
    assert _resumed_ranges(media_server, mark), "yt-dlp did not continue its .part file"
    restarted.stop()


def test_without_ffmpeg_health_is_503_and_audio_tasks_fail_with_the_reason(service_factory, media_server, tmp_path):
    # The old service reported such tasks completed although the audio never came.
    empty = tmp_path / "no-ffmpeg"
    empty.mkdir()
    service = service_factory(PATH=str(empty))
    health = requests.get(service.base + "/api/health", timeout=10)
    assert health.status_code == 503 and health.json()["failing"] == ["ffmpeg"]
    task_id = service.submit(media_server.url("/media/sample.mp4?noffmpeg=1"))
    status = service.wait(task_id, lambda s: s["status"] in ("completed", "failed"))
    assert status["status"] == "failed"
    assert "not installed or not on PATH" in status["error"]
    assert status["files"]["items"] == [] and status["files"]["video"] is None


def test_sigterm_while_idle_exits_promptly(service_factory):
    service = service_factory()
    assert service.stop(signal.SIGTERM) < 5
    assert service.process.returncode == 0


def test_dev_mode_serves_and_sigterm_stops_the_service_too(service_factory):
    service = service_factory("--dev")
    (child,) = children_of(service.process.pid)  # the reloader runs the service as its child
    assert service.get("/api/health")["status"] == "healthy"
    service.stop(signal.SIGTERM)
    assert service.process.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("VIDEO_API_MAX_CONCURRENT", "0"),
        ("VIDEO_API_QUEUE_LIMIT", "-1"),
        ("VIDEO_API_RETENTION_HOURS", "soon"),
        ("VIDEO_API_MAX_STORAGE_MB", "1.5"),
        ("VIDEO_API_MIN_FREE_MB", "lots"),
        ("VIDEO_API_MAX_FILESIZE_MB", "0"),
        ("VIDEO_API_ALLOW_NETWORKS", "10.0.0.0/8,not-a-network"),
        ("VIDEO_API_LOG_LEVEL", "chatty"),
    ],
)
def test_bad_setting_exits_2_with_one_line_naming_it(tmp_path, name, value):
    env = {**os.environ, "VIDEO_API_DATA_DIR": str(tmp_path / "data"), name: value}
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert not (tmp_path / "data").exists()


def test_a_service_run_under_a_wrapper_leaves_no_process_when_killed(service_factory):
    # faketime forks the service and waits for it: killing the wrapper alone left the service running.
    service = service_factory(wrap=("faketime", "-f", "+0s"))
    assert len(process_group_members(service.process.pid)) >= 2  # faketime and the service
    service.kill()
    assert process_group_members(service.process.pid) == []
