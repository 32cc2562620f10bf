"""The manager's watcher of a worker: however it ends, it leaves no reader on the worker's pipe."""

import asyncio

from app.api.keys import MANAGER
from tests.support.helpers import submit, wait_status


async def test_a_watcher_ended_by_a_store_error_leaves_every_later_connection_answered(
    make_client, media_server, monkeypatch
):
    client = await make_client()
    store = client.app[MANAGER].store
    update_owned = store.update_owned

    async def broken_on_progress(task_id, fields, only_if=None):
        if "progress" in fields:
            raise RuntimeError("the store broke")
        return await update_owned(task_id, fields, only_if) if only_if else await update_owned(task_id, fields)

    task_id = await submit(client, media_server.url("/slow/noise.mp4?rate=400000&watcher=1"), extract_audio=False)
    running = client.app[MANAGER]._running
    while task_id not in running:
        await asyncio.sleep(0.01)
    pipe = running[task_id].conn.fileno()
    monkeypatch.setattr(store, "update_owned", broken_on_progress)
    failed = await wait_status(client, task_id)
    assert failed["status"] == "failed" and "internal error while watching" in failed["error"], failed
    registered = asyncio.get_running_loop()._selector.get_map().get(pipe)  # type: ignore[attr-defined]
    readers = [registered.data[0]] if registered is not None and registered.data[0] else []
    assert [r for r in readers if getattr(r._callback, "__name__", "") == "readable"] == [], "a reader is left"
    # New connections now get the numbers of the descriptors the watcher closed: each is answered.
    for _ in range(100):
        response = await asyncio.wait_for(client.get(f"/api/status/{task_id}", headers={"Connection": "close"}), 5)
        assert response.status == 200
        await response.release()
