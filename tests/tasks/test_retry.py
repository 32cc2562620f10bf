"""Transient download errors are retried with growing waits; permanent ones fail at once."""

import asyncio
import uuid

import pytest

from app.settings import ConfigError, load_settings
from tests.support.helpers import submit, wait_status


def test_retry_settings():
    settings = load_settings({"VIDEO_API_DOWNLOAD_ATTEMPTS": "5", "VIDEO_API_RETRY_DELAY_S": "0.5"})
    assert (settings.download_attempts, settings.retry_delay_s) == (5, 0.5)
    assert (load_settings({}).download_attempts, load_settings({}).retry_delay_s) == (3, 2.0)
    with pytest.raises(ConfigError, match="VIDEO_API_DOWNLOAD_ATTEMPTS=0 must be between 1 and 20"):
        load_settings({"VIDEO_API_DOWNLOAD_ATTEMPTS": "0"})
    with pytest.raises(ConfigError, match="VIDEO_API_RETRY_DELAY_S='soon' is not a number"):
        load_settings({"VIDEO_API_RETRY_DELAY_S": "soon"})


def flaky_url(media_server, mode: str, fails: int = 2) -> tuple[str, str]:
    key = uuid.uuid4().hex
    return key, media_server.url(f"/flaky/{key}/sample.mp4?fails={fails}&mode={mode}")


@pytest.mark.parametrize("mode", ["503", "reset"])
async def test_a_server_that_fails_twice_then_serves_is_retried_into_success(make_client, media_server, mode):
    client = await make_client(download_attempts=3, retry_delay_s=0.3)
    key, url = flaky_url(media_server, mode)
    task_id = await submit(client, url, extract_audio=False)
    messages = set()
    while (task := await (await client.get(f"/api/status/{task_id}")).json())["status"] not in ("completed", "failed"):
        messages.add(task["message"])
        await asyncio.sleep(0.05)
    assert task["status"] == "completed", task
    assert media_server.flaky_hits[key] >= 3
    retries = sorted(m for m in messages if m.startswith("transient error"))
    assert [m.split(":")[0] for m in retries] == [
        "transient error, retry 1 of 2 in 0.3 s",
        "transient error, retry 2 of 2 in 0.6 s",
    ], messages
    assert (await client.get(task["files"]["video"])).status == 200


async def test_transient_errors_fail_the_task_when_the_attempts_are_used_up(make_client, media_server):
    client = await make_client(download_attempts=2, retry_delay_s=0.05)
    key, url = flaky_url(media_server, "503", fails=5)
    task = await wait_status(client, await submit(client, url, extract_audio=False))
    assert task["status"] == "failed"
    assert "503" in task["error"], task
    assert media_server.flaky_hits[key] == 2


async def test_a_permanent_error_fails_at_once(make_client, media_server):
    client = await make_client(download_attempts=5, retry_delay_s=0.05)
    path = f"/media/missing-{uuid.uuid4().hex}.mp4"
    task = await wait_status(client, await submit(client, media_server.url(path), extract_audio=False))
    assert task["status"] == "failed"
    assert "404" in task["error"], task
    assert [p for p, _ in media_server.requests if p == path] == [path]
