"""The manager's watcher of a download: however it ends, the download stops and the host goes on."""

import asyncio
import os

from app.api.keys import MANAGER
from tests.support.helpers import leftovers, submit, wait_status


async def test_a_watcher_ended_by_a_store_error_stops_its_download_and_the_host_goes_on(
    make_client, media_server, monkeypatch
):
    client = await make_client()
    store = client.app[MANAGER].store
    update_owned = store.update_owned

    async def broken_on_progress(task_id, fields, only_if=None):
        if "progress" in fields and task_id == broken:
            raise RuntimeError("the store broke")
        return await update_owned(task_id, fields, only_if) if only_if else await update_owned(task_id, fields)

    monkeypatch.setattr(store, "update_owned", broken_on_progress)
    broken = await submit(client, media_server.url("/slow/noise.mp4?rate=400000&watcher=1"), extract_audio=False)
    failed = await wait_status(client, broken)
    assert failed["status"] == "failed" and "internal error while watching" in failed["error"], failed
    deadline = asyncio.get_running_loop().time() + 10
    while leftovers(os.getpid(), client.settings.media_dir / broken):  # its download was cancelled
        assert asyncio.get_running_loop().time() < deadline, leftovers(os.getpid(), client.settings.media_dir)
        await asyncio.sleep(0.05)
    assert not (client.settings.media_dir / broken).exists()
    later = await submit(client, media_server.url("/media/sample.mp4?watcher=2"), extract_audio=False)
    assert (await wait_status(client, later))["status"] == "completed"
