"""Task views as clients get them, encoded once and kept in memory: a status answer is a dict
lookup instead of a database round trip and a serialization. Bounded by bytes, least recently
used first out.

Freshness: every change made through this host's store forgets the task's view (the store tells
its observers after each write); on several hosts, each task another host announces is forgotten
as its notification arrives, and the whole cache is off while the announcements cannot be heard
(flushed when the listener connects again, so a missed announcement never leaves a stale view).
A read that raced a change - it fetched the row before the change, the change was told before the
read was kept - is not kept: each fill is checked against the forgets that came in meanwhile.

A list's counts and its page (the keys of its tasks) are kept the same way, and any change of any
task drops them all: which changes move a count or a page is not told. Between changes a list then
needs no query at all.

Nothing is kept longer than MAX_AGE_S: a host announces a change after its write commits, so a host
killed in between leaves a change nobody announced; its views elsewhere are read again within that."""

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.api.contract import encode
from app.api.serializers import task_view
from app.metrics import CacheStats
from app.store.base import TaskStore
from app.store.records import TaskRecord

MAX_AGE_S = 10.0
# Lists' counts and pages kept at most (a page: ~50 short rows): more are seldom asked between changes.
MAX_LISTS = 256
Kept = TypeVar("Kept")
# What an entry costs beyond its body: the key, the entry object, its place in the ordered dict, and
# the allocator's share (bench/cluster_bench.py: 100,000 views of 710 bytes grew the RSS by ~113 MB).
_ENTRY_OVERHEAD_BYTES = 450


@dataclass(frozen=True, slots=True)
class CachedView:
    owner: str
    updated_at: float
    body: bytes  # the task's JSON view
    kept_at: float  # time.monotonic()


class ViewCache:
    def __init__(self, max_bytes: int, enabled: bool = True, max_age_s: float = MAX_AGE_S) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._enabled = enabled and max_bytes > 0
        self._views: OrderedDict[str, CachedView] = OrderedDict()
        # Reads under way: task id -> the token of the latest; a forget removes it, so that read's
        # (possibly older) row is not kept.
        self._reading: dict[str, object] = {}
        # Lists' counts and pages by what they are of, (when kept, what), and how many times any
        # task changed: one read across a change is not kept.
        self._lists: dict[Hashable, tuple[float, Any]] = {}
        self._changes = 0
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._views)

    async def view(self, store: TaskStore, task_id: str) -> CachedView | None:
        """The task's view, from memory or else from the store (None: no such task)."""
        cached = self._views.get(task_id)
        if cached is not None and self._young(cached.kept_at):
            self._views.move_to_end(task_id)
            self.hits += 1
            return cached
        self.misses += 1
        return (await self._read(store, [task_id])).get(task_id)

    async def views(self, store: TaskStore, rows: list[dict[str, Any]]) -> list[CachedView]:
        """The views of a page's rows ({id, updated_at}), in their order: those whose row was updated
        since their view was kept are read again, all in one query."""
        found: dict[str, CachedView] = {}
        stale: list[str] = []
        for row in rows:
            cached = self._views.get(row["id"])
            if cached is not None and cached.updated_at == row["updated_at"] and self._young(cached.kept_at):
                self._views.move_to_end(row["id"])
                found[row["id"]] = cached
            else:
                stale.append(row["id"])
        self.hits += len(found)
        self.misses += len(stale)
        if stale:
            found |= await self._read(store, stale)
        # A task deleted between the two queries is left out.
        return [found[row["id"]] for row in rows if row["id"] in found]

    async def listed(self, key: Hashable, read: Callable[[], Awaitable[Kept]]) -> Kept:
        """What read() gives for a list (its counts, its page's rows) named by key: kept from the last
        read until any task changes. Callers must not change it."""
        kept = self._lists.get(key)
        if kept is not None and self._young(kept[0]):
            result: Kept = kept[1]
            return result
        changes = self._changes
        result = await read()
        if self._enabled and changes == self._changes:
            if len(self._lists) >= MAX_LISTS:
                self._lists.clear()
            self._lists[key] = (time.monotonic(), result)
        return result

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._views), self.size_bytes)

    def forget(self, task_ids: Iterable[str]) -> None:
        self._changes += 1
        self._lists.clear()
        for task_id in task_ids:
            self._reading.pop(task_id, None)
            cached = self._views.pop(task_id, None)
            if cached is not None:
                self.size_bytes -= _cost(task_id, cached)

    async def forget_tasks(self, tasks: list[TaskRecord]) -> None:
        """A store observer: these tasks changed."""
        self.forget(task["id"] for task in tasks)

    def suspend(self) -> None:
        """Keep nothing and serve nothing from memory (task changes cannot be heard)."""
        self._enabled = False
        self._flush()

    def resume(self) -> None:
        """Start again from empty (task changes can be heard again)."""
        self._flush()
        self._enabled = self.max_bytes > 0

    def _flush(self) -> None:
        self._changes += 1
        self._lists.clear()
        self._views.clear()
        self._reading.clear()
        self.size_bytes = 0

    def _young(self, kept_at: float) -> bool:
        return time.monotonic() - kept_at < self.max_age_s

    async def _read(self, store: TaskStore, task_ids: list[str]) -> dict[str, CachedView]:
        """The views of these tasks (those that exist) from the store, each kept unless a change of
        its task was told while it was read (or the cache is off)."""
        tokens = {task_id: object() for task_id in task_ids}
        if self._enabled:
            self._reading |= tokens
        try:
            tasks = [await store.get(task_ids[0])] if len(task_ids) == 1 else await store.get_many(task_ids)
        finally:
            # Unforgotten reads: their rows are as new as any change told so far.
            current = {task_id for task_id, token in tokens.items() if self._reading.get(task_id) is token}
            for task_id in current:
                del self._reading[task_id]
        views = {}
        for task in tasks:
            if task is not None:
                views[task["id"]] = cached = self._view_of(task)
                if task["id"] in current:
                    self._keep(task["id"], cached)
        return views

    @staticmethod
    def _view_of(task: TaskRecord) -> CachedView:
        return CachedView(task["tenant"], task["updated_at"], encode(task_view(task)), time.monotonic())

    def _keep(self, task_id: str, cached: CachedView) -> None:
        previous = self._views.pop(task_id, None)
        if previous is not None:
            self.size_bytes -= _cost(task_id, previous)
        self._views[task_id] = cached
        self.size_bytes += _cost(task_id, cached)
        while self.size_bytes > self.max_bytes and self._views:
            evicted_id, evicted = self._views.popitem(last=False)
            self.size_bytes -= _cost(evicted_id, evicted)


def _cost(task_id: str, cached: CachedView) -> int:
    return len(cached.body) + len(task_id) + _ENTRY_OVERHEAD_BYTES
