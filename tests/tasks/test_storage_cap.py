"""The storage cap holds while downloads run, not only at the next retention pass: the media
folder stays within one file of VIDEO_API_MAX_STORAGE_MB at every moment."""

import asyncio
import os

import pytest

from app.settings import ConfigError, load_settings
from tests.support.helpers import submit, wait_status

MB = 1024 * 1024


def folder_bytes(folder) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


async def test_six_downloads_into_a_small_cap_never_overflow_it(make_client, media_server):
    cap_mb = 3
    # retention_interval_s: no pass during the test; only the cap enforcement of downloads acts.
    client = await make_client(max_storage_mb=cap_mb, max_concurrent=2, retention_interval_s=3600)
    file_size = (media_server.folder / "noise.mp4").stat().st_size
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, folder_bytes(client.settings.media_dir))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    ids = [
        await submit(client, media_server.url(f"/slow/noise.mp4?rate=1500000&cap={n}"), extract_audio=False)
        for n in range(6)
    ]
    finals = [await wait_status(client, task_id) for task_id in ids]
    sampler.cancel()
    print(f"peak {peak / MB:.2f} MB against a cap of {cap_mb} MB ({file_size / MB:.2f} MB files, 6 downloads)")
    assert [final["status"] for final in finals] == ["completed"] * 6
    assert peak <= cap_mb * MB + file_size
    assert folder_bytes(client.settings.media_dir) <= cap_mb * MB + file_size
    info = await (await client.get("/api/storage/info")).json()
    assert info["used_bytes"] <= cap_mb * MB
    survivors = [final for final in finals if (await client.get(final["files"]["video"])).status == 200]
    assert survivors and survivors[-1]["task_id"] == ids[-1]  # the oldest went first


async def test_the_retention_pass_runs_at_its_interval(make_client, media_server):
    client = await make_client(retention_hours=0.0003, retention_interval_s=1.0)  # about a second
    done = await wait_status(client, await submit(client, media_server.url("/media/sample.webm?interval=1")))
    for _ in range(100):
        if (await client.get(done["files"]["video"])).status == 410:
            break
        await asyncio.sleep(0.1)
    assert (await client.get(done["files"]["video"])).status == 410


@pytest.mark.parametrize("value", ["0", "0.5", "soon", "²", "-5"])
def test_the_retention_interval_is_a_checked_setting(value):
    assert load_settings({"VIDEO_API_RETENTION_INTERVAL_S": "30"}).retention_interval_s == 30.0
    with pytest.raises(ConfigError, match="VIDEO_API_RETENTION_INTERVAL_S"):
        load_settings({"VIDEO_API_RETENTION_INTERVAL_S": value})
