"""The cluster's SQL on a real PostgreSQL server: leases renewed and lost, expired leases requeued
once however many hosts race, liveness."""

import time

import psycopg
import pytest

from app.cluster.database import ClusterDatabase
from app.store.postgres import PostgresTaskStore
from tests.store.test_store_contract import Backend, _queue, assert_counts_exact, on_hosts

pytestmark = pytest.mark.usefixtures("postgres_url")


@pytest.fixture
def backend(postgres_url):
    async def open_postgres(node=None, lease_s=None):
        return await PostgresTaskStore.connect(postgres_url, node, lease_s)

    def query(sql):
        with psycopg.connect(postgres_url) as conn:
            return conn.execute(sql).fetchall()

    return Backend("postgresql", open_postgres, query, 0)


@pytest.fixture
async def host(backend):
    """host(node) -> (its task store, its cluster database)."""
    opened = []

    async def open_host(node):
        store = await backend.open(node, 30)
        opened.append(store)
        return store, ClusterDatabase(store, node)

    yield open_host
    for store in opened:
        await store.close()


async def test_renew_leases_extends_held_ones_and_names_the_lost(host):
    n1, n1_cluster = await host("n1")
    n2, _ = await host("n2")
    a, b, c, d = await _queue(n1, 4)
    for _ in range(4):
        await n1.claim_next()
    before = (await n1.get(a))["lease_until"]
    # Another host cancels b, requeues c (lease gone) and claims it.
    assert await n2.update(b, {"status": "cancelled"})
    assert await n2.update(c, {"status": "queued"})
    assert (await n2.claim_next())["id"] == c
    assert await n1_cluster.renew_leases(60, [a, b, c, d, "gone"]) == [b, c, "gone"]
    assert (await n1.get(a))["lease_until"] > before + 25
    assert (await n1.get(c))["owner"] == "n2"
    assert await n1_cluster.renew_leases(60, []) == []


async def test_requeue_expired_counts_the_attempt_and_leaves_live_leases(host, backend):
    n1, n1_cluster = await host("n1")
    unleased_host = await backend.open("n1")  # a claim without a lease never expires
    long_host = await backend.open("n2", 3600)
    try:
        short, unleased, long = await _queue(n1, 3)
        await n1.claim_next()
        await unleased_host.claim_next()
        await long_host.claim_next()
        assert await n1_cluster.requeue_expired(ahead_s=60) == [short]
        assert await n1_cluster.requeue_expired(ahead_s=60) == []
        assert await n1_cluster.requeue_expired() == []  # nothing has expired by now
        task = await n1.get(short)
        assert (task["status"], task["attempts"], task["lease_until"]) == ("queued", 1, None)
        assert task["message"] == "requeued: host n1 stopped renewing its lease"
        assert [(await n1.get(t))["status"] for t in (unleased, long)] == ["downloading", "downloading"]
        again = await long_host.claim_next()
        assert (again["id"], again["attempts"]) == (short, 2)  # the manager fails it after MAX_ATTEMPTS
    finally:
        await unleased_host.close()
        await long_host.close()


async def test_heartbeat_and_nodes_alive_on_the_database_clock(host):
    _, n2 = await host("n2")
    _, n1 = await host("n1")
    await n2.heartbeat("http://10.0.0.2:8000")
    await n1.heartbeat("http://old:8000")
    offset = await n1.heartbeat("http://10.0.0.1:8000")
    assert abs(offset) < 1  # the test server shares this host's clock
    alive = await n1.nodes_alive(within_s=60)
    assert [(n["node"], n["url"]) for n in alive] == [("n1", "http://10.0.0.1:8000"), ("n2", "http://10.0.0.2:8000")]
    assert all(abs(n["last_seen"] - time.time()) < 5 for n in alive)
    assert await n1.nodes_alive(within_s=-1) == []


async def test_expired_leases_are_requeued_once_by_hosts_racing(host, backend):
    dead, _ = await host("dead")
    ids = await _queue(dead, 200)
    for _ in ids:
        await dead.claim_next()

    async def requeue(store, index):
        return await ClusterDatabase(store, f"n{index}").requeue_expired(ahead_s=60)

    results = await on_hosts(backend, 4, requeue)
    requeued = [task_id for result in results for task_id in result]
    assert len(requeued) == 200 and set(requeued) == set(ids)
    rows = backend.query("SELECT status, attempts, COUNT(*) FROM tasks GROUP BY status, attempts")
    assert rows == [("queued", 1, 200)]
    await assert_counts_exact(dead, backend)
