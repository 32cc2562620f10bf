"""Typed records: what the task store holds, with statuses as an enum.

Records stay plain dicts at run time (they come from and go to the database as they are); the
types say which keys each one has.
"""

import enum
from typing import Any, Literal, NotRequired, TypedDict


class Status(enum.StrEnum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FileKind = Literal["video", "audio", "subtitles", "thumbnail"]
ACTIVE = (Status.QUEUED, Status.DOWNLOADING, Status.PROCESSING)
RUNNING = (Status.DOWNLOADING, Status.PROCESSING)
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class TaskFile(TypedDict):
    """A task's file as its record lists it (the view's links, sizes and types come from these)."""

    id: str
    kind: FileKind
    language: str | None
    name: str
    size: int


class TaskRecord(TypedDict):
    seq: int
    id: str
    url: str
    options: dict[str, Any]
    dedupe_key: str
    status: Status
    progress: float
    downloaded_bytes: int | None
    total_bytes: int | None
    speed: float | None
    eta: float | None
    message: str
    error: str | None
    video_info: dict[str, Any] | None
    attempts: int
    video_file_id: str | None
    audio_file_id: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    owner: str | None
    lease_until: float | None
    files: list[TaskFile] | None  # what complete() recorded; None until then
    cookies: bytes | None  # sealed (app/tasks/cookies.py); None without cookies and once the task ended
    media_key: str | None  # site and video id of a completed download (app/tasks/media_keys.py)
    parent_id: str | None  # the playlist this task is an item of
    playlist: dict[str, Any] | None  # of a playlist once expanded: title, total, items, counts (base.py)
    tenant: str  # the user who asked for it (app/tenants/); a playlist's items are its user's


class FileRecord(TypedDict):
    id: str
    task_id: str
    kind: FileKind
    language: str | None
    path: str  # relative to the media folder
    name: str  # the file name a client saves it under
    size: int
    created_at: float
    removed_at: float | None
    removed_reason: str | None
    node: str | None
    tenant: str  # its task's user (read through the task: app/store/base.py)


class NewTask(TypedDict):
    """What create() takes; the store adds the rest of a TaskRecord."""

    id: str
    url: str
    options: dict[str, Any]
    dedupe_key: str
    message: str
    cookies: bytes | None
    tenant: str
    video_info: NotRequired[dict[str, Any] | None]  # a playlist's item: its title as the playlist names it


class NewFile(TypedDict):
    """What complete() takes for each file; the store adds the owner node and times."""

    id: str
    kind: FileKind
    language: str | None
    path: str
    name: str
    size: int
