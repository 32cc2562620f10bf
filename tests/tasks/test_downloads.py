"""End-to-end downloads through the in-process service: real yt-dlp, FFmpeg and SQLite."""

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from app.tasks import manager as manager_module
from app.tasks.manager import MAX_ATTEMPTS
from tests.support.helpers import (
    ffprobe,
    host_pids,
    leftovers,
    process_group_members,
    submit,
    task_worker,
    wait_status,
)


async def test_video_and_audio_completed_and_audio_probes_right(client, media_server):
    mark = len(media_server.requests)
    task_id = await submit(client, media_server.url("/media/sample.mp4"), audio_format="mp3", audio_bitrate=128)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    assert status["progress"] == 100
    assert status["video_info"]["title"] == "sample"
    assert status["files"]["video"] and status["files"]["audio"]
    media_dir = client.settings.media_dir
    audio = ffprobe(media_dir / task_id / "audio.mp3")
    (stream,) = audio["streams"]
    assert stream["codec_name"] == "mp3"
    assert abs(int(stream["bit_rate"]) - 128_000) <= 8_000
    assert abs(float(audio["format"]["duration"]) - 4.0) < 0.3
    video = ffprobe(media_dir / task_id / "video.mp4")
    assert {s["codec_name"] for s in video["streams"]} == {"h264", "aac"}
    # Downloaded once: the audio came from the video file, not from a second fetch.
    fetches = [path for path, _ in media_server.requests[mark:] if path == "/media/sample.mp4"]
    assert len(fetches) <= 2  # yt-dlp's generic extractor probes the URL, then downloads it

    response = await client.get(status["files"]["audio"])
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert "filename*=UTF-8''sample.mp3" in response.headers["Content-Disposition"]


@pytest.mark.parametrize(
    ("path", "audio_format", "codec", "video_codecs"),
    [
        ("/media/sample.webm", "opus", "opus", {"vp9", "opus"}),
        ("/media/page.html", "m4a", "aac", {"h264", "aac"}),
        ("/media/hls/index.m3u8", "flac", "flac", {"h264", "aac"}),
        ("/media/sample.mp4", "wav", "pcm_s16le", None),
    ],
)
async def test_sources_and_audio_formats(client, media_server, path, audio_format, codec, video_codecs):
    keep_video = video_codecs is not None
    task_id = await submit(client, media_server.url(path), audio_format=audio_format, keep_video=keep_video)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    files = sorted(p.name for p in (client.settings.media_dir / task_id).iterdir())
    assert f"audio.{audio_format}" in files
    audio = ffprobe(client.settings.media_dir / task_id / f"audio.{audio_format}")
    assert [s["codec_name"] for s in audio["streams"]] == [codec]
    if keep_video:
        (video_name,) = [name for name in files if name.startswith("video.")]
        video = ffprobe(client.settings.media_dir / task_id / video_name)
        assert {s["codec_name"] for s in video["streams"]} == video_codecs
    else:
        assert status["files"]["video"] is None
        assert files == [f"audio.{audio_format}"]


async def test_video_only(client, media_server):
    task_id = await submit(client, media_server.url("/media/sample.webm"), extract_audio=False)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    assert status["files"]["audio"] is None
    response = await client.get(status["files"]["video"])
    assert response.headers["Content-Type"] == "video/webm"


async def test_range_request_answers_206_with_the_right_bytes(client, media_server):
    task_id = await submit(client, media_server.url("/media/sample.mp4"), extract_audio=False)
    status = await wait_status(client, task_id)
    on_disk = (client.settings.media_dir / task_id / "video.mp4").read_bytes()
    response = await client.get(status["files"]["video"], headers={"Range": "bytes=100-1099"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 100-1099/{len(on_disk)}"
    assert await response.read() == on_disk[100:1100]
    response = await client.get(status["files"]["video"], headers={"Range": "bytes=-500"})
    assert response.status == 206
    assert await response.read() == on_disk[-500:]


async def test_progress_rises_through_intermediate_values(client, media_server):
    task_id = await submit(client, media_server.url("/slow/noise.mp4?rate=500000"), extract_audio=False)
    seen = []
    while True:
        body = await (await client.get(f"/api/status/{task_id}")).json()
        if body["status"] == "downloading" and body["progress"] > 0:
            seen.append(body["progress"])
            assert (body["downloaded_bytes"] > 0 and body["total_bytes"] == 1_295_393) or body["total_bytes"] > 0
        if body["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "completed", body
    intermediate = sorted({p for p in seen if 0 < p < 100})
    assert len(intermediate) >= 3, seen
    assert seen == sorted(seen), "progress went backwards"


async def test_same_url_and_options_while_active_returns_the_active_task(client, media_server):
    url = media_server.url("/slow/noise.mp4?rate=300000&dedupe=1")
    first = await submit(client, url)
    second = await submit(client, url)
    other_options = await submit(client, url, audio_format="wav")
    assert first == second != other_options
    for task_id in (first, other_options):
        await client.delete(f"/api/tasks/{task_id}")


async def test_cancel_stops_its_download_alone_and_deletes_its_files(make_client, media_server):
    # Downloads share one download host: a cancel stops the one download, not the host or the others.
    client = await make_client(max_concurrent=2)
    task_id = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&cancel=1"))
    other = await submit(client, media_server.url("/slow/noise.mp4?rate=2000000&cancel=2"), extract_audio=False)
    await wait_status(client, task_id, ("downloading",))
    while (await (await client.get(f"/api/status/{task_id}")).json())["progress"] <= 0:
        await asyncio.sleep(0.05)
    task_dir = client.settings.media_dir / task_id
    host = task_worker(os.getpid(), task_dir)
    assert host is not None and os.getpgid(host) == host  # the host leads its own process group
    assert any(task_dir.iterdir())  # a .part file is being written

    response = await client.delete(f"/api/tasks/{task_id}")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "cancelled"
    assert leftovers(os.getpid(), task_dir) == []  # nothing of it writes any more
    assert not task_dir.exists()
    await asyncio.sleep(0.5)  # nothing recreates it afterwards
    assert not task_dir.exists()
    assert (await (await client.get(f"/api/status/{task_id}")).json())["status"] == "cancelled"
    finished = await wait_status(client, other)
    assert finished["status"] == "completed" and finished["attempts"] == 1, finished
    assert host_pids(os.getpid()) == [host]


def _is_audio_extraction(pid: int) -> bool:
    try:
        return b"audio.mp3.part" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def test_cancel_while_ffmpeg_extracts_kills_ffmpeg_too(client, media_server):
    task_id = await submit(client, media_server.url("/media/long.mp4"), audio_format="mp3", audio_bitrate="best")
    task_dir = client.settings.media_dir / task_id
    deadline = time.monotonic() + 30
    while True:
        extracting = [h for h in host_pids(os.getpid()) if any(map(_is_audio_extraction, process_group_members(h)))]
        if extracting:
            host = extracting[0]
            break
        assert time.monotonic() < deadline, "FFmpeg never ran"
        await asyncio.sleep(0.01)
    # The "processing" report was sent before FFmpeg started; the service may still be storing it.
    assert (await wait_status(client, task_id, ("processing",), timeout=10))["status"] == "processing"
    body = await (await client.delete(f"/api/tasks/{task_id}")).json()
    assert body["status"] == "cancelled"
    assert not any(map(_is_audio_extraction, process_group_members(host)))  # its FFmpeg is gone
    assert leftovers(os.getpid(), task_dir) == []
    assert host in host_pids(os.getpid())  # the host itself goes on
    assert not task_dir.exists()


async def test_cancel_queued_task(make_client, media_server):
    client = await make_client(max_concurrent=1)
    running = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&q=1"))
    await wait_status(client, running, ("downloading",))
    queued = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&q=2"))
    before = await (await client.get(f"/api/status/{queued}")).json()
    assert before["status"] == "queued" and before["started_at"] is None  # it really waited
    body = await (await client.delete(f"/api/tasks/{queued}")).json()
    assert body["status"] == "cancelled" and body["attempts"] == 0
    await client.delete(f"/api/tasks/{running}")
    assert not (client.settings.media_dir / queued).exists()
    requests_for_queued = [path for path, _ in media_server.requests if "q=2" in path]
    assert requests_for_queued == []  # never fetched


async def test_queue_full_answers_429_with_retry_after(make_client, media_server):
    client = await make_client(max_concurrent=1, queue_limit=1)
    first = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&n=1"))
    await wait_status(client, first, ("downloading",))
    second = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&n=2"))
    response = await client.post("/api/process", json={"url": media_server.url("/slow/noise.mp4?n=3")})
    body = await response.json()
    assert response.status == 429
    assert body["error"]["code"] == "queue_full"
    assert int(response.headers["Retry-After"]) > 0
    listing = await (await client.get("/api/tasks")).json()
    assert listing["total"] == 2
    for task_id in (first, second):
        await client.delete(f"/api/tasks/{task_id}")


async def test_fifo_order_and_concurrency_limit(make_client, media_server):
    client = await make_client(max_concurrent=1)
    ids = [await submit(client, media_server.url(f"/media/sample.mp4?fifo={n}"), extract_audio=False) for n in range(3)]
    statuses = [await wait_status(client, task_id) for task_id in ids]
    started = [s["started_at"] for s in statuses]
    assert all(s["status"] == "completed" for s in statuses)
    assert started == sorted(started)
    # One at a time: each started after the previous one completed.
    assert all(statuses[i + 1]["started_at"] >= statuses[i]["completed_at"] for i in range(2))


@pytest.mark.parametrize("path", ["/redirect-blocked", "/page-blocked.html", "/hls-blocked.m3u8"])
async def test_blocked_address_reached_indirectly_fails_with_clear_reason(client, media_server, path):
    """A redirect, a URL embedded in a page, HLS fragments: all checked at connect time."""
    task_id = await submit(client, media_server.url(path))
    status = await wait_status(client, task_id)
    assert status["status"] == "failed"
    assert "address guard refused" in status["error"]
    assert "127.0.0.2" in status["error"] and "not allowed" in status["error"]
    assert not (client.settings.media_dir / task_id).exists()


async def test_download_over_max_filesize_fails_and_leaves_no_file(make_client, media_server):
    client = await make_client(max_filesize_mb=1)
    for path in ("/media/noise.mp4", "/slow/noise.mp4?rate=2000000"):
        task_id = await submit(client, media_server.url(path), extract_audio=False)
        status = await wait_status(client, task_id)
        assert status["status"] == "failed", status
        assert "VIDEO_API_MAX_FILESIZE_MB" in status["error"]
        assert not (client.settings.media_dir / task_id).exists()


@pytest.mark.parametrize("path", ["/chunked/noise.mp4", "/media/hls-noise/index.m3u8"])
async def test_size_limit_holds_when_the_size_is_unknown_upfront(make_client, media_server, path):
    """No Content-Length (chunked) or an HLS playlist: the limit applies to the bytes as they arrive."""
    client = await make_client(max_filesize_mb=1)
    task_id = await submit(client, media_server.url(path), extract_audio=False)
    status = await wait_status(client, task_id)
    assert status["status"] == "failed", status
    assert "larger than the limit of 1 MB" in status["error"] and "VIDEO_API_MAX_FILESIZE_MB" in status["error"]
    assert status["files"]["items"] == [] and status["files"]["video"] is None
    assert not (client.settings.media_dir / task_id).exists()


async def test_a_task_whose_download_host_keeps_dying_fails_after_bounded_attempts(client, media_server):
    task_id = await submit(client, media_server.url("/slow/noise.mp4?rate=100000&crash=1"))
    task_dir = client.settings.media_dir / task_id
    for attempt in range(1, MAX_ATTEMPTS + 1):
        deadline = time.monotonic() + 30
        while True:
            status = await (await client.get(f"/api/status/{task_id}")).json()
            worker = task_worker(os.getpid(), task_dir)
            if status["status"] == "downloading" and status["attempts"] == attempt and worker:
                break
            assert time.monotonic() < deadline, (attempt, host_pids(os.getpid()), status)
            await asyncio.sleep(0.05)
        os.kill(worker, signal.SIGKILL)  # as the kernel's OOM killer would
    status = await wait_status(client, task_id)
    assert status["status"] == "failed"
    assert f"died {MAX_ATTEMPTS} times" in status["error"]
    assert not (client.settings.media_dir / task_id).exists()


async def test_a_download_that_does_not_stop_has_its_host_killed_and_the_others_resume(
    make_client, media_server, monkeypatch
):
    # A host that cannot act on a cancel (stopped here; stuck in a system call in life) is killed after the
    # grace: the cancel completes, and the other download of the host is queued again and resumes.
    monkeypatch.setattr(manager_module, "CANCEL_GRACE_S", 1.0)
    client = await make_client(max_concurrent=2)
    stuck, other = [
        await submit(client, media_server.url(f"/slow/noise.mp4?rate=300000&stuck={n}"), extract_audio=False)
        for n in (1, 2)
    ]
    deadline = time.monotonic() + 30
    while not all(task_worker(os.getpid(), client.settings.media_dir / t) for t in (stuck, other)):
        assert time.monotonic() < deadline, host_pids(os.getpid())
        await asyncio.sleep(0.05)
    (host,) = host_pids(os.getpid())
    os.kill(host, signal.SIGSTOP)
    body = await (await client.delete(f"/api/tasks/{stuck}")).json()
    assert body["status"] == "cancelled"
    assert not (client.settings.media_dir / stuck).exists()
    status = await wait_status(client, other)
    assert status["status"] == "completed" and status["attempts"] == 2, status
    assert host not in host_pids(os.getpid())


async def test_a_killed_download_host_loses_none_of_its_downloads(make_client, media_server):
    # One host runs every download: when it dies, each of them is queued again and resumes in a new host.
    client = await make_client(max_concurrent=2)
    urls = [media_server.url(f"/slow/noise.mp4?rate=300000&host-killed={n}") for n in (1, 2)]
    task_ids = [await submit(client, url, extract_audio=False) for url in urls]
    task_dirs = [client.settings.media_dir / task_id for task_id in task_ids]
    deadline = time.monotonic() + 30
    while not all(task_worker(os.getpid(), task_dir) for task_dir in task_dirs):
        assert time.monotonic() < deadline, host_pids(os.getpid())
        await asyncio.sleep(0.05)
    (host,) = host_pids(os.getpid())
    os.kill(host, signal.SIGKILL)
    for task_id in task_ids:
        status = await wait_status(client, task_id)
        assert status["status"] == "completed" and status["attempts"] == 2, status
    assert host not in host_pids(os.getpid())
