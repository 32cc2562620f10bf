"""Subtitles, thumbnails, metadata, chapters and the container, from pages of the local media
server; ffprobe shows what ended up in the files."""

import pytest

from tests.support.helpers import ffprobe, submit, wait_status
from tests.support.mediaserver import CHAPTERS, METADATA, SUBTITLES


def streams_of(info: dict, codec_type: str) -> list[dict]:
    return [stream for stream in info["streams"] if stream["codec_type"] == codec_type]


def attached_pictures(info: dict) -> list[dict]:
    return [s for s in info["streams"] if s.get("disposition", {}).get("attached_pic") == 1]


async def test_subtitles_and_thumbnail_are_files_and_embedded(client, media_server):
    task_id = await submit(
        client,
        media_server.url("/media/page-subtitles.html"),
        subtitles="all",
        embed_subtitles=True,
        thumbnail=True,
        container="mkv",
        audio_format="m4a",
    )
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    files = status["files"]
    assert set(files["subtitles"]) == set(SUBTITLES) and files["thumbnail"]
    by_url = {item["url"]: item for item in files["items"]}
    assert {item["kind"] for item in files["items"]} == {"video", "audio", "subtitles", "thumbnail"}
    assert by_url[files["video"]]["content_type"] == "video/x-matroska"
    assert by_url[files["thumbnail"]]["content_type"] == "image/jpeg"
    for language, words in SUBTITLES.items():
        item = by_url[files["subtitles"][language]]
        assert (item["kind"], item["language"], item["content_type"]) == ("subtitles", language, "text/vtt")
        assert item["name"].endswith(f".{language}.vtt")
        response = await client.get(item["url"])
        text = await response.text()
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/vtt")
        assert all(word in text for word in words) and len(text.encode()) == item["size"]
    thumbnail = await client.get(files["thumbnail"])
    assert thumbnail.status == 200 and (await thumbnail.read())[:3] == b"\xff\xd8\xff"  # a JPEG

    task_dir = client.settings.media_dir / task_id
    video = ffprobe(task_dir / "video.mkv")
    assert video["format"]["format_name"].startswith("matroska")
    assert sorted(s["tags"].get("language") for s in streams_of(video, "subtitle")) == ["deu", "eng"]
    assert len(attached_pictures(video) + streams_of(video, "attachment")) == 1
    audio = ffprobe(task_dir / "audio.m4a")
    assert len(attached_pictures(audio)) == 1, audio["streams"]


async def test_metadata_chapters_and_thumbnail_in_video_and_audio(client, media_server):
    task_id = await submit(
        client,
        media_server.url("/page-chapters.html"),
        embed_metadata=True,
        embed_chapters=True,
        thumbnail=True,
        audio_format="mp3",
    )
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    task_dir = client.settings.media_dir / task_id
    for name in ("video.mp4", "audio.mp3"):
        info = ffprobe(task_dir / name)
        tags = {key.lower(): value for key, value in info["format"]["tags"].items()}
        assert tags["title"] == METADATA["title"] and tags["artist"] == METADATA["uploader"], (name, tags)
        assert [c["tags"]["title"] for c in info["chapters"]] == [title for title, _, _ in CHAPTERS], name
        assert len(attached_pictures(info)) == 1, (name, info["streams"])


async def test_without_the_options_nothing_more_is_written(client, media_server):
    task_id = await submit(client, media_server.url("/page-chapters.html"), extract_audio=False)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    assert status["files"]["subtitles"] == {} and status["files"]["thumbnail"] is None
    assert [item["kind"] for item in status["files"]["items"]] == ["video"]
    assert sorted(p.name for p in (client.settings.media_dir / task_id).iterdir()) == ["video.mp4"]
    info = ffprobe(client.settings.media_dir / task_id / "video.mp4")
    assert info["chapters"] == [] and not attached_pictures(info)


@pytest.mark.parametrize(
    ("path", "container", "codecs"),
    [
        ("/media/sample.webm", "mp4", {"vp9", "opus"}),
        ("/media/sample.mp4", "mkv", {"h264", "aac"}),
        ("/media/sample.webm", "webm", {"vp9", "opus"}),
    ],
)
async def test_the_container_is_a_remux(client, media_server, path, container, codecs):
    task_id = await submit(client, media_server.url(path), container=container, extract_audio=False)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    (video,) = status["files"]["items"]
    assert video["name"].endswith(f".{container}")
    info = ffprobe(client.settings.media_dir / task_id / f"video.{container}")
    assert {s["codec_name"] for s in info["streams"]} == codecs


async def test_streams_that_do_not_fit_the_container_fail_the_task_clearly(client, media_server):
    task_id = await submit(client, media_server.url("/media/sample.mp4"), container="webm")
    status = await wait_status(client, task_id)
    assert status["status"] == "failed", status
    assert "cannot go into webm without re-encoding" in status["error"] and "h264" in status["error"]
    assert not (client.settings.media_dir / task_id).exists()
