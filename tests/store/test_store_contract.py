"""The task store contract, run against both stores: SQLite (a file) and PostgreSQL (a real server).

A "host" is a store built for one node on the same database; in the concurrency tests it is a
thread with its own event loop and its own store (its own connections), so the database sees truly
concurrent clients, as it does with several hosts. (Leases and liveness are the cluster's:
tests/cluster/.)
"""

import asyncio
import contextlib
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import pytest

from app.store import postgres
from app.store import sqlite as sqlite_store
from app.store.base import (
    LOCAL_NODE,
    STATUSES,
    Limits,
    Occupancy,
    QueueFullError,
    QuotaExceededError,
    StoreConnectError,
)
from app.store.postgres import PostgresTaskStore, redact_url
from app.store.sqlite import SQLiteTaskStore

OPTIONS = {"extract_audio": True, "keep_video": True}


@dataclass
class Backend:
    name: str
    open: object  # async (node=None, lease_s=None) -> TaskStore, a new store (new connections) on the same database
    query: object  # (sql) -> rows, read outside the store
    migrations: int


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "db" / "tasks.sqlite3"

        async def open_sqlite(node=None, lease_s=None):
            return SQLiteTaskStore(path, node)  # one host: no leases

        def query_sqlite(sql):
            with contextlib.closing(sqlite3.connect(path)) as db:
                return db.execute(sql).fetchall()

        return Backend("sqlite", open_sqlite, query_sqlite, len(sqlite_store._SQLITE_MIGRATIONS))
    url = request.getfixturevalue("postgres_url")

    async def open_postgres(node=None, lease_s=None):
        return await PostgresTaskStore.connect(url, node, lease_s)

    def query_postgres(sql):
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()

    return Backend("postgresql", open_postgres, query_postgres, len(postgres._MIGRATIONS))


@pytest.fixture
async def store(backend):
    store = await backend.open()
    yield store
    await store.close()


@pytest.fixture
async def hosts(backend):
    """hosts(name, ...) -> a store for each named node, on the same database."""
    opened = []

    async def open_hosts(*names):
        for name in names:
            opened.append(await backend.open(name, 30))
        return opened[-len(names) :]

    yield open_hosts
    for host in opened:
        await host.close()


def _task(n: int, key: str | None = None) -> dict:
    return {
        "id": f"{n:032x}",
        "url": f"http://x/{n}",
        "options": OPTIONS,
        "dedupe_key": key or f"key-{n}",
        "tenant": "admin",
    }


async def _queue(store, count: int, start: int = 0) -> list[str]:
    return [(await store.create(_task(n), 1_000_000))[0]["id"] for n in range(start, start + count)]


async def on_hosts(backend: Backend, count: int, work) -> list:
    """work(store, host_index) on `count` hosts at once; returns each host's result."""
    # A timeout: one host failing to open must fail the test, not leave the others waiting forever.
    opened, started = threading.Barrier(count, timeout=60), threading.Barrier(count, timeout=60)

    def host(index: int):
        async def run():
            opened.wait()  # all open at once (on an empty database: all migrate at once)
            store = await backend.open(f"n{index}", 30)
            try:
                started.wait()
                return await work(store, index)
            finally:
                await store.close()

        return asyncio.run(run())

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(count) as pool:
        return await asyncio.gather(*(loop.run_in_executor(pool, host, i) for i in range(count)))


async def assert_counts_exact(store, backend: Backend) -> None:
    actual = dict.fromkeys(STATUSES, 0) | dict(backend.query("SELECT status, COUNT(*) FROM tasks GROUP BY status"))
    assert await store.counts() == actual
    # Each user's counters, kept by triggers, against a count of its top-level tasks.
    for (tenant,) in backend.query("SELECT DISTINCT tenant FROM tasks"):
        top_level = backend.query(
            f"SELECT status, COUNT(*) FROM tasks WHERE tenant = '{tenant}' AND parent_id IS NULL GROUP BY status"
        )
        assert await store.counts_of(tenant) == dict.fromkeys(STATUSES, 0) | dict(top_level)


async def test_create_dedupes_active_urls_holds_the_queue_limit_and_claims_in_order(store, backend):
    for n in range(3):
        _, created = await store.create(_task(n), 100)
        assert created
    same, created = await store.create(_task(99, key="key-1"), 100)
    assert not created and same["id"] == f"{1:032x}" and same["options"] == OPTIONS
    with pytest.raises(QueueFullError):
        await store.create(_task(5), 3)
    assert (await store.counts())["queued"] == 3
    first = await store.claim_next()
    assert first["id"] == f"{0:032x}" and first["status"] == "downloading" and first["attempts"] == 1
    assert (first["owner"], first["lease_until"]) == (LOCAL_NODE, None)
    assert await store.update(first["id"], {"status": "failed"})
    assert not await store.update(first["id"], {"progress": 5})  # finished tasks do not change
    assert await store.counts() == {
        "queued": 2,
        "downloading": 0,
        "processing": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    _, created = await store.create(_task(7, key="key-0"), 100)  # the failed task's key is free again
    assert created
    assert await store.get("nope") is None
    await assert_counts_exact(store, backend)


async def test_page_is_newest_first_by_offset_before_and_status(store):
    ids = await _queue(store, 6)
    for task_id in ids[:2]:
        assert await store.update(task_id, {"status": "cancelled"})
    newest = [task["id"] for task in await store.page(None, 3, 0)]
    assert newest == ids[:-4:-1]
    after = await store.page(None, 3, 0, before=(await store.get(newest[-1]))["seq"])
    assert [task["id"] for task in after] == ids[2::-1]
    assert [task["id"] for task in await store.page(None, 2, 4)] == ids[1::-1]
    assert [task["id"] for task in await store.page("cancelled", 10, 0)] == ids[1::-1]
    assert await store.page("completed", 10, 0) == []


async def test_update_checks_status_owner_and_fields(store, hosts):
    (task_id,) = await _queue(store, 1)
    n1, n2 = await hosts("n1", "n2")
    await n1.claim_next()
    # total_bytes may be yt-dlp's estimate, a float.
    fields = {"progress": 12.5, "total_bytes": 1000.0, "video_info": {"title": "t"}, "message": "downloading"}
    assert await n1.update_owned(task_id, fields, only_if=("downloading",))
    assert not await n2.update_owned(task_id, {"progress": 50})  # not its task
    assert not await store.update(task_id, {"progress": 50}, only_if=("processing",))
    task = await store.get(task_id)
    assert (task["progress"], task["total_bytes"], task["video_info"]) == (12.5, 1000, {"title": "t"})
    with pytest.raises(ValueError, match="owner"):
        await store.update(task_id, {"owner": "n2"})


async def test_complete_records_files_on_the_owner_node(store, hosts):
    a, b, c = await _queue(store, 3)
    n1, n2 = await hosts("n1", "n2")
    await n1.claim_next()
    await n2.claim_next()
    files_a = [
        {"id": "fa1", "kind": "video", "language": None, "path": f"{a}/v.mp4", "name": "v.mp4", "size": 100},
        {"id": "fa2", "kind": "audio", "language": None, "path": f"{a}/a.mp3", "name": "a.mp3", "size": 10},
    ]
    files_b = [{"id": "fb1", "kind": "audio", "language": None, "path": f"{b}/a.mp3", "name": "a.mp3", "size": 7}]
    assert not await n2.complete(a, files_a)  # n1 holds it
    assert not await store.complete(c, [{**files_b[0], "id": "fc1"}])  # still queued
    assert await n1.complete(a, files_a)
    assert await store.complete(b, files_b)  # a store without a node: every task is its own
    assert not await store.complete(a, [{**files_b[0], "id": "fa3"}])  # completed already
    task = await store.get(a)
    assert (task["status"], task["progress"], task["video_file_id"], task["audio_file_id"]) == (
        "completed",
        100,
        "fa1",
        "fa2",
    )
    assert (await store.get_file("fa1"))["node"] == "n1" and (await store.get_file("fb1"))["node"] == "n2"
    assert await store.get_file("fc1") is None and await store.get_file("fa3") is None
    assert sorted(f["id"] for f in await store.task_files(a)) == ["fa1", "fa2"]
    assert [f["id"] for f in await store.live_files()] == ["fa1", "fa2", "fb1"]
    assert [f["id"] for f in await n2.live_files()] == ["fb1"]
    assert await store.live_bytes() == (3, 117) and await n1.live_bytes() == (2, 110)
    assert await n1.live_bytes(every_node=True) == (3, 117)
    await store.mark_files_removed(["fa1", "fb1"], "retention")
    await store.mark_files_removed(["fa1"], "again")  # a removal is recorded once
    removed = await store.get_file("fa1")
    assert removed["removed_at"] is not None and removed["removed_reason"] == "retention"
    assert await store.live_bytes() == (1, 10) and await n2.live_bytes() == (0, 0)
    assert (await store.counts())["completed"] == 2


async def test_requeue_running_takes_only_its_nodes_tasks(store, hosts):
    a, b, c = await _queue(store, 3)
    n1, n2 = await hosts("n1", "n2")
    for host in (n1, n2, n1):
        await host.claim_next()
    assert await store.update(b, {"status": "processing"})
    assert sorted(await n1.requeue_running("n1 restarted", count_attempt=True)) == [a, c]
    task = await store.get(a)
    assert (task["status"], task["attempts"], task["message"], task["lease_until"]) == (
        "queued",
        1,
        "n1 restarted",
        None,
    )
    assert (await store.get(b))["status"] == "processing"
    # Without a node (a single host): every running task; count_attempt=False gives the attempt back.
    assert await store.requeue_running("stopping", count_attempt=False) == [b]
    assert (await store.get(b))["attempts"] == 0


async def test_occupancy_counts_running_tasks_by_owner_and_dates_the_queue_head(store, hosts):
    assert await store.occupancy() == Occupancy({}, None)
    a, b, c, d, e = await _queue(store, 5)
    n1, n2 = await hosts("n1", "n2")
    for host in (n1, n2, n1):
        await host.claim_next()  # a and c on n1, b on n2
    assert await store.update(c, {"status": "processing"})  # processing is running too
    head = await store.get(d)
    assert await n2.occupancy() == Occupancy({"n1": 2, "n2": 1}, head["created_at"])
    assert sorted(await n1.requeue_running("n1 restarted", count_attempt=True)) == sorted([a, c])
    # The head is the task claimed next: a requeued task keeps its place (and its age).
    assert (await store.occupancy()).oldest_queued_at == (await store.get(a))["created_at"]
    await store.claim_next()  # a store without a node: a single host's own task
    await store.update(b, {"status": "failed"}, only_if=("downloading",))
    assert (await n1.occupancy()).running == {LOCAL_NODE: 1}
    assert [(await n1.claim_next())["id"] for _ in range(3)] == [c, d, e]
    assert await n2.occupancy() == Occupancy({LOCAL_NODE: 1, "n1": 3}, None)


async def test_ping_answers_until_closed(backend):
    store = await backend.open()
    await store.ping()
    await store.close()
    with pytest.raises(Exception):  # noqa: B017 (each driver has its own "closed" error)
        await store.ping()


async def test_hosts_starting_at_once_on_an_empty_database_migrate_once(backend):
    async def versions(store, _):
        return await store.counts()

    results = await on_hosts(backend, 4, versions)
    assert results == [dict.fromkeys(STATUSES, 0)] * 4
    assert backend.query("SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, backend.migrations + 1)
    ]


async def test_eight_claimers_over_500_tasks_claim_each_exactly_once(store, backend):
    ids = await _queue(store, 500)

    async def claim_all(host, index):
        claimed = []
        while (task := await host.claim_next()) is not None:
            claimed.append(task["id"])
        return claimed

    results = await on_hosts(backend, 8, claim_all)
    claimed = [task_id for result in results for task_id in result]
    assert len(claimed) == len(set(claimed)) == 500 and set(claimed) == set(ids)
    owners = dict(backend.query("SELECT id, owner FROM tasks"))
    assert all(owners[task_id] == f"n{i}" for i, result in enumerate(results) for task_id in result)
    assert backend.query("SELECT DISTINCT attempts FROM tasks") == [(1,)]
    await assert_counts_exact(store, backend)


async def test_queue_limit_and_dedupe_hold_under_concurrent_creates(store, backend):
    # Four hosts submit the same 80 URLs at once, with room for 50 in the queue.
    async def submit_all(host, index):
        outcomes = []
        for n in range(80):
            try:
                _, created = await host.create({**_task(index * 1000 + n), "dedupe_key": f"url-{n}"}, 50)
                outcomes.append("created" if created else "deduped")
            except QueueFullError:
                outcomes.append("full")
        return outcomes

    results = await on_hosts(backend, 4, submit_all)
    assert sum(result.count("created") for result in results) == 50
    assert backend.query("SELECT COUNT(*), COUNT(DISTINCT dedupe_key) FROM tasks") == [(50, 50)]
    assert (await store.counts())["queued"] == 50
    await assert_counts_exact(store, backend)


async def test_sqlite_database_of_the_release_before_schema_versions_opens_and_works(tmp_path):
    # Migration 1 is that release's whole schema, created as it created it (no schema_version).
    path = tmp_path / "tasks.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(sqlite_store._SQLITE_MIGRATIONS[0])
        db.execute(
            "INSERT INTO tasks (id, url, options, dedupe_key, status, created_at, updated_at)"
            " VALUES ('old', 'http://x/old', '{}', 'k-old', 'queued', 1, 1)"
        )
        db.commit()
    store = SQLiteTaskStore(path, "n1")
    try:
        assert (await store.counts())["queued"] == 1
        claimed = await store.claim_next()
        assert (claimed["id"], claimed["owner"], claimed["attempts"]) == ("old", "n1", 1)
        assert await store.complete(
            "old", [{"id": "f", "kind": "video", "language": None, "path": "old/v", "name": "v", "size": 1}]
        )
        assert (await store.get_file("f"))["node"] == "n1"
        assert [row[0] for row in store._db.execute("SELECT version FROM schema_version")] == list(
            range(1, len(sqlite_store._SQLITE_MIGRATIONS) + 1)
        )
    finally:
        await store.close()
    SQLiteTaskStore(path)._db.close()  # opening again applies nothing twice


async def test_postgres_url_forms_and_the_password_is_never_shown(postgres_server):
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    for form in (postgres_server.socket_url(name), url + "?sslmode=disable"):
        store = await PostgresTaskStore.connect(form)
        await store.ping()
        await store.close()
    store = await PostgresTaskStore.connect(url)
    assert postgres_server.password not in repr(store) and "***" in repr(store)
    await store.close()
    wrong = url.replace(postgres_server.password, "Wr0ng-s3cret")
    with pytest.raises(StoreConnectError, match="password authentication failed") as raised:
        await PostgresTaskStore.connect(wrong)
    assert "Wr0ng-s3cret" not in str(raised.value) and "postgres:***@127.0.0.1" in str(raised.value)
    assert redact_url("postgres://u@h/db?sslmode=require&password=p%40ss") == (
        "postgres://u@h/db?sslmode=require&password=***"
    )
    postgres_server.drop_database(name)


def _users_task(n: int, tenant: str) -> dict:
    return {**_task(n), "tenant": tenant}


async def test_a_users_active_task_limit_holds_across_hosts_and_spares_other_users(store, backend):
    # Four hosts submit 5 tasks each for alice, whose limit is 3 tasks at once, and bob's go through.
    async def submit_all(host, index):
        outcomes = []
        for n in range(5):
            try:
                await host.create(_users_task(index * 100 + n, "alice"), 1000, Limits("alice", max_active=3))
                outcomes.append("created")
            except QuotaExceededError as refused:
                assert "max_active_tasks = 3" in str(refused) and refused.retry_after > 0
                outcomes.append("refused")
        return outcomes

    results = await on_hosts(backend, 4, submit_all)
    assert sum(result.count("created") for result in results) == 3
    await store.create(_users_task(900, "bob"), 1000, Limits("bob", max_active=3))
    # A finished task frees its place; a playlist's items never count against it.
    finished = backend.query("SELECT id FROM tasks WHERE tenant = 'alice' LIMIT 1")[0][0]
    await store.update(finished, {"status": "failed", "finished_at": 1.0})
    await store.create(_users_task(901, "alice"), 1000, Limits("alice", max_active=3))
    with pytest.raises(QuotaExceededError):
        await store.create(_users_task(902, "alice"), 1000, Limits("alice", max_active=3))
    assert await store.counts_of("alice") == dict.fromkeys(STATUSES, 0) | {"queued": 3, "failed": 1}
    assert await store.counts_of("bob") == dict.fromkeys(STATUSES, 0) | {"queued": 1}
    await assert_counts_exact(store, backend)
    assert (await store.tenant_usage("alice"))[0] == 3


async def test_a_users_submissions_per_minute_and_the_wait_it_names(store):
    for n in range(2):
        await store.create(_users_task(n, "alice"), 1000, Limits("alice", per_minute=2))
    with pytest.raises(QuotaExceededError, match=r"submissions_per_minute = 2\); try again in \d+ s") as refused:
        await store.create(_users_task(2, "alice"), 1000, Limits("alice", per_minute=2))
    assert 1 <= refused.value.retry_after <= 60
    # The same URL again is its active task, not a new submission; another user has its own window.
    again, created = await store.create(_users_task(0, "alice"), 1000, Limits("alice", per_minute=2))
    assert not created and again["id"] == f"{0:032x}"
    await store.create(_users_task(3, "bob"), 1000, Limits("bob", per_minute=2))


async def test_lists_reuse_and_file_bytes_are_each_users_own(store):
    for n, tenant in enumerate(("alice", "bob", "alice")):
        await store.create(_users_task(n, tenant), 1000)
    assert [t["id"] for t in await store.page(None, 10, 0, tenant="alice")] == [f"{2:032x}", f"{0:032x}"]
    assert len(await store.page(None, 10, 0)) == 3
    task = await store.claim_next()
    file = {"id": "f" * 32, "kind": "video", "language": None, "path": "p/v.mp4", "name": "v.mp4", "size": 7}
    assert await store.complete(task["id"], [file])
    assert (await store.get_file("f" * 32))["tenant"] == task["tenant"] == "alice"
    assert await store.bytes_by_tenant() == {"alice": 7}
    await store.update(task["id"], {"media_key": "site:v"}, ("completed",))
    assert [t["id"] for t in await store.reusable("site:v", "alice")] == [task["id"]]
    assert await store.reusable("site:v", "bob") == []


async def test_tasks_and_files_from_before_users_belong_to_the_admin(tmp_path, postgres_url):
    # A SQLite database and a PostgreSQL one as the release before users left them: a task, its file.
    rows = (
        "INSERT INTO tasks (id, url, options, dedupe_key, status, created_at, updated_at)"
        " VALUES ('old', 'http://x/old', '{}', 'k-old', 'completed', 1, 1)",
        "INSERT INTO files (id, task_id, kind, path, name, size, created_at)"
        " VALUES ('f', 'old', 'video', 'old/v', 'v', 5, 1)",
    )
    schema_version = "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
    sqlite_path = tmp_path / "tasks.sqlite3"
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        db.execute(schema_version)
        for version, script in enumerate(sqlite_store._SQLITE_MIGRATIONS[:4], 1):
            db.executescript(script)
            db.execute("INSERT INTO schema_version VALUES (?, 1)", (version,))
        for row in rows:
            db.execute(row)
        db.commit()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(schema_version)
        for version, script in enumerate(postgres._MIGRATIONS[:3], 1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version VALUES (%s, 1)", (version,))
        for row in rows:
            conn.execute(row)
    for store in (SQLiteTaskStore(sqlite_path), await PostgresTaskStore.connect(postgres_url)):
        try:
            assert (await store.get("old"))["tenant"] == "admin"
            assert (await store.get_file("f"))["tenant"] == "admin"
            assert await store.counts_of("admin") == dict.fromkeys(STATUSES, 0) | {"completed": 1}
        finally:
            await store.close()


async def test_postgres_reads_the_api_repeats_become_prepared_statements(postgres_url):
    store = await PostgresTaskStore.connect(postgres_url)
    try:
        await store.create(_task(1), 100)
        for _ in range(10):
            await store.get(f"{1:032x}")
            await store.page(None, 51, 0, columns="id, seq, updated_at")

        async def prepared(conn):
            return [
                row["statement"]
                for row in await (await conn.execute("SELECT statement FROM pg_prepared_statements")).fetchall()
            ]

        statements = await store.run(prepared)
        assert any(s.startswith("SELECT * FROM tasks WHERE id = $1") for s in statements), statements
        assert any(s.startswith("SELECT id, seq, updated_at FROM tasks") for s in statements), statements
    finally:
        await store.close()
