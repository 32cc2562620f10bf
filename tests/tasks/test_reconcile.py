"""After a database restore (or a lost disk) the service reconciles its task store with its media
folder: a file the store lists but the disk lacks is shown removed (410, with why), files the store
does not know are cleaned by retention, running tasks are requeued, and none stays `downloading`.

A restore is reproduced by the states it leaves: the store's rows written directly (as the backup
had them) and the media folder changed under them (as it was when the database was lost).
"""

import shutil
import time
import uuid

import pytest

from app.api.contract import ProcessRequest
from app.store.postgres import PostgresTaskStore
from app.store.records import NewFile, NewTask
from app.store.sqlite import SQLiteTaskStore
from tests.support.helpers import ON_POSTGRES, make_settings, submit, wait_status

# Why a file's record says it is removed when reconciliation found it missing.
MISSING_REASON = "missing on disk (database restored or disk replaced)"


async def open_store(settings, node=None):
    """The store the service will open on these settings (another node's with node)."""
    if settings.database_url:
        return await PostgresTaskStore.connect(settings.database_url, node or settings.node_name, settings.lease_s)
    return SQLiteTaskStore(settings.db_path)


async def running_task(store, url: str) -> str:
    task_id = uuid.uuid4().hex
    options = ProcessRequest(url=url).options()  # as the API records them
    await store.create(
        NewTask(id=task_id, url=url, options=options, dedupe_key=task_id, message="queued", tenant="admin"), 100
    )
    claimed = await store.claim_next()
    assert claimed is not None and claimed["id"] == task_id
    return task_id


async def completed_task(store, settings, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """A completed task with these files (name: content) written; returns its id and file ids by name."""
    task_id = await running_task(store, f"http://127.0.0.1:9/{uuid.uuid4().hex}.mp4")
    task_dir = settings.media_dir / task_id
    task_dir.mkdir(parents=True)
    records = []
    for (name, content), kind in zip(files.items(), ("video", "audio"), strict=False):
        (task_dir / name).write_bytes(content)
        records.append(
            NewFile(
                id=uuid.uuid4().hex, kind=kind, language=None, path=f"{task_id}/{name}", name=name, size=len(content)
            )
        )
    assert await store.complete(task_id, records)
    return task_id, {record["name"]: record["id"] for record in records}


async def error_of(client, file_id: str) -> tuple[int, str]:
    response = await client.get(f"/api/download/{file_id}")
    body = await response.json() if response.status != 200 else {"error": {"message": ""}}
    return response.status, body["error"]["message"]


async def test_files_lost_with_the_disk_are_shown_removed_at_start(make_client, tmp_path):
    settings = make_settings(tmp_path)
    store = await open_store(settings)
    lost, lost_files = await completed_task(store, settings, {"video.mp4": b"v" * 1000, "audio.m4a": b"a" * 100})
    kept, kept_files = await completed_task(store, settings, {"video.mp4": b"k" * 500})
    await store.close()
    # The database was restored from before retention deleted these; or the disk was replaced.
    shutil.rmtree(settings.media_dir / lost)

    client = await make_client(retention_interval_s=3600)  # only the start-up reconciles

    status = await (await client.get(f"/api/status/{lost}")).json()
    assert status["status"] == "completed"
    assert status["message"] == f"files removed: {MISSING_REASON}", status
    for file_id in lost_files.values():
        assert await error_of(client, file_id) == (410, f"file was removed: {MISSING_REASON}")
    assert (await client.get(f"/api/download/{kept_files['video.mp4']}")).status == 200
    assert (await (await client.get(f"/api/status/{kept}")).json())["message"] == "completed"
    info = await (await client.get("/api/storage/info")).json()
    assert (info["files"], info["used_bytes"]) == (1, 500)  # no phantom bytes for the storage cap


async def test_each_retention_pass_notices_files_gone_from_disk(make_client, media_server):
    client = await make_client(retention_interval_s=3600)
    done = await wait_status(client, await submit(client, media_server.url("/media/sample.webm?reconcile=1")))
    assert done["status"] == "completed"
    shutil.rmtree(client.settings.media_dir / done["task_id"])

    body = await (await client.post("/api/storage/cleanup")).json()
    assert body["files_deleted"] == 0  # nothing was on disk to delete
    status = await (await client.get(f"/api/status/{done['task_id']}")).json()
    assert status["message"] == f"files removed: {MISSING_REASON}", status
    for url in (item["url"] for item in done["files"]["items"]):
        response = await client.get(url)
        assert response.status == 410
        assert (await response.json())["error"]["message"] == f"file was removed: {MISSING_REASON}"
    assert (await (await client.get("/api/storage/info")).json())["files"] == 0


async def test_files_the_restored_store_does_not_know_or_records_otherwise_are_cleaned(make_client, tmp_path):
    settings = make_settings(tmp_path)
    store = await open_store(settings)
    task_id, file_ids = await completed_task(store, settings, {"video.mp4": b"v" * 1000, "audio.m4a": b"a" * 100})
    await store.close()
    task_dir = settings.media_dir / task_id
    # Written after the backup: a task the restored database never heard of, a file its task does
    # not list, and a file at a recorded path whose size is not the recorded one.
    unknown = settings.media_dir / uuid.uuid4().hex
    unknown.mkdir()
    (unknown / "video.mp4").write_bytes(b"u" * 300)
    (task_dir / "video.f1.mp4.part").write_bytes(b"p" * 10)
    (task_dir / "audio.m4a").write_bytes(b"b" * 99)

    client = await make_client(retention_interval_s=3600)
    await client.post("/api/storage/cleanup")

    assert not unknown.exists()
    assert sorted(path.name for path in task_dir.iterdir()) == ["video.mp4"]
    assert (await client.get(f"/api/download/{file_ids['video.mp4']}")).status == 200
    assert await error_of(client, file_ids["audio.m4a"]) == (410, f"file was removed: {MISSING_REASON}")
    info = await (await client.get("/api/storage/info")).json()
    assert (info["files"], info["used_bytes"]) == (1, 1000)


async def test_a_task_restored_as_running_here_is_requeued_and_completes(make_client, media_server, tmp_path):
    settings = make_settings(tmp_path)
    store = await open_store(settings)
    task_id = await running_task(store, media_server.url("/media/sample.webm?restored=1"))
    await store.close()
    # What its worker had written when the database was backed up, or lost.
    (settings.media_dir / task_id).mkdir(parents=True)
    (settings.media_dir / task_id / "stale.part").write_bytes(b"s" * 10)

    client = await make_client(retention_interval_s=3600)
    done = await wait_status(client, task_id)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2  # the restored run counts as an attempt
    assert all([(await client.get(url)).status == 200 for url in (item["url"] for item in done["files"]["items"])])
    await client.post("/api/storage/cleanup")
    assert not (settings.media_dir / task_id / "stale.part").exists()


@pytest.mark.skipif(not ON_POSTGRES, reason="tasks of another host exist with several hosts (PostgreSQL) only")
async def test_a_task_restored_as_running_on_a_host_that_is_gone_is_taken_over(make_client, media_server, tmp_path):
    settings = make_settings(tmp_path, lease_s=3.0)
    store = await open_store(settings, node="gone-host")
    task_id = await running_task(store, media_server.url("/media/sample.webm?gone=1"))
    await store.close()

    client = await make_client(retention_interval_s=3600, lease_s=3.0)
    started = time.monotonic()
    done = await wait_status(client, task_id, timeout=30)
    assert done["status"] == "completed", done
    assert time.monotonic() - started < 20
    assert (await client.get(done["files"]["video"])).status == 200
