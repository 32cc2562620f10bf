"""Playlists and channels: one parent task whose items are tasks of their own, summed up on it."""

import asyncio
import json
import os
import time

import pytest

from tests.support.helpers import FINAL, leftovers, make_settings, submit, wait_status
from tests.support.mediaserver import PLAYLIST_TITLE


async def items_of(client, parent_id: str, **query) -> dict:
    response = await client.get("/api/tasks", params={"parent_id": parent_id, "limit": "500", **query})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_playlist_becomes_a_parent_of_its_items(client, media_server):
    url = media_server.url("/playlist/12.html")
    parent_id = await submit(client, url, extract_audio=False, playlist_items="2-11,12", max_items=6)
    parent = await wait_status(client, parent_id)
    assert parent["status"] == "completed", parent["error"]
    playlist = parent["playlist"]
    assert playlist["title"] == PLAYLIST_TITLE and playlist["total"] == 12
    assert playlist["items"] == 6 and playlist["counts"]["completed"] == 6
    assert parent["progress"] == 100 and parent["files"]["items"] == []
    assert parent["downloaded_bytes"] > 0 and parent["message"] == "6 items: 6 completed"
    items = await items_of(client, parent_id)
    # In the playlist's order, items 2 to 7: playlist_items chose them, max_items cut the rest.
    assert [task["url"].rsplit("=", 1)[1] for task in items["tasks"]] == ["2", "3", "4", "5", "6", "7"]
    assert items["total"] == 6 and items["counts"]["completed"] == 6
    for item in items["tasks"]:
        assert item["parent_id"] == parent_id and item["status"] == "completed" and item["files"]["video"]
        assert "playlist_items" not in item["options"] and "max_items" not in item["options"]
    # The list shows the playlist, not its items.
    listing = await (await client.get("/api/tasks")).json()
    assert [task["task_id"] for task in listing["tasks"]] == [parent_id]
    assert listing["total"] == 1 and listing["counts"]["completed"] == 1


async def test_a_single_video_stays_one_task(client, media_server):
    task_id = await submit(client, media_server.url("/media/page.html"), extract_audio=False)
    task = await wait_status(client, task_id)
    assert task["status"] == "completed" and task["playlist"] is None and task["files"]["video"]


async def test_items_are_paged_in_order(client, media_server):
    parent_id = await submit(client, media_server.url("/playlist/5.html"), extract_audio=False)
    assert (await wait_status(client, parent_id))["status"] == "completed"
    first = await items_of(client, parent_id, limit="2")
    assert first["next"] is not None
    second = await (await client.get(first["next"])).json()
    urls = [task["url"] for task in first["tasks"] + second["tasks"]]
    assert [url.rsplit("=", 1)[1] for url in urls] == ["1", "2", "3", "4"]


async def test_max_items_above_the_setting_is_refused(make_client, media_server):
    client = await make_client(playlist_max_items=3)
    response = await client.post("/api/process", json={"url": media_server.url("/playlist/5.html"), "max_items": 4})
    body = await response.json()
    assert response.status == 422 and body["error"]["code"] == "invalid_option"
    assert "at most 3" in body["error"]["message"]
    parent_id = await submit(client, media_server.url("/playlist/5.html"), extract_audio=False)
    parent = await wait_status(client, parent_id)
    assert parent["playlist"]["items"] == 3 and parent["playlist"]["total"] == 5


async def test_a_playlist_larger_than_the_queue_room_fails_saying_why(make_client, media_server):
    client = await make_client(queue_limit=4)
    parent_id = await submit(client, media_server.url("/playlist/6.html"), extract_audio=False)
    parent = await wait_status(client, parent_id)
    assert parent["status"] == "failed", parent
    assert "6 items" in parent["error"] and "room for 4" in parent["error"] and "max_items" in parent["error"]
    assert (await items_of(client, parent_id))["total"] == 0
    # Asking for what fits works.
    smaller = await submit(client, media_server.url("/playlist/6.html"), extract_audio=False, max_items=4)
    assert (await wait_status(client, smaller))["status"] == "completed"


async def test_events_carry_the_sum_and_the_items(client, media_server):
    url = media_server.url("/playlist/3.html")
    parent_id = await submit(client, url, extract_audio=False)
    events = []
    async with client.get(f"/api/tasks/{parent_id}/events") as response:
        kind = None
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("event: "):
                kind = text.removeprefix("event: ")
            elif text.startswith("data: "):
                events.append((kind, json.loads(text.removeprefix("data: "))))
    own = [task for kind, task in events if kind != "item"]
    items = [task for kind, task in events if kind == "item"]
    assert own[-1]["status"] == "completed" and own[-1]["playlist"]["counts"]["completed"] == 3
    progress = [task["progress"] for task in own if task["playlist"]]
    assert progress == sorted(progress) and progress[-1] == 100
    assert {task["task_id"] for task in items} == {t["task_id"] for t in (await items_of(client, parent_id))["tasks"]}
    assert {task["status"] for task in items} >= {"downloading", "completed"}
    assert all(task["parent_id"] == parent_id for task in items)


async def test_cancelling_the_playlist_stops_its_items_and_deletes_their_files(make_client, media_server):
    client = await make_client(max_concurrent=2)
    url = media_server.url("/playlist/5.html?src=/slow/sample.mp4")
    parent_id = await submit(client, url, extract_audio=False)
    # Wait for two items downloading and one finished... or at least two running workers.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        items = (await items_of(client, parent_id))["tasks"]
        if sum(item["status"] == "downloading" and bool(item["downloaded_bytes"]) for item in items) == 2:
            break
        assert asyncio.get_running_loop().time() < deadline, items
        await asyncio.sleep(0.05)
    response = await client.delete(f"/api/tasks/{parent_id}")
    assert response.status == 200
    parent = await response.json()
    assert parent["status"] == "cancelled"
    items = (await items_of(client, parent_id))["tasks"]
    assert {item["status"] for item in items} == {"cancelled"}
    media = client.settings.media_dir
    assert leftovers(os.getpid(), media) == []  # the in-process service's download host
    assert not any(media.rglob("*.*")), list(media.rglob("*"))


async def test_an_item_on_its_own_is_a_normal_task(client, media_server):
    parent_id = await submit(client, media_server.url("/playlist/2.html"), extract_audio=False)
    assert (await wait_status(client, parent_id))["status"] == "completed"
    first = (await items_of(client, parent_id))["tasks"][0]
    task = await wait_status(client, first["task_id"], FINAL)
    assert task["files"]["video"]
    download = await client.get(task["files"]["video"])
    assert download.status == 200


def _items_in_store(service, parent_id: str) -> int:
    return service.get(f"/api/tasks?parent_id={parent_id}&limit=500")["total"]


def test_kill_9_during_the_expansion_resumes_without_duplicate_items(service_factory, media_server):
    service = service_factory()
    mark = len(media_server.requests)
    # The page answers after 3 s: the worker is reading it when the service dies.
    parent_id = service.submit(media_server.url("/playlist/4.html?delay=3"), extract_audio=False)
    deadline = time.monotonic() + 20
    while not any(path == "/playlist/4.html" for path, _ in media_server.requests[mark:]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    service.kill()
    restarted = service_factory()
    parent = restarted.wait(parent_id, lambda task: task["status"] in FINAL)
    assert parent["status"] == "completed" and parent["attempts"] == 2, parent
    assert parent["playlist"]["items"] == 4 and _items_in_store(restarted, parent_id) == 4
    restarted.stop()


def test_kill_9_while_items_run_resumes_them_and_the_playlist_ends_once(service_factory, media_server):
    service = service_factory()
    parent_id = service.submit(media_server.url("/playlist/3.html?src=/slow/sample.mp4"), extract_audio=False)
    service.wait(parent_id, lambda task: task["playlist"] is not None and task["playlist"]["counts"]["downloading"])
    service.kill()
    restarted = service_factory()
    parent = restarted.wait(parent_id, lambda task: task["status"] in FINAL)
    assert parent["status"] == "completed" and parent["playlist"]["counts"]["completed"] == 3, parent
    assert parent["attempts"] == 1  # expanded once: a playlist is not requeued at a restart
    assert _items_in_store(restarted, parent_id) == 3
    restarted.stop()


async def test_a_playlist_none_of_whose_items_completes_fails_saying_so(client, media_server):
    parent_id = await submit(client, media_server.url("/playlist/2.html?src=/media/missing.mp4"), extract_audio=False)
    parent = await wait_status(client, parent_id)
    assert parent["status"] == "failed" and parent["playlist"]["counts"]["failed"] == 2, parent
    assert parent["error"] == "no item of the playlist completed (2 failed)" and parent["progress"] < 100
    items = (await items_of(client, parent_id))["tasks"]
    assert all(item["status"] == "failed" and "404" in item["error"] for item in items), items


async def test_the_playlists_callback_is_sent_once_when_its_last_item_ends(make_client, media_server):
    client = await make_client(callback_secret="callback-secret-for-tests-0123456789")
    mark = len(media_server.hook_bodies)
    url = media_server.url("/playlist/3.html?hook=1")
    parent_id = await submit(client, url, extract_audio=False, callback_url=media_server.url("/hook"))
    assert (await wait_status(client, parent_id))["status"] == "completed"
    deadline = time.monotonic() + 10
    while len(media_server.hook_bodies) == mark and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # nothing more comes: the items have no callback of their own
    bodies = [json.loads(body) for body in media_server.hook_bodies[mark:]]
    assert [body["task_id"] for body in bodies] == [parent_id]
    assert bodies[0]["playlist"]["counts"]["completed"] == 3 and bodies[0]["progress"] == 100


async def test_an_rss_feed_is_a_playlist_of_its_enclosures(client, media_server):
    parent_id = await submit(client, media_server.url("/feed/3.xml"), extract_audio=False, playlist_items="-2:")
    parent = await wait_status(client, parent_id)
    assert parent["status"] == "completed" and parent["playlist"]["title"] == f"{PLAYLIST_TITLE} feed", parent
    items = (await items_of(client, parent_id))["tasks"]
    assert [item["url"].rsplit("=", 1)[1] for item in items] == ["2", "3"]  # the last two
    assert all(item["files"]["video"] for item in items)


def test_a_video_read_as_a_possible_playlist_fails_with_ytdlps_message(media_server, tmp_path, monkeypatch):
    # Reading the URL once to see whether it is a playlist, then downloading what was read, must
    # report yt-dlp's errors as its one-step extract_info() did: a clean task error, not an internal one.
    from app.tasks import downloader
    from app.tasks.messages import DownloadOptions, RunSpec

    monkeypatch.setattr(downloader, "_format_selector", lambda *args: "bv*[height>100000]")
    spec = RunSpec(
        task_id="a" * 32,
        url=media_server.url("/media/sample.mp4?format=none"),
        options=DownloadOptions("best", True, False, "mp3", "192"),
        task_dir=str(tmp_path / "task"),
        max_filesize=2**30,
        download_attempts=1,
        retry_delay_s=0,
        max_items=10,
    )
    with pytest.raises(downloader.TaskError, match="Requested format is not available"):
        downloader.download(spec, lambda report: None)


async def test_a_playlist_whose_last_item_ended_unsummed_settles_when_the_service_runs_again(make_client, tmp_path):
    # The service died (or the database went away) between the last item's final write and the sum-up
    # of its playlist: nothing would ever sum it up again, and the playlist stayed downloading for good.
    from tests.tasks.test_reconcile import open_store, running_task

    settings = make_settings(tmp_path)
    store = await open_store(settings)
    parent_id = await running_task(store, "http://127.0.0.1/playlist.html")
    item = {
        "id": "c" * 32,
        "url": "http://127.0.0.1/v.mp4",
        "options": {},
        "dedupe_key": "i",
        "message": "",
        "tenant": "admin",
    }
    assert await store.expand(parent_id, {"title": "t", "total": 1, "items": 1, "skipped": 0}, [item], 100)
    await store._update(item["id"], {"status": "failed", "error": "gone"}, ("queued",), owned=False)  # untold
    assert (await store.get(parent_id))["status"] == "downloading"
    await store.close()

    client = await make_client()
    parent = await wait_status(client, parent_id, timeout=10)
    assert parent["status"] == "failed" and parent["playlist"]["counts"]["failed"] == 1, parent
