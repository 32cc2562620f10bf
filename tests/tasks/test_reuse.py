"""reuse: a completed download of the same video and options answers instead of a second download."""

import os
import signal

from app.tasks import manager as manager_module
from tests.support.helpers import host_pids, submit, wait_status


async def post(client, url: str, **options) -> tuple[int, dict]:
    response = await client.post("/api/process", json={"url": url, **options})
    return response.status, await response.json()


def media_gets(media_server, since: int, path: str) -> int:
    return sum(1 for requested, _ in media_server.requests[since:] if requested == path)


async def test_the_same_video_twice_is_downloaded_once(client, media_server):
    first = await submit(client, media_server.url("/media/sample.webm"), reuse=True, extract_audio=False)
    assert (await wait_status(client, first))["status"] == "completed"
    mark = len(media_server.requests)
    # The same video: the URL differs only in what does not name another video.
    status, body = await post(
        client,
        media_server.url("/media/sample.webm").replace("http://", "HTTP://") + "#t=3",
        reuse=True,
        extract_audio=False,
    )
    assert status == 200 and body["task_id"] == first and body["status"] == "completed", body
    assert media_gets(media_server, mark, "/media/sample.webm") == 0
    listing = await (await client.get("/api/tasks")).json()
    assert listing["total"] == 1


async def test_other_options_or_no_reuse_download_again(client, media_server):
    url = media_server.url("/media/sample.webm")
    first = await submit(client, url, reuse=True, extract_audio=False)
    assert (await wait_status(client, first))["status"] == "completed"
    other_options = await submit(client, url, reuse=True, extract_audio=False, video_quality="360")
    without_reuse = await submit(client, url, extract_audio=False)
    assert len({first, other_options, without_reuse}) == 3


async def test_a_task_whose_files_are_gone_is_not_reused(make_client, media_server):
    client = await make_client(retention_hours=0.0)
    url = media_server.url("/media/sample.webm")
    first = await submit(client, url, reuse=True, extract_audio=False)
    assert (await wait_status(client, first))["status"] == "completed"
    cleanup = await (await client.post("/api/storage/cleanup")).json()
    assert cleanup["files_deleted"] == 1
    mark = len(media_server.requests)
    second = await submit(client, url, reuse=True, extract_audio=False)
    assert second != first and (await wait_status(client, second))["status"] == "completed"
    assert media_gets(media_server, mark, "/media/sample.webm") >= 1


async def test_reuse_without_an_answer_from_the_download_host_downloads_anew(make_client, media_server, monkeypatch):
    # Reuse only saves a download: while the host cannot tell which video a URL names (restarting after an
    # OOM kill, frozen), the request is queued as a download of its own instead of failing.
    monkeypatch.setattr(manager_module, "MEDIA_KEY_TIMEOUT_S", 0.5)
    client = await make_client()
    (host,) = host_pids(os.getpid())
    os.kill(host, signal.SIGSTOP)
    try:
        status, body = await post(client, media_server.url("/media/sample.webm?frozen=1"), reuse=True)
        assert status == 202 and body["status"] == "queued", body
    finally:
        os.kill(host, signal.SIGCONT)
    assert (await wait_status(client, body["task_id"]))["status"] == "completed"


def test_a_video_is_known_by_its_site_and_id_not_by_its_url():
    from app.tasks.media_keys import media_key  # yt-dlp's URL patterns only: no request is made

    short, long = (
        media_key("https://youtu.be/dQw4w9WgXcQ"),
        media_key("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=4"),
    )
    assert short == long == "Youtube:dQw4w9WgXcQ"
    assert (
        media_key("http://127.0.0.1:80/a.mp4#x") == media_key("HTTP://127.0.0.1/a.mp4") == "url:http://127.0.0.1/a.mp4"
    )
    assert media_key("http://127.0.0.1/a.mp4?v=1") != media_key("http://127.0.0.1/a.mp4?v=2")
