"""callback_url: one signed POST of the final task to a receiver on 127.0.0.1, retried after a 503."""

import asyncio
import hashlib
import hmac
import json
import logging
import time

import pytest
from aiohttp import web

from app.settings import ConfigError, load_settings
from app.tasks.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Callbacks
from tests.support.helpers import make_settings, submit, wait_status

SECRET = "callback-secret-for-tests-0123456789"


async def receiver(aiohttp_server, answers):
    """A callback receiver; answers[n] is the status of the n-th POST (200 after the list)."""
    received = []

    async def receive(request):
        received.append((request.headers.copy(), await request.read()))
        return web.Response(status=answers[len(received) - 1] if len(received) <= len(answers) else 200)

    application = web.Application()
    application.router.add_post("/hook", receive)
    server = await aiohttp_server(application, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}/hook", received


async def wait_posts(received, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # and no more than that
    return received


def verified(headers, body) -> dict:
    expected = hmac.new(SECRET.encode(), headers[TIMESTAMP_HEADER].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], "sha256=" + expected.hexdigest())
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 60
    return json.loads(body)


async def test_the_receiver_gets_one_signed_post_of_the_final_task(aiohttp_server, make_client, media_server):
    hook, received = await receiver(aiohttp_server, [])
    client = await make_client(callback_secret=SECRET)
    task_id = await submit(client, media_server.url("/media/sample.webm?cb=1"), extract_audio=False, callback_url=hook)
    task = await wait_status(client, task_id)
    assert task["status"] == "completed"
    assert task["options"]["callback_url"] == hook
    posts = await wait_posts(received, 1)
    assert len(posts) == 1
    headers, body = posts[0]
    sent = verified(headers, body)
    assert (sent["task_id"], sent["status"], sent["files"]) == (task_id, "completed", task["files"])
    assert headers["X-Video-Api-Task"] == task_id


async def test_a_failing_receiver_is_retried_and_a_failed_task_is_reported(aiohttp_server, make_client, media_server):
    hook, received = await receiver(aiohttp_server, [503])
    client = await make_client(callback_secret=SECRET, retry_delay_s=0.1)
    task_id = await submit(client, media_server.url("/media/absent.mp4?cb=2"), callback_url=hook)
    assert (await wait_status(client, task_id))["status"] == "failed"
    posts = await wait_posts(received, 2)
    assert len(posts) == 2
    assert [verified(headers, body)["status"] for headers, body in posts] == ["failed", "failed"]


async def test_a_callback_url_is_checked_like_a_download_url(make_client, media_server):
    client = await make_client(callback_secret=SECRET)
    url = media_server.url("/media/sample.webm")
    for callback_url, code in (
        ("http://127.0.0.2:9/hook", "blocked_address"),
        ("file:///etc/passwd", "invalid_url"),
        (42, "invalid_url"),
    ):
        response = await client.post("/api/process", json={"url": url, "callback_url": callback_url})
        assert response.status == 422
        assert (await response.json())["error"]["code"] == code
    assert (await (await client.get("/api/tasks")).json())["total"] == 0


async def test_callbacks_need_a_secret(make_client, media_server):
    client = await make_client()
    response = await client.post(
        "/api/process", json={"url": media_server.url("/media/sample.webm"), "callback_url": "http://127.0.0.1:9/hook"}
    )
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "callbacks_disabled"


def test_callback_settings(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    settings = load_settings({"VIDEO_API_CALLBACK_SECRET_FILE": str(secret_file), "VIDEO_API_CALLBACK_ATTEMPTS": "4"})
    assert (settings.callback_secret, settings.callback_attempts) == (SECRET, 4)
    assert SECRET not in repr(settings)
    assert load_settings({}).callback_secret == ""
    with pytest.raises(ConfigError, match="VIDEO_API_CALLBACK_SECRET: the secret is shorter than 16") as error:
        load_settings({"VIDEO_API_CALLBACK_SECRET": "tiny-secret"})
    assert "tiny-secret" not in str(error.value)


async def test_delivery_rechecks_the_address_when_it_connects(aiohttp_server, tmp_path, caplog):
    # Accepted at submission, blocked by the time of delivery (DNS rebinding, changed allow-list):
    # the delivery's own resolver refuses, and nothing reaches the receiver.
    caplog.set_level(logging.INFO, "app.tasks.callbacks")
    hook, received = await receiver(aiohttp_server, [])
    settings = make_settings(tmp_path, allow_networks=(), callback_secret=SECRET, retry_delay_s=0.01)
    callbacks = Callbacks(settings, lambda task: json.dumps({"task_id": task["id"]}).encode())
    task = {"id": "0" * 32, "status": "completed"}
    assert await callbacks.deliver(hook.replace("127.0.0.1", "localhost"), task) is False
    assert await callbacks.deliver(hook, task) is False
    assert received == []
    outcomes = [r.getMessage() for r in caplog.records if r.name == "app.tasks.callbacks"]
    assert len(outcomes) == 2 and all("callback refused: host" in m and "(attempt 1)" in m for m in outcomes), outcomes
