"""Server-Sent Events of a task: progress and state changes until it ends; Last-Event-ID resumes."""

import json

from app.store.base import TaskStore
from app.store.sqlite import SQLiteTaskStore
from app.tasks import events as events_module
from app.tasks.events import EventHub
from tests.support.helpers import submit, wait_status

SLOW = "/slow/noise.mp4?rate=600000"


async def read_events(response, limit=None) -> list[dict]:
    """Parse the stream into [{"id", "event", "data"}] until it ends (or `limit` events)."""
    events, current = [], {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in current:
                events.append({**current, "data": json.loads(current["data"])})
                if limit is not None and len(events) >= limit:
                    break
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def seqs(events) -> list[int]:
    return [int(event["id"].split("-")[1]) for event in events]


async def test_a_client_sees_progress_then_the_final_event(client, media_server):
    task_id = await submit(client, media_server.url(SLOW + "&sse=1"), extract_audio=False)
    response = await client.get(f"/api/tasks/{task_id}/events")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(response)
    statuses = [event["data"]["status"] for event in events]
    assert statuses[-1] == "completed" and events[-1]["event"] == "status"
    assert "downloading" in statuses and "processing" in statuses
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert len([p for p in progress if 0 < p < 100]) >= 2, progress
    assert progress == sorted(progress)
    assert seqs(events) == sorted(set(seqs(events)))
    assert events[-1]["data"]["files"]["video"]


async def test_a_reconnect_with_last_event_id_misses_nothing(client, media_server):
    task_id = await submit(client, media_server.url(SLOW + "&sse=2"), extract_audio=False)
    first = await read_events(await client.get(f"/api/tasks/{task_id}/events"), limit=3)
    assert len(first) == 3
    resumed = await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": first[-1]["id"]})
    rest = await read_events(resumed)
    assert rest[-1]["data"]["status"] == "completed"
    # Replayed from the buffer: the next event after the last one seen, nothing skipped or repeated.
    numbers = seqs(first) + seqs(rest)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


async def test_an_unknown_or_stale_event_id_starts_with_a_snapshot(client, media_server):
    task_id = await submit(client, media_server.url("/media/sample.webm?sse=3"), extract_audio=False)
    await wait_status(client, task_id)
    for last_event_id in (None, "0123abcd-5", "garbage"):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        events = await read_events(await client.get(f"/api/tasks/{task_id}/events", headers=headers))
        assert [(e["event"], e["data"]["status"]) for e in events] == [("status", "completed")]


async def test_events_of_an_unknown_task_are_404(client):
    response = await client.get(f"/api/tasks/{'0' * 32}/events")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "task_not_found"


async def test_a_finished_task_keeps_only_its_final_event_and_old_streams_are_forgotten(tmp_path, monkeypatch):
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    hub = EventHub()
    task, _ = await store.create(
        {
            "id": "a" * 32,
            "url": "http://127.0.0.1/x",
            "options": {},
            "dedupe_key": "k",
            "message": "queued",
            "tenant": "admin",
        },
        10,
    )
    for status in ("downloading", "downloading", "processing", "completed"):
        hub.publish({**task, "status": status})
    stream = hub._streams[task["id"]]
    assert [event.seq for event in stream.events] == [4]  # nobody follows: only the final event stays
    await store.update(task["id"], {"status": "completed"})
    # An id from before the final event: a snapshot of the task as it is, then the end.
    events = [e async for e in hub.follow(task["id"], f"{hub.boot}-2", store, keepalive_s=1)]
    assert [(e.kind, e.task["status"]) for e in events] == [("status", "completed")]
    monkeypatch.setattr(events_module, "TASKS_KEPT", 2)
    for n in range(3):
        hub.publish({**task, "id": f"{n:032x}"})
    assert len(hub._streams) == 2
    await store.close()


async def _each_change(store: TaskStore) -> dict:
    """Every task-changing method called once on a real store; name -> the task it changed."""
    task = {
        "id": "a" * 32,
        "url": "http://127.0.0.1/x",
        "options": {},
        "dedupe_key": "k",
        "message": "",
        "tenant": "admin",
    }
    changed = {"create": (await store.create(task, 10))[0]["id"]}
    changed["claim_next"] = (await store.claim_next())["id"]
    await store.update(task["id"], {"progress": 5.0})
    changed["update"] = task["id"]
    await store.update_owned(task["id"], {"progress": 6.0})
    changed["update_owned"] = task["id"]
    changed["requeue_running"] = (await store.requeue_running("restart", count_attempt=False))[0]
    await store.claim_next()
    await store.complete(task["id"], [])
    changed["complete"] = task["id"]
    playlist = {**task, "id": "b" * 32, "dedupe_key": "p"}
    await store.create(playlist, 10)
    await store.claim_next()
    item = {**task, "id": "c" * 32, "dedupe_key": "i"}
    await store.expand(playlist["id"], {"title": None, "items": 1}, [item], 10)
    changed["expand"] = item["id"]
    await store.claim_next()
    await store.complete(item["id"], [])  # the playlist's last item: it sums up and ends
    changed["sum_up_playlist"] = playlist["id"]
    assert (await store.get(playlist["id"]))["status"] == "completed"
    return changed


async def test_every_store_method_that_changes_a_task_tells_the_observers(tmp_path):
    # A store implements each change as an abstract `_name`; the public `name`, written once in the
    # base class, tells the observers (the event hub, the cluster's announcements).
    implemented = {name.lstrip("_") for name in TaskStore.__abstractmethods__ if name.startswith("_")} - {"rows"}
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    told = []

    async def observer(tasks):
        told.extend(task["id"] for task in tasks)

    store.observe(observer)
    changes = await _each_change(store)
    assert implemented <= set(changes), "a change of the store has no check here"
    calls: dict[str, int] = {}
    for name, task_id in changes.items():
        calls[task_id] = calls.get(task_id, 0) + 1  # the changes of each task so far, each told
        assert told.count(task_id) >= calls[task_id], f"{name} changed task {task_id} but told nobody"
    await store.close()
