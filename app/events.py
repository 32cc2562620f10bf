"""Live task events for Server-Sent Events: every change of a task, numbered, kept for replay.

PublishingStore wraps the task store, so every write that changes a task (by the manager, a
cancel, a restart's requeue) publishes the task as it is now. Event ids are "<boot>-<seq>": a
client that reconnects with Last-Event-ID gets the events after it from the per-task buffer, or,
when they are no longer there (buffer overrun, service restarted), a snapshot of the task first.
"""

import asyncio
import collections
import uuid
from dataclasses import dataclass

from app.numbers import ascii_int
from app.records import ACTIVE, FINISHED
from app.store import LOCAL_NODE, TaskStore

# Replay buffers: up to EVENTS_PER_TASK events of each active task (about two minutes of progress);
# a finished task keeps only its final event once nobody follows it, for at most TASKS_KEPT tasks.
EVENTS_PER_TASK = 512
TASKS_KEPT = 1000


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    kind: str  # "status" when the status changed (or a snapshot), else "progress"
    task: dict


class _Stream:
    def __init__(self):
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENTS_PER_TASK)
        self.seq = 0
        self.changed = asyncio.Event()
        self.followers = 0

    def trim_if_finished(self) -> None:
        if self.followers == 0 and self.events and self.events[-1].task["status"] in FINISHED:
            final = self.events[-1]
            self.events.clear()
            self.events.append(final)


class EventHub:
    def __init__(self):
        self.boot = uuid.uuid4().hex[:8]
        self._streams: collections.OrderedDict[str, _Stream] = collections.OrderedDict()
        self.closing = asyncio.Event()
        self.listeners: list = []  # called with every published task

    def _stream(self, task_id: str) -> _Stream:
        stream = self._streams.get(task_id)
        if stream is None:
            stream = self._streams[task_id] = _Stream()
            # Forget the oldest streams nobody follows (a follower keeps its stream alive).
            idle = [key for key, other in self._streams.items() if other.followers == 0 and key != task_id]
            for key in idle[: max(0, len(self._streams) - TASKS_KEPT)]:
                del self._streams[key]
        self._streams.move_to_end(task_id)
        return stream

    def publish(self, task: dict, local: bool = True) -> None:
        """A changed task to its followers; listeners (callbacks) hear only this host's own changes,
        so the host whose write made a status final is the one that acts on it."""
        stream = self._stream(task["id"])
        previous = stream.events[-1].task["status"] if stream.events else None
        stream.seq += 1
        kind = "progress" if previous == task["status"] else "status"
        stream.events.append(Event(f"{self.boot}-{stream.seq}", stream.seq, kind, task))
        stream.changed.set()
        stream.changed = asyncio.Event()
        stream.trim_if_finished()
        for listener in self.listeners if local else ():
            listener(task)

    def followed(self) -> list[tuple[str, float | None]]:
        """(task id, updated_at of its last event) of every task somebody follows."""
        return [
            (task_id, stream.events[-1].task["updated_at"] if stream.events else None)
            for task_id, stream in self._streams.items()
            if stream.followers
        ]

    def close(self) -> None:
        """Ends every stream (service stopping)."""
        self.closing.set()

    async def follow(self, task_id: str, last_event_id: str | None, store: TaskStore, keepalive_s: float):
        """Yields Events after last_event_id until the task is final; None every keepalive_s of silence."""
        stream = self._stream(task_id)
        stream.followers += 1
        try:
            async for event in self._follow(stream, task_id, last_event_id, store, keepalive_s):
                yield event
        finally:
            stream.followers -= 1
            stream.trim_if_finished()

    async def _follow(self, stream: _Stream, task_id: str, last_event_id, store: TaskStore, keepalive_s: float):
        after = _seq(last_event_id, self.boot)
        oldest = stream.events[0].seq if stream.events else stream.seq + 1
        if after is None or after < oldest - 1 or after > stream.seq:
            # Cannot replay from there: start with the task as it is now.
            after = stream.seq
            task = await store.get(task_id)
            yield Event(f"{self.boot}-{after}", after, "status", task)
            if task["status"] in FINISHED:
                return
        while not self.closing.is_set():
            pending = [event for event in stream.events if event.seq > after]
            for event in pending:
                yield event
                after = event.seq
                if event.task["status"] in FINISHED:
                    return
            if pending:
                continue
            changed = asyncio.ensure_future(stream.changed.wait())
            closing = asyncio.ensure_future(self.closing.wait())
            done, _ = await asyncio.wait([changed, closing], timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            closing.cancel()
            if not done:
                yield None


def _seq(last_event_id: str | None, boot: str) -> int | None:
    """The sequence number of an id from this boot; None (snapshot first) for anything else."""
    boot_part, _, seq = (last_event_id or "").strip().partition("-")
    return ascii_int(seq) if boot_part == boot else None


class PublishingStore(TaskStore):
    """The task store, publishing each task it changed to the hub; reads pass straight through.

    Every interface method is written out (TaskStore is abstract, so a new one cannot be
    forgotten here), and those marked @changes_tasks publish: app/tests/test_events.py checks both.
    """

    def __init__(self, store: TaskStore, hub: EventHub, node: str = LOCAL_NODE):
        self._store = store
        self._hub = hub
        self._node = node
        self.shared = store.shared

    async def _publish(self, task_ids) -> None:
        await self._publish_tasks([task for task_id in task_ids if (task := await self._store.get(task_id))])

    async def _publish_tasks(self, tasks: list) -> None:
        for task in tasks:
            self._hub.publish(task)
        await self._store.announce(self._node, [task["id"] for task in tasks])

    async def follow_other_hosts(self) -> None:
        """Until cancelled: publish here what other hosts change (their followers are here too)."""
        await self._store.listen(self._node, self._republish)

    async def _republish(self, task_id: str | None) -> None:
        if task_id is not None:
            task = await self._store.get(task_id)
            if task is not None:
                self._hub.publish(task, local=False)
            return
        # Announcements may have been missed: catch every followed task up.
        for followed_id, updated_at in self._hub.followed():
            task = await self._store.get(followed_id)
            if task is not None and task["updated_at"] != updated_at:
                self._hub.publish(task, local=False)

    async def create(self, task: dict, queue_limit: int):
        task, created = await self._store.create(task, queue_limit)
        if created:
            await self._publish_tasks([task])
        return task, created

    async def claim_next(self, node: str = LOCAL_NODE, lease_s: float | None = None):
        task = await self._store.claim_next(node, lease_s)
        if task is not None:
            await self._publish_tasks([task])
        return task

    async def update(self, task_id: str, fields: dict, only_if: tuple = ACTIVE, node: str | None = None) -> bool:
        changed = await self._store.update(task_id, fields, only_if, node)
        if changed:
            await self._publish([task_id])
        return changed

    async def complete(self, task_id: str, files: list[dict], node: str | None = None) -> bool:
        completed = await self._store.complete(task_id, files, node)
        if completed:
            await self._publish([task_id])
        return completed

    async def requeue_running(self, message: str, count_attempt: bool, node: str | None = None) -> list[str]:
        task_ids = await self._store.requeue_running(message, count_attempt, node)
        await self._publish(task_ids)
        return task_ids

    async def requeue_expired(self, now: float | None = None) -> list[str]:
        task_ids = await self._store.requeue_expired(now)
        await self._publish(task_ids)
        return task_ids

    async def renew_leases(self, node: str, lease_s: float, task_ids: list[str]) -> list[str]:
        return await self._store.renew_leases(node, lease_s, task_ids)

    async def get(self, task_id: str):
        return await self._store.get(task_id)

    async def page(self, status, limit: int, offset: int, before: int | None = None):
        return await self._store.page(status, limit, offset, before)

    async def counts(self):
        return await self._store.counts()

    async def heartbeat(self, node: str, url: str) -> None:
        await self._store.heartbeat(node, url)

    async def nodes_alive(self, since: float):
        return await self._store.nodes_alive(since)

    async def get_file(self, file_id: str):
        return await self._store.get_file(file_id)

    async def task_files(self, task_id: str):
        return await self._store.task_files(task_id)

    async def live_files(self, node: str | None = None):
        return await self._store.live_files(node)

    async def live_bytes(self, node: str | None = None):
        return await self._store.live_bytes(node)

    async def mark_files_removed(self, file_ids: list[str], reason: str) -> None:
        await self._store.mark_files_removed(file_ids, reason)

    async def announce(self, node: str, task_ids: list[str]) -> None:
        await self._store.announce(node, task_ids)

    async def listen(self, node: str, on_change) -> None:
        await self._store.listen(node, on_change)

    async def ping(self) -> None:
        await self._store.ping()

    async def close(self) -> None:
        await self._store.close()
