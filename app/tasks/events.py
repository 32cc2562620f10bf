"""Live task events for Server-Sent Events: every change of a task, numbered, kept for replay.

The hub observes the task store (app/store/base.py), so every write that changes a task (by the
manager, a cancel, a restart's requeue, another host through the cluster) publishes the task as
it is now. Event ids are "<boot>-<seq>": a
client that reconnects with Last-Event-ID gets the events after it from the per-task buffer, or,
when they are no longer there (buffer overrun, service restarted), a snapshot of the task first.
"""

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from app.ascii_numbers import ascii_int
from app.store.base import TaskStore
from app.store.records import FINISHED, TaskRecord

# Replay buffers: up to EVENTS_PER_TASK events of each active task (about two minutes of progress);
# a finished task keeps only its final event once nobody follows it, for at most TASKS_KEPT tasks.
EVENTS_PER_TASK = 512
TASKS_KEPT = 1000


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    kind: str  # "status" when the status changed (or a snapshot), "item" in a playlist's stream, else "progress"
    task: TaskRecord  # an "item" event's is the playlist's item whose status changed

    @property
    def final(self) -> bool:
        """The stream's last event: its own task's final status."""
        return self.kind != "item" and self.task["status"] in FINISHED


class _Stream:
    def __init__(self) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENTS_PER_TASK)
        self.seq = 0
        self.task: TaskRecord | None = None  # as its own last event showed it
        self.changed = asyncio.Event()
        self.followers = 0

    def trim_if_finished(self) -> None:
        if self.followers == 0 and self.events and self.events[-1].final:
            final = self.events[-1]
            self.events.clear()
            self.events.append(final)


class EventHub:
    def __init__(self) -> None:
        self.boot = uuid.uuid4().hex[:8]
        self._streams: collections.OrderedDict[str, _Stream] = collections.OrderedDict()
        self.closing = asyncio.Event()
        self.listeners: list[Callable[[TaskRecord], None]] = []  # called with every published task

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

    def publish(self, task: TaskRecord, local: bool = True) -> None:
        """A changed task to its followers; listeners (callbacks) hear only this host's own changes,
        so the host whose write made a status final is the one that acts on it."""
        stream = self._stream(task["id"])
        kind = "progress" if stream.task is not None and stream.task["status"] == task["status"] else "status"
        stream.task = task
        self._append(stream, kind, task)
        if kind == "status" and task["parent_id"] is not None:
            # A playlist's followers see its items' status changes; the playlist's own event (its
            # counts) follows from the store.
            self._append(self._stream(task["parent_id"]), "item", task)
        for listener in self.listeners if local else ():
            listener(task)

    def _append(self, stream: "_Stream", kind: str, task: TaskRecord) -> None:
        stream.seq += 1
        stream.events.append(Event(f"{self.boot}-{stream.seq}", stream.seq, kind, task))
        stream.changed.set()
        stream.changed = asyncio.Event()
        stream.trim_if_finished()

    async def publish_changes(self, tasks: list[TaskRecord]) -> None:
        """The store's observer: this host's changes."""
        for task in tasks:
            self.publish(task)

    def followed(self) -> list[tuple[str, float | None]]:
        """(task id, updated_at of its last event) of every task somebody follows."""
        return [
            (task_id, stream.task["updated_at"] if stream.task else None)
            for task_id, stream in self._streams.items()
            if stream.followers
        ]

    def close(self) -> None:
        """Ends every stream (service stopping)."""
        self.closing.set()

    async def follow(
        self, task_id: str, last_event_id: str | None, store: TaskStore, keepalive_s: float
    ) -> AsyncIterator[Event | None]:
        """Yields Events after last_event_id until the task is final; None every keepalive_s of silence."""
        stream = self._stream(task_id)
        stream.followers += 1
        try:
            async for event in self._follow(stream, task_id, last_event_id, store, keepalive_s):
                yield event
        finally:
            stream.followers -= 1
            stream.trim_if_finished()

    async def _follow(
        self, stream: _Stream, task_id: str, last_event_id: str | None, store: TaskStore, keepalive_s: float
    ) -> AsyncIterator[Event | None]:
        after = _seq(last_event_id, self.boot)
        oldest = stream.events[0].seq if stream.events else stream.seq + 1
        if after is None or after < oldest - 1 or after > stream.seq:
            # Cannot replay from there: start with the task as it is now.
            after = stream.seq
            task = await store.get(task_id)
            assert task is not None  # follow() is for a task that exists, and tasks are never deleted
            yield Event(f"{self.boot}-{after}", after, "status", task)
            if task["status"] in FINISHED:
                return
        while not self.closing.is_set():
            pending = [event for event in stream.events if event.seq > after]
            for event in pending:
                yield event
                after = event.seq
                if event.final:
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
