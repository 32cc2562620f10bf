"""Users of one service (the tenants file): each user sees only its own tasks and files, an admin
sees all; limits per user; the audit lines and metrics name users, never tokens."""

import asyncio
import logging
import re
import time

import pytest

from app.tenants.tenants_file import Role, Tenant, token_digest, write

OPS = "ops-admin-token-0123456789abcdef"
ALICE = "alice-user-token-0123456789abcd"
BOB = "bob-user-token-0123456789abcdef"
NO_SUCH_TASK = "f" * 32


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def write_tenants(path, **limits) -> str:
    """The tenants file of the tests: ops (admin), alice and bob (users); limits: {user: {key: value}}."""
    users = {
        "ops": Tenant("ops", Role.ADMIN, token_digest(OPS)),
        "alice": Tenant("alice", Role.USER, token_digest(ALICE), **limits.get("alice", {})),
        "bob": Tenant("bob", Role.USER, token_digest(BOB), **limits.get("bob", {})),
    }
    write(path, users)
    return str(path)


@pytest.fixture
async def users_client(make_client, tmp_path):
    async def start(limits=None, **settings):
        return await make_client(tenants_file=write_tenants(tmp_path / "tenants.toml", **(limits or {})), **settings)

    return start


async def call(client, method: str, path: str, token: str, headers: dict | None = None, **kwargs):
    response = await client.request(method, path, headers={**bearer(token), **(headers or {})}, **kwargs)
    body = await response.json() if response.content_type == "application/json" else await response.read()
    return response, body


async def submit_as(client, token: str, url: str, status: int = 202, **options) -> dict:
    response, body = await call(client, "POST", "/api/process", token, json={"url": url, **options})
    assert response.status == status, body
    return body


async def wait_done(client, token: str, task_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, body = await call(client, "GET", f"/api/status/{task_id}", token)
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


def same_refusal(body: dict, missing: dict, task_id: str) -> bool:
    """Another user's task is refused exactly as a task that does not exist."""
    return body["error"]["code"] == missing["error"]["code"] and body["error"]["message"].replace(
        task_id, NO_SUCH_TASK
    ) == missing["error"]["message"].replace(NO_SUCH_TASK, NO_SUCH_TASK)


async def test_a_user_reaches_none_of_another_users_tasks_or_files_through_any_endpoint(users_client, media_server):
    client = await users_client()
    theirs = {
        OPS: await submit_as(client, OPS, media_server.url("/media/sample.mp4?owner=ops"), extract_audio=True),
        ALICE: await submit_as(client, ALICE, media_server.url("/media/sample.mp4?owner=alice"), extract_audio=True),
    }
    done = {token: await wait_done(client, OPS, body["task_id"]) for token, body in theirs.items()}
    assert [task["status"] for task in done.values()] == ["completed", "completed"]
    assert [task["owner"] for task in done.values()] == ["ops", "alice"]
    for token, outsider in ((OPS, BOB), (OPS, ALICE), (ALICE, BOB)):
        task = done[token]
        task_id = task["task_id"]
        for method, path in (
            ("GET", "/api/status/{}"),
            ("GET", "/api/tasks/{}/events"),
            ("DELETE", "/api/tasks/{}"),
        ):
            response, body = await call(client, method, path.format(task_id), outsider)
            _, missing = await call(client, method, path.format(NO_SUCH_TASK), outsider)
            assert response.status == 404 and same_refusal(body, missing, task_id), (method, path, body)
        response, body = await call(client, "GET", f"/api/tasks?parent_id={task_id}", outsider)
        assert response.status == 404, body
        for file in task["files"]["items"]:
            response, body = await call(client, "GET", file["url"], outsider)
            assert response.status == 404 and body["error"]["code"] == "file_not_found", body
    # Bob has nothing: no count, no page, no next link gives anything away.
    response, listing = await call(client, "GET", "/api/tasks?limit=1", BOB)
    assert response.status == 200
    assert listing["total"] == 0 and set(listing["counts"].values()) == {0}
    assert listing["tasks"] == [] and listing["next"] is None
    _, listing = await call(client, "GET", "/api/tasks?limit=1&status=completed", ALICE)
    assert [t["task_id"] for t in listing["tasks"]] == [done[ALICE]["task_id"]] and listing["next"] is None
    assert listing["counts"]["completed"] == listing["total"] == 1
    _, listing = await call(client, "GET", "/api/tasks", OPS)
    assert {(t["task_id"], t["owner"]) for t in listing["tasks"]} == {(t["task_id"], t["owner"]) for t in done.values()}
    # The outsiders' DELETEs changed nothing; the owners still get their files.
    for token, task in done.items():
        _, again = await call(client, "GET", f"/api/status/{task['task_id']}", token)
        assert again["status"] == "completed"
        response, _ = await call(client, "GET", task["files"]["video"], token)
        assert response.status == 200
    _, alice = await call(client, "GET", "/api/me", ALICE)
    assert (alice["name"], alice["role"], alice["active_tasks"]) == ("alice", "user", 0)
    assert alice["storage_bytes"] == sum(file["size"] for file in done[ALICE]["files"]["items"])
    assert (await call(client, "GET", "/api/me", OPS))[1]["role"] == "admin"
    for method, path in (("GET", "/api/storage/info"), ("POST", "/api/storage/cleanup")):
        response, body = await call(client, method, path, ALICE)
        assert response.status == 403 and body["error"]["code"] == "admin_only"
        assert (await call(client, method, path, OPS))[0].status == 200


async def test_each_user_gets_its_own_task_for_the_same_video_and_reuses_only_its_own(users_client, media_server):
    client = await users_client()
    slow = media_server.url("/slow/sample.mp4?rate=200000&same=1")
    alice = await submit_as(client, ALICE, slow, extract_audio=False)
    bob = await submit_as(client, BOB, slow, extract_audio=False)
    assert alice["task_id"] != bob["task_id"]
    assert (await submit_as(client, ALICE, slow, extract_audio=False))["task_id"] == alice["task_id"]
    url = media_server.url("/media/sample.mp4?reuse=1")
    first = await submit_as(client, ALICE, url, extract_audio=False)
    assert (await wait_done(client, ALICE, first["task_id"]))["status"] == "completed"
    assert (await submit_as(client, ALICE, url, 200, extract_audio=False, reuse=True))["task_id"] == first["task_id"]
    assert (await submit_as(client, BOB, url, 202, extract_audio=False, reuse=True))["task_id"] != first["task_id"]


async def test_a_user_at_its_active_task_limit_gets_429_naming_it_and_others_go_on(users_client, media_server):
    client = await users_client({"alice": {"max_active_tasks": 1}})
    await submit_as(client, ALICE, media_server.url("/slow/sample.mp4?rate=100000&n=1"), extract_audio=False)
    response, body = await call(
        client, "POST", "/api/process", ALICE, json={"url": media_server.url("/media/sample.mp4?n=2")}
    )
    assert response.status == 429 and body["error"]["code"] == "user_limit_reached", body
    assert "max_active_tasks = 1" in body["error"]["message"] and int(response.headers["Retry-After"]) > 0
    await submit_as(client, BOB, media_server.url("/media/sample.mp4?n=3"), extract_audio=False)
    _, listing = await call(client, "GET", "/api/tasks", ALICE)
    assert listing["total"] == 1


async def test_rate_limits_are_per_user_whatever_address_the_requests_come_from(users_client, media_server):
    client = await users_client({"alice": {"submissions_per_minute": 2}}, rate_per_minute=60.0, rate_burst=3)
    for n in range(2):
        await submit_as(client, ALICE, media_server.url(f"/media/sample.mp4?rate={n}"), extract_audio=False)
    response, body = await call(
        client,
        "POST",
        "/api/process",
        ALICE,
        json={"url": media_server.url("/media/sample.mp4?rate=2")},
        headers={"X-Forwarded-For": "127.0.0.9"},
    )
    assert response.status == 429 and "submissions_per_minute = 2" in body["error"]["message"], body
    # The service-wide bucket (VIDEO_API_RATE_PER_MINUTE) is per user too: bob, from the same
    # address, has all of his; alice's third request above took hers.
    for n in range(3):
        await submit_as(client, BOB, media_server.url(f"/media/sample.mp4?bob={n}"), extract_audio=False)
    response, body = await call(
        client, "POST", "/api/process", BOB, json={"url": media_server.url("/media/sample.mp4?bob=3")}
    )
    assert response.status == 429 and body["error"]["code"] == "rate_limited", body
    assert "127.0.0.1" not in body["error"]["message"]


async def test_a_user_over_its_storage_limit_loses_its_own_oldest_files_only(users_client, media_server):
    # noise.mp4 is 1.24 MiB: three of alice's are over her 3 MiB, bob's and the admin's stay.
    client = await users_client({"alice": {"max_storage_mb": 3}})
    others = [
        await wait_done(
            client,
            token,
            (await submit_as(client, token, media_server.url(f"/media/noise.mp4?o={n}"), extract_audio=False))[
                "task_id"
            ],
        )
        for n, token in enumerate((BOB, OPS))
    ]
    alices = []
    for n in range(3):
        body = await submit_as(client, ALICE, media_server.url(f"/media/noise.mp4?a={n}"), extract_audio=False)
        alices.append(await wait_done(client, ALICE, body["task_id"]))
    assert [task["status"] for task in alices + others] == ["completed"] * 5
    # Room is made right after a download's completion is stored: the oldest goes a moment later.
    deadline = time.monotonic() + 10
    while (gone := [(await call(client, "GET", t["files"]["video"], ALICE))[0].status for t in alices])[0] != 410:
        assert time.monotonic() < deadline, gone
        await asyncio.sleep(0.05)
    assert gone == [410, 200, 200]
    _, oldest = await call(client, "GET", f"/api/status/{alices[0]['task_id']}", ALICE)
    assert "alice's files over its 3 MB (max_storage_mb)" in oldest["message"]
    for task, token in zip(others, (BOB, OPS), strict=True):
        assert (await call(client, "GET", task["files"]["video"], token))[0].status == 200


async def test_audit_lines_and_metrics_name_users_never_tokens(users_client, media_server, caplog):
    client = await users_client({"bob": {"max_active_tasks": 1}})
    caplog.set_level(logging.DEBUG)
    task = await submit_as(client, ALICE, media_server.url("/media/sample.mp4?audit=1"), extract_audio=False)
    await wait_done(client, ALICE, task["task_id"])
    await call(client, "DELETE", f"/api/tasks/{task['task_id']}", ALICE)
    await submit_as(client, BOB, media_server.url("/slow/sample.mp4?rate=100000&audit=2"), extract_audio=False)
    await submit_as(client, BOB, media_server.url("/media/sample.mp4?audit=3"), 429)
    audit = [record.getMessage() for record in caplog.records if record.name == "app.audit"]
    assert f"user alice submitted task {task['task_id']}" in audit
    assert f"user alice cancelled task {task['task_id']} and deleted its files" in audit
    assert any(line.startswith("user bob refused a new task: bob has 1 tasks") for line in audit)
    text = (await (await client.get("/metrics")).read()).decode()
    assert 'video_api_user_tasks_total{user="alice"} 1.0' in text
    assert 'video_api_user_refusals_total{user="bob"} 1.0' in text
    assert set(re.findall(r'video_api_user_media_bytes\{user="([^"]+)"\}', text)) == {"admin", "alice", "bob", "ops"}
    everything = caplog.text + text
    assert not any(token in everything or token_digest(token) in everything for token in (OPS, ALICE, BOB))
