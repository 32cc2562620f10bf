"""The task view cache on a real SQLite store: what it keeps, what it forgets, what it must never
keep (a read that raced a change), its bound. Across hosts (announcements, a cut listener):
tests/cluster/test_cluster.py."""

import asyncio

import msgspec
import pytest

from app.api.contract import encode
from app.api.serializers import task_view
from app.api.view_cache import ViewCache
from app.store.sqlite import SQLiteTaskStore


def _task(n: int) -> dict:
    return {"id": f"{n:032x}", "url": f"http://x/{n}", "options": {}, "dedupe_key": f"k{n}", "tenant": "alice"}


@pytest.fixture
async def store(tmp_path):
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    yield store
    await store.close()


@pytest.fixture
def views(store):
    views = ViewCache(1 << 20)
    store.observe(views.forget_tasks)
    return views


async def _created(store, n: int) -> str:
    return (await store.create(_task(n), 1000))[0]["id"]


async def test_a_view_is_read_once_then_answered_from_memory_until_its_task_changes(store, views):
    task_id = await _created(store, 1)
    first = await views.view(store, task_id)
    assert first.body == encode(task_view(await store.get(task_id))) and first.owner == "alice"
    assert await views.view(store, task_id) is first
    assert (views.hits, views.misses) == (1, 1)
    await store.update(task_id, {"status": "cancelled", "message": "stopped"})
    changed = msgspec.json.decode((await views.view(store, task_id)).body)
    assert changed["status"] == "cancelled" and views.misses == 2
    assert await views.view(store, "f" * 32) is None


class _SlowStore:
    """The real store, whose get() waits for a signal after reading: a read overtaken by a change."""

    def __init__(self, store):
        self._store = store
        self.read, self.go_on = asyncio.Event(), asyncio.Event()

    async def get(self, task_id):
        task = await self._store.get(task_id)
        self.read.set()
        await self.go_on.wait()
        return task


async def test_a_read_overtaken_by_a_change_is_answered_but_not_kept(store, views):
    task_id = await _created(store, 1)
    slow = _SlowStore(store)
    reading = asyncio.create_task(views.view(slow, task_id))
    await slow.read.wait()  # the row as it was before the change
    await store.update(task_id, {"status": "cancelled"})  # told to the cache while the read is under way
    slow.go_on.set()
    assert msgspec.json.decode((await reading).body)["status"] == "queued"
    assert len(views) == 0
    assert msgspec.json.decode((await views.view(store, task_id)).body)["status"] == "cancelled"


async def test_the_least_recently_used_views_go_first_when_the_bytes_run_out(store):
    ids = [await _created(store, n) for n in range(10)]
    one_view = len((await ViewCache(1 << 20).view(store, ids[0])).body) + 32 + 450
    views = ViewCache(3 * one_view)
    for task_id in ids:
        await views.view(store, task_id)
        await views.view(store, ids[0])  # kept in use: never the one to go
    assert len(views) == 3 and views.size_bytes <= views.max_bytes
    assert views.stats().entries == 3
    hits = views.hits
    await views.view(store, ids[0])
    await views.view(store, ids[-1])
    assert views.hits == hits + 2
    await views.view(store, ids[1])
    assert views.hits == hits + 2  # long gone


async def test_a_suspended_cache_keeps_nothing_and_starts_empty_when_resumed(store, views):
    task_id = await _created(store, 1)
    await views.view(store, task_id)
    views.suspend()
    assert len(views) == 0
    for _ in range(3):
        await views.view(store, task_id)
    assert views.hits == 0 and len(views) == 0
    views.resume()
    await views.view(store, task_id)
    await views.view(store, task_id)
    assert views.hits == 1
    assert ViewCache(0).max_bytes == 0 and len(ViewCache(0)) == 0


async def test_a_page_rereads_only_views_whose_task_was_updated_since(store, views):
    ids = [await _created(store, n) for n in range(5)]
    rows = await store.page(None, 10, 0, columns="id, seq, updated_at")
    assert [view.body for view in await views.views(store, rows)] == [
        encode(task_view(task)) for task in await store.page(None, 10, 0)
    ]
    assert views.misses == 5
    # Changed behind the cache's back (as another host would, its announcement not yet here).
    store._db.execute("UPDATE tasks SET message = 'moved', updated_at = updated_at + 1 WHERE id = ?", (ids[2],))
    rows = await store.page(None, 10, 0, columns="id, seq, updated_at")
    page = [msgspec.json.decode(view.body) for view in await views.views(store, rows)]
    assert [task["task_id"] for task in page] == ids[::-1]
    assert page[2]["message"] == "moved" and (views.hits, views.misses) == (4, 6)


async def test_a_lists_counts_and_page_are_kept_until_any_task_changes(store, views):
    reads = []

    def counting():
        reads.append(1)
        return store.counts(top_level=True)

    await _created(store, 1)
    assert (await views.listed("counts", counting))["queued"] == 1
    assert (await views.listed("counts", counting))["queued"] == 1 and len(reads) == 1
    await _created(store, 2)  # any change: the counts are read again
    assert (await views.listed("counts", counting))["queued"] == 2 and len(reads) == 2

    async def overtaken():
        counts = await store.counts(top_level=True)
        await store.update((await store.page(None, 1, 0))[0]["id"], {"status": "cancelled"})
        return counts

    await _created(store, 3)
    assert (await views.listed("counts", overtaken))["queued"] == 3  # read before the change: answered...
    assert (await views.listed("counts", counting))["queued"] == 2  # ...but not kept

    def paging():
        reads.append(1)
        return store.page(None, 10, 0, columns="id, seq, updated_at")

    first = await views.listed(("page", 10), paging)
    assert await views.listed(("page", 10), paging) is first and len(first) == 3
    views.forget([])  # a change announced by another host: any task, every list
    assert await views.listed(("page", 10), paging) is not first


async def test_nothing_is_kept_longer_than_its_age_limit(store):
    """A change nobody told the cache of (another host killed between its write and its announcement)
    is answered once the views kept before it are too old."""
    views = ViewCache(1 << 20, max_age_s=0.2)
    task_id = await _created(store, 1)
    await views.view(store, task_id)
    await views.listed("counts", lambda: store.counts(top_level=True))
    store._db.execute("UPDATE tasks SET status = 'failed', message = 'untold' WHERE id = ?", (task_id,))
    assert msgspec.json.decode((await views.view(store, task_id)).body)["status"] == "queued"  # kept, young
    await asyncio.sleep(0.25)
    assert msgspec.json.decode((await views.view(store, task_id)).body)["message"] == "untold"
    assert (await views.listed("counts", lambda: store.counts(top_level=True)))["failed"] == 1
    assert len(views) == 1 and views.size_bytes == views.stats().size_bytes


async def test_reads_of_missing_tasks_or_failed_reads_leave_nothing_behind(store, views, tmp_path):
    for n in range(100):  # ids nobody has: a client probing must not grow the cache
        assert await views.view(store, f"{n:032x}") is None
    closed = SQLiteTaskStore(tmp_path / "closed.sqlite3")
    await closed.close()
    with pytest.raises(Exception):  # noqa: B017 - whatever a closed database raises
        await views.view(closed, "e" * 32)
    assert len(views) == 0 and views._reading == {} and views.size_bytes == 0
