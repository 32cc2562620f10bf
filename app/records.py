"""Typed records: what the task store holds and what a worker reports, with statuses as an enum.

Records stay plain dicts at run time (they come from and go to the database and the worker pipe
as they are); the types say which keys each one has.
"""

import enum
from typing import Any, Literal, TypedDict


class Status(enum.StrEnum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (Status.QUEUED, Status.DOWNLOADING, Status.PROCESSING)
RUNNING = (Status.DOWNLOADING, Status.PROCESSING)
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


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


class FileRecord(TypedDict):
    id: str
    task_id: str
    kind: Literal["video", "audio"]
    path: str  # relative to the media folder
    name: str  # the file name a client saves it under
    size: int
    created_at: float
    removed_at: float | None
    removed_reason: str | None


class ProgressReport(TypedDict):
    type: Literal["progress"]
    progress: float
    downloaded_bytes: int
    total_bytes: int | None
    speed: float | None
    eta: float | None


class ProcessingReport(TypedDict, total=False):
    type: Literal["processing"]
    message: str
    video_info: dict[str, Any]


class RetryReport(TypedDict):
    type: Literal["retry"]
    message: str


class ProducedFile(TypedDict):
    kind: Literal["video", "audio"]
    file: str  # name inside the task folder
    name: str
    size: int


class DoneReport(TypedDict):
    type: Literal["done"]
    files: list[ProducedFile]
    video_info: dict[str, Any]
    timings: dict[str, float | None]


class ErrorReport(TypedDict):
    type: Literal["error"]
    message: str


WorkerReport = ProgressReport | ProcessingReport | RetryReport | DoneReport | ErrorReport
