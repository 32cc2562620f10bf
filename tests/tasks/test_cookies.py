"""cookies: a cookies.txt per request opens a route that answers 403 without it, and its value is
found nowhere afterwards: not in any answer, event, callback, log line, metric or database row."""

import json
import sqlite3
import time
from pathlib import Path

import psycopg
import requests

from tests.support.helpers import store_settings, submit, wait_status
from tests.support.mediaserver import COOKIE_NAME

COOKIE_SECRET = "cookie-secret-for-tests-0123456789"
CALLBACK_SECRET = "callback-secret-for-tests-0123456789"


def cookies_txt(value: str, domain: str = "127.0.0.1") -> str:
    return f"# Netscape HTTP Cookie File\n{domain}\tFALSE\t/\tFALSE\t0\t{COOKIE_NAME}\t{value}\n"


def database_rows(data_dir: Path) -> list[dict]:
    """Every task row as the database holds it (sealed cookies as bytes)."""
    shared = store_settings(data_dir)
    if shared:
        with psycopg.connect(shared["database_url"]) as db:
            cursor = db.execute("SELECT * FROM tasks")
            return [dict(zip([c.name for c in cursor.description], row, strict=True)) for row in cursor]
    with sqlite3.connect(data_dir / "db" / "tasks.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM tasks")]


async def test_a_route_behind_a_cookie_needs_the_cookies(make_client, media_server):
    client = await make_client(cookie_secret=COOKIE_SECRET)
    url = media_server.url("/cookie/sample.mp4")
    refused = await wait_status(client, await submit(client, url, extract_audio=False))
    assert refused["status"] == "failed" and "403" in refused["error"], refused
    wrong = await submit(client, url, extract_audio=False, cookies=cookies_txt("not-the-value"))
    assert (await wait_status(client, wrong))["status"] == "failed"
    done = await wait_status(client, await submit(client, url, cookies=cookies_txt(media_server.cookie_value)))
    assert done["status"] == "completed", done
    assert done["options"]["cookies"] is True and refused["options"]["cookies"] is False


async def test_cookies_need_the_secret_and_a_cookies_txt(make_client, media_server):
    client = await make_client()
    response = await client.post("/api/process", json={"url": media_server.url("/x"), "cookies": cookies_txt("v")})
    body = await response.json()
    assert response.status == 422 and body["error"]["code"] == "cookies_disabled"
    client = await make_client(cookie_secret=COOKIE_SECRET)
    bad = "127.0.0.1\tFALSE\t/\tFALSE\t0\tname-and-value-without-a-tab-secret-text"
    response = await client.post("/api/process", json={"url": media_server.url("/x"), "cookies": bad})
    body = await response.json()
    assert response.status == 422 and body["error"]["code"] == "invalid_cookies"
    assert "line 1 has 6 tab-separated fields" in body["error"]["message"] and "secret-text" not in json.dumps(body)
    assert (await (await client.get("/api/tasks")).json())["total"] == 0


async def test_cookies_sealed_with_another_secret_fail_the_task_and_say_why(make_client, media_server):
    client = await make_client(cookie_secret=COOKIE_SECRET, max_concurrent=1)
    blocker = await submit(client, media_server.url("/slow/noise.mp4?rate=300000"), extract_audio=False)
    await wait_status(client, blocker, statuses=("downloading",))
    task_id = await submit(client, media_server.url("/cookie/sample.mp4"), cookies=cookies_txt("v"))
    await client.close()
    other = await make_client(cookie_secret="another-cookie-secret-0123456789")
    status = await wait_status(other, task_id)
    assert status["status"] == "failed" and "VIDEO_API_COOKIE_SECRET" in status["error"], status


def test_the_cookie_value_is_found_nowhere(service_factory, media_server, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    service = service_factory(
        VIDEO_API_COOKIE_SECRET=COOKIE_SECRET,
        VIDEO_API_CALLBACK_SECRET=CALLBACK_SECRET,
        VIDEO_API_LOG_LEVEL="DEBUG",
        VIDEO_API_MAX_CONCURRENT="1",
        TMPDIR=str(temp),
    )
    value = media_server.cookie_value
    hook = media_server.url("/hook")
    blocker = service.submit(media_server.url("/slow/noise.mp4?rate=400000"), extract_audio=False)
    service.wait(blocker, lambda s: s["status"] == "downloading")
    response = service.http.post(
        service.base + "/api/process",
        json={"url": media_server.url("/cookie/sample.mp4"), "cookies": cookies_txt(value), "callback_url": hook},
        timeout=10,
    )
    assert response.status_code == 202 and value not in response.text
    task_id = response.json()["task_id"]
    (queued,) = [row for row in database_rows(service.data_dir) if row["id"] == task_id]
    assert queued["cookies"] and value.encode() not in bytes(queued["cookies"])  # sealed while it waits
    seen = [response.text]
    done = service.wait(task_id, lambda s: s["status"] in ("completed", "failed"))
    assert done["status"] == "completed", done
    events = service.http.get(service.base + f"/api/tasks/{task_id}/events", timeout=10)
    deadline = time.monotonic() + 10
    while len(media_server.hook_bodies) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen += [
        json.dumps(done),
        events.text,
        service.http.get(service.base + "/api/tasks", timeout=10).text,
        service.http.get(service.base + "/metrics", timeout=10).text,
        *(body.decode() for body in media_server.hook_bodies),
    ]
    assert media_server.hook_bodies and task_id in events.text
    assert not [text for text in seen if value in text]
    assert not list(temp.glob("video-api-cookies-*")), "the worker's cookie file is left behind"
    service.stop()
    (row,) = [row for row in database_rows(service.data_dir) if row["id"] == task_id]
    assert row["cookies"] is None
    assert value.encode() not in b"".join(path.read_bytes() for path in service.data_dir.rglob("*") if path.is_file())
    log = Path(service.log.name).read_text()
    assert "yt-dlp" in log and value not in log  # DEBUG: yt-dlp's own lines are in it


def test_a_killed_worker_leaves_no_cookie_file(service_factory, media_server, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    service = service_factory(VIDEO_API_COOKIE_SECRET=COOKIE_SECRET, TMPDIR=str(temp))
    task_id = service.submit(
        media_server.url("/slow/noise.mp4?rate=200000"), cookies=cookies_txt("v"), extract_audio=False
    )
    service.wait(task_id, lambda s: s["status"] == "downloading" and s["progress"] > 5)
    assert [p.name for p in temp.glob("video-api-cookies-*")] == [f"video-api-cookies-{task_id}"]
    assert oct((temp / f"video-api-cookies-{task_id}" / "cookies.txt").stat().st_mode & 0o777) == "0o600"
    assert requests.delete(service.base + f"/api/tasks/{task_id}", timeout=10).status_code == 200
    assert not list(temp.glob("video-api-cookies-*"))


async def test_a_playlists_items_use_its_cookies_and_keep_none(make_client, media_server):
    client = await make_client(cookie_secret=COOKIE_SECRET)
    url = media_server.url("/playlist/3.html?src=/cookie/sample.mp4")
    parent_id = await submit(client, url, extract_audio=False, cookies=cookies_txt(media_server.cookie_value))
    parent = await wait_status(client, parent_id)
    assert parent["status"] == "completed" and parent["playlist"]["counts"]["completed"] == 3, parent["error"]
    rows = database_rows(client.settings.data_dir)
    assert len(rows) == 4 and all(row["cookies"] is None for row in rows)
    assert all(json.loads(row["options"])["cookies"] is True for row in rows if isinstance(row["options"], str))
    listing = await (await client.get(f"/api/tasks?parent_id={parent_id}")).text()
    assert media_server.cookie_value not in listing


async def test_a_starting_service_leaves_other_services_cookie_folders_alone(make_client, tmp_path):
    # Two services on one machine without systemd's PrivateTmp share /tmp: one starting removed
    # the cookie file of the other's running download, which then failed.
    from app.tasks.cookies import cookie_file

    with cookie_file("0" * 32, "another service's cookies") as path:
        await make_client(cookie_secret=COOKIE_SECRET)
        assert path.read_text() == "another service's cookies"
