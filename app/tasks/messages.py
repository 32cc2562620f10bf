"""The download host's protocol: what the main process sends the host (HostConfig once, then
RunSpec, Cancel, MediaKeyOf) and what the host sends back over the same connection (a task's
reports, each in a TaskReport; TaskEnded; MediaKeyIs). Both sides use these types in their
signatures; the manager dispatches on the report's type."""

from typing import Any, Literal

import msgspec

from app.store.records import FileKind


class DownloadOptions(msgspec.Struct, frozen=True):
    """The task's recorded options (app/api/contract.py, ProcessRequest.options()) that the download
    uses. Options added later have defaults: tasks queued by an earlier release lack them."""

    video_quality: str
    keep_video: bool
    extract_audio: bool
    audio_format: str
    audio_bitrate: str
    subtitles: list[str] | Literal["all"] = []
    embed_subtitles: bool = False
    thumbnail: bool = False
    embed_metadata: bool = False
    embed_chapters: bool = False
    container: str = "any"
    playlist_items: str | None = None
    max_items: int | None = None


class RunSpec(msgspec.Struct, frozen=True):
    task_id: str
    url: str
    options: DownloadOptions
    task_dir: str
    max_filesize: int
    download_attempts: int
    retry_delay_s: float
    cookies: str | None = None  # the cookies.txt text, opened for this run; never logged
    # A URL that is a playlist becomes at most this many items; None: the task is a playlist's item,
    # which downloads one video whatever its URL names.
    max_items: int | None = None


class Progress(msgspec.Struct, frozen=True):
    progress: float
    downloaded_bytes: int
    total_bytes: int | None
    speed: float | None
    eta: float | None


class Processing(msgspec.Struct, frozen=True):
    message: str
    video_info: dict[str, Any] | None = None


class Retrying(msgspec.Struct, frozen=True):
    """A transient error: the worker waits, then tries again (resuming its .part file)."""

    message: str


class ProducedFile(msgspec.Struct, frozen=True):
    kind: FileKind
    file: str  # name inside the task folder
    name: str  # the file name a client saves it under
    size: int
    language: str | None = None  # of subtitles


class Done(msgspec.Struct, frozen=True):
    files: list[ProducedFile]
    video_info: dict[str, Any]
    download_s: float
    extract_s: float | None
    media_key: str | None  # the video as reuse finds it (app/tasks/media_keys.py)


class PlaylistItem(msgspec.Struct, frozen=True):
    url: str
    title: str | None


class Playlist(msgspec.Struct, frozen=True):
    """The URL is a playlist: the items asked for, for the service to queue as tasks of their own."""

    title: str | None
    total: int | None  # items the playlist has
    items: list[PlaylistItem]
    skipped: int  # entries without a URL the service may download, or repeated


class Failed(msgspec.Struct, frozen=True):
    message: str


Report = Progress | Processing | Retrying | Done | Playlist | Failed


class HostConfig(msgspec.Struct, frozen=True):
    """The host's first message: what holds for every download it runs."""

    allow_networks: tuple[str, ...]
    log_level: str


class Cancel(msgspec.Struct, frozen=True):
    task_id: str


class MediaKeyOf(msgspec.Struct, frozen=True):
    """Which video the url names (app/tasks/media_keys.py); answered by a MediaKeyIs of the same request."""

    request: int
    url: str


class TaskReport(msgspec.Struct, frozen=True):
    task_id: str
    report: Report


class TaskEnded(msgspec.Struct, frozen=True):
    """The task's thread has ended: nothing of it runs or writes any more."""

    task_id: str


class MediaKeyIs(msgspec.Struct, frozen=True):
    request: int
    key: str | None  # None: working it out failed (the host logged why)


ToHost = HostConfig | RunSpec | Cancel | MediaKeyOf
FromHost = TaskReport | TaskEnded | MediaKeyIs
