"""HTTP contract: bad input answers 4xx JSON and writes nothing; health; storage; retention."""

import asyncio
import importlib.metadata
import os
import platform
import re
import shutil
import time

import pytest

import app
from app.api.keys import STORE
from tests.support.helpers import submit, wait_status


def assert_json_error(status: int, body: dict, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"url": NaN}', 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"extract_audio": true}', 422, "invalid_url"),
        (b'{"url": 42}', 422, "invalid_url"),
        (b'{"url": ""}', 422, "invalid_url"),
        (b'{"url": "file:///etc/passwd"}', 422, "invalid_url"),
        (b'{"url": "ftp://127.0.0.1/x.mp4"}', 422, "invalid_url"),
        (b'{"url": "javascript:alert(1)"}', 422, "invalid_url"),
        (b'{"url": "http:///nohost"}', 422, "invalid_url"),
        (b'{"url": "http://127.0.0.1:99999/x"}', 422, "invalid_url"),
        # Blocked targets are loopback addresses outside the test allow-list (127.0.0.1/32).
        (b'{"url": "http://127.0.0.2/x.mp4"}', 422, "blocked_address"),
        (b'{"url": "http://[::1]/x.mp4"}', 422, "blocked_address"),
        (b'{"url": "http://[::ffff:127.0.0.2]/x.mp4"}', 422, "blocked_address"),
        (b'{"url": "http://0.0.0.0/x.mp4"}', 422, "blocked_address"),
        (b'{"url": "http://2130706434/x.mp4"}', 422, "blocked_address"),  # 127.0.0.2 spelled as a number
        (b'{"url": "http://no-such-host.invalid/x.mp4"}', 422, "unresolvable_host"),
        (b'{"url": "http://127.0.0.1/x", "extract_audio": false, "keep_video": false}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "format": "best"}', 422, "unknown_option"),
        (b'{"url": "http://127.0.0.1/x", "extract_audio": "yes"}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "video_quality": 999}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "video_quality": true}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "audio_format": "aac"}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "audio_bitrate": 5}', 422, "invalid_option"),
        (b'{"url": "http://127.0.0.1/x", "audio_bitrate": "loud"}', 422, "invalid_option"),
    ],
)
async def test_bad_process_requests_answer_json_errors_and_store_nothing(client, body, status, code):
    response = await client.post("/api/process", data=body, headers={"Content-Type": "application/json"})
    assert_json_error(response.status, await response.json(), status, code)
    listing = await (await client.get("/api/tasks")).json()
    assert listing["total"] == 0
    assert list(client.settings.media_dir.iterdir()) == []


async def test_huge_body_answers_413(client):
    response = await client.post("/api/process", data=b'{"url": "' + b"a" * 200_000 + b'"}')
    assert_json_error(response.status, await response.json(), 413)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/status/0123456789abcdef0123456789abcdef", 404),
        ("GET", "/api/status/not-an-id", 404),
        ("DELETE", "/api/tasks/0123456789abcdef0123456789abcdef", 404),
        ("GET", "/api/download/0123456789abcdef0123456789abcdef", 404),
        ("GET", "/api/download/..%2F..%2Fdb%2Ftasks.sqlite3", 404),
        ("GET", "/api/download/%2e%2e/db/tasks.sqlite3", 404),
        ("GET", "/api/download/db/tasks.sqlite3", 404),
        ("GET", "/media/../db/tasks.sqlite3", 404),
        ("GET", "/api/nothing-here", 404),
        ("PUT", "/api/process", 405),
        ("GET", "/api/tasks?limit=0", 422),
        ("GET", "/api/tasks?limit=abc", 422),
        ("GET", "/api/tasks?offset=-1", 422),
        ("GET", "/api/tasks?status=sleeping", 422),
    ],
)
async def test_bad_paths_and_parameters_answer_json_errors(client, method, path, status):
    response = await client.request(method, path)
    assert_json_error(response.status, await response.json(), status)


async def test_index_lists_endpoints(client):
    body = await (await client.get("/")).json()
    assert "POST /api/process" in body["endpoints"]


async def test_process_answers_202_with_location(client, media_server):
    response = await client.post("/api/process", json={"url": media_server.url("/media/sample.mp4")})
    body = await response.json()
    assert response.status == 202
    assert response.headers["Location"] == body["status_url"] == f"/api/status/{body['task_id']}"
    assert body["message"] == "task queued" and body["status"] == "queued"
    await wait_status(client, body["task_id"])


async def test_task_list_counts_pages_and_filters(make_client, media_server):
    client = await make_client(max_concurrent=1)
    ids = [
        await submit(client, media_server.url(f"/media/sample.webm?list={n}"), extract_audio=False) for n in range(3)
    ]
    for task_id in ids:
        await wait_status(client, task_id)
    failed = await submit(client, media_server.url("/redirect-blocked"))
    await wait_status(client, failed)
    body = await (await client.get("/api/tasks?limit=2")).json()
    assert body["total"] == 4 and body["limit"] == 2 and body["offset"] == 0
    assert body["counts"]["completed"] == 3 and body["counts"]["failed"] == 1 and body["counts"]["queued"] == 0
    assert [t["task_id"] for t in body["tasks"]] == [failed, ids[2]]  # newest first
    body = await (await client.get("/api/tasks?limit=2&offset=2")).json()
    assert [t["task_id"] for t in body["tasks"]] == [ids[1], ids[0]]
    body = await (await client.get("/api/tasks?status=failed")).json()
    assert body["total"] == 1 and [t["task_id"] for t in body["tasks"]] == [failed]
    assert body["tasks"][0]["files"] == {"video": None, "audio": None, "subtitles": {}, "thumbnail": None, "items": []}


async def test_health_reports_versions(client):
    response = await client.get("/api/health")
    body = await response.json()
    assert response.status == 200 and body["status"] == "healthy"
    assert set(body["checks"]) == {"database", "media_writable", "ffmpeg", "disk_free"}
    # The versions actually installed and running, whatever the pins say today.
    assert body["versions"]["yt_dlp"] == importlib.metadata.version("yt-dlp")
    assert body["versions"]["aiohttp"] == importlib.metadata.version("aiohttp")
    assert body["versions"]["app"] == app.__version__ and body["versions"]["python"] == platform.python_version()
    assert re.fullmatch(r"\S+", body["versions"]["ffmpeg"])


async def test_health_503_when_ffmpeg_is_missing(client, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    response = await client.get("/api/health")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "unhealthy" and body["failing"] == ["ffmpeg"]
    assert "ffmpeg" in body["checks"]["ffmpeg"]["detail"]


async def test_health_503_when_media_folder_is_unwritable(client):
    media_dir = client.settings.media_dir
    # Tests run as root, which ignores permission bits: make the folder unusable another way.
    shutil.rmtree(media_dir)
    media_dir.write_text("not a folder")
    response = await client.get("/api/health")
    body = await response.json()
    assert response.status == 503
    assert "media_writable" in body["failing"]
    assert "cannot write to media folder" in body["checks"]["media_writable"]["detail"]


async def test_health_503_when_disk_free_is_under_the_floor(make_client):
    client = await make_client(min_free_mb=2**40)
    body = await (await client.get("/api/health")).json()
    assert body["status"] == "unhealthy" and body["failing"] == ["disk_free"]


async def _completed(client, url: str) -> dict:
    status = await wait_status(client, await submit(client, url))
    assert status["status"] == "completed", status
    return status


async def age_files(store, task_id: str, seconds: float) -> None:
    """Backdate a task's files in the database of the service's store."""
    mark = store.MARK
    sql = f"UPDATE files SET created_at = created_at - {mark} WHERE task_id = {mark} RETURNING id"
    await store._rows(sql, (seconds, task_id))


async def test_retention_by_age_then_410(make_client, media_server):
    client = await make_client(retention_hours=1.0)
    old = await _completed(client, media_server.url("/media/sample.mp4?age=old"))
    new = await _completed(client, media_server.url("/media/sample.mp4?age=new"))
    # Age the first task's files by two hours, as if they were written then.
    await age_files(client.app[STORE], old["task_id"], 7200)

    body = await (await client.post("/api/storage/cleanup")).json()
    assert {item["task_id"] for item in body["deleted"]} == {old["task_id"]}
    assert body["files_deleted"] == 2 and body["bytes_freed"] > 0
    assert all("older than 1 hours" in item["reason"] for item in body["deleted"])
    for url in (old["files"]["video"], old["files"]["audio"]):
        response = await client.get(url)
        assert_json_error(response.status, await response.json(), 410, "file_gone")
    assert not (client.settings.media_dir / old["task_id"]).exists()
    assert (await client.get(new["files"]["video"])).status == 200
    status = await (await client.get(f"/api/status/{old['task_id']}")).json()
    assert "retention" in status["message"]
    assert client.settings.database_url or client.settings.db_path.is_file()  # never touched


async def test_retention_by_size_oldest_first_and_leftovers(make_client, media_server):
    client = await make_client(max_storage_mb=1)
    first = await _completed(client, media_server.url("/media/sample.mp4?size=1"))
    time.sleep(0.01)
    second = await _completed(client, media_server.url("/media/sample.webm?size=2"))
    leftover = client.settings.media_dir / "0123456789abcdef0123456789abcdef"
    leftover.mkdir()
    (leftover / "video.mp4.part").write_bytes(b"x" * 1000)
    stray_part = client.settings.media_dir / second["task_id"] / "video.f1.mp4.part"
    stray_part.write_bytes(b"y" * 10)
    # The store is capped at 1 MB; a 1.3 MB download makes room as it starts and completes,
    # without waiting for a retention pass: the oldest files go first.
    third = await _completed(client, media_server.url("/media/noise.mp4?size=3"))
    for gone in (first, second):
        for _ in range(50):  # room is made right after the completion is recorded
            status = await (await client.get(f"/api/status/{gone['task_id']}")).json()
            if status["message"] != "completed":
                break
            await asyncio.sleep(0.05)
        assert status["message"] == "files removed by retention: storage over 1 MB", status
        response = await client.get(gone["files"]["video"])
        assert response.status == 410, await response.text()
    assert (await client.get(third["files"]["video"])).status == 200

    body = await (await client.post("/api/storage/cleanup")).json()
    assert [item["kind"] for item in body["deleted"]] == ["leftover", "leftover"]
    assert sum(item["bytes"] for item in body["deleted"]) == 1010
    assert not leftover.exists() and not stray_part.exists()
    assert client.settings.database_url or os.path.getsize(client.settings.db_path) > 0  # never touched


async def test_storage_info(client, media_server):
    status = await _completed(client, media_server.url("/media/sample.webm?info=1"))
    info = await (await client.get("/api/storage/info")).json()
    assert info["files"] == 2
    sizes = sum(p.stat().st_size for p in (client.settings.media_dir / status["task_id"]).iterdir())
    assert info["used_bytes"] == sizes
    assert info["disk_free_bytes"] > 0 and info["max_storage_bytes"] == 10240 * 1024 * 1024


async def test_health_and_a_retention_pass_at_the_same_moment_agree_the_media_folder_is_writable(client):
    # The leftover sweep removes what it finds in the media folder, the health check's probe file too.
    for _ in range(100):
        health, _ = await asyncio.gather(client.get("/api/health"), client.post("/api/storage/cleanup"))
        assert "media_writable" not in (await health.json())["failing"]
