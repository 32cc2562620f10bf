"""The HTTP API's contract, written once: request and response models (msgspec Structs).

Requests are validated by decoding into these models, responses are encoded from them, and the
OpenAPI components are generated from them (app/openapi.py). A request field's error message is
declared on the field itself (`Meta(extra={"error": ...})`), so a new option is one field here.
"""

import datetime
import enum
import functools
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec
from msgspec import Meta

from app.ascii_numbers import ascii_int
from app.settings import PLAYLIST_ITEMS_LIMIT
from app.store.records import Status
from app.tasks import cookies as cookie_files
from app.tasks import media

MAX_URL_LENGTH = 4096
MAX_BODY_BYTES = 64 * 1024
# A cookies.txt of one site is a few KiB; a whole browser's export can be hundreds. The request
# body may exceed its usual limit by this much, for this field alone (app/api/routes/tasks.py).
MAX_COOKIES_BYTES = 512 * 1024
MAX_SUBTITLE_LANGUAGES = 20
Container = Literal["any", "mp4", "mkv", "webm"]
CONTAINERS: tuple[Container, ...] = typing.get_args(Container)
# BCP 47-ish codes as sites name their subtitle tracks: "en", "pt-BR", "zh-Hans", "en-orig".
SubtitleLanguage = Annotated[str, Meta(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$", max_length=32)]
# yt-dlp's playlist_items: indexes (from 1; negative: from the end), ranges "3-7" and slices
# "start:stop:step", comma-separated: "1-10,15", "-5:", "::2".
_PLAYLIST_INDEX = r"-?[0-9]+"
_PLAYLIST_RANGE = rf"{_PLAYLIST_INDEX}(?:-(?:{_PLAYLIST_INDEX}|inf))?"
_PLAYLIST_SLICE = rf"(?:{_PLAYLIST_INDEX})?:(?:{_PLAYLIST_INDEX})?(?::{_PLAYLIST_INDEX})?"
_PLAYLIST_SPEC = rf"(?:{_PLAYLIST_RANGE}|{_PLAYLIST_SLICE})"
PLAYLIST_ITEMS_PATTERN = rf"^{_PLAYLIST_SPEC}(?:,{_PLAYLIST_SPEC})*$"
# Request fields recorded in the options only when given (tasks recorded before they existed compare equal).
_PLAYLIST_OPTIONS = ("playlist_items", "max_items")
VideoQuality = Literal["360", "480", "720", "1080", "best"]
VIDEO_QUALITIES: tuple[VideoQuality, ...] = typing.get_args(VideoQuality)
_Query = TypeVar("_Query", bound=msgspec.Struct)


class ContractError(Exception):
    """A request that does not fit its model: (status, code, message) for the JSON error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


class ProcessRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/process."""

    url: Annotated[
        str,
        Meta(
            min_length=1,
            pattern=r"\S",
            description="http(s) URL; non-public addresses are refused.",
            extra=_error("invalid_url", "url must be a non-empty string"),
        ),
    ]
    extract_audio: Annotated[bool, Meta(extra=_error("invalid_option", "extract_audio must be true or false"))] = True
    keep_video: Annotated[bool, Meta(extra=_error("invalid_option", "keep_video must be true or false"))] = True
    video_quality: Annotated[
        Literal[VideoQuality, 360, 480, 720, 1080],
        Meta(
            description="Largest video height, or best.",
            extra=_error("invalid_option", f"video_quality must be one of {', '.join(VIDEO_QUALITIES)}"),
        ),
    ] = "best"
    audio_format: Annotated[
        media.AudioFormat,
        Meta(extra=_error("invalid_option", f"audio_format must be one of {', '.join(media.AUDIO_FORMATS)}")),
    ] = "mp3"
    audio_bitrate: Annotated[
        int | str,
        Meta(
            description='kbps 32-512 ("192", "192k", 192) or "best".',
            extra_json_schema={"minimum": 32, "maximum": 512},
            extra=_error("invalid_option", "audio_bitrate must be a number of kbps (32-512) or 'best'"),
        ),
    ] = "192"
    subtitles: Annotated[
        list[SubtitleLanguage] | Literal["all"],
        Meta(
            description='Subtitle languages to fetch as files (e.g. ["en", "de"]), or "all". Automatic captions are'
            " not fetched.",
            extra_json_schema={"maxItems": MAX_SUBTITLE_LANGUAGES},
            extra=_error(
                "invalid_option",
                f'subtitles must be "all" or a list of at most {MAX_SUBTITLE_LANGUAGES} language codes such as "en"'
                ' or "pt-BR"',
            ),
        ),
    ] = []
    embed_subtitles: Annotated[
        bool,
        Meta(
            description="Also embed the fetched subtitles into the video.",
            extra=_error("invalid_option", "embed_subtitles must be true or false"),
        ),
    ] = False
    thumbnail: Annotated[
        bool,
        Meta(
            description="Save the thumbnail as a file and embed it into the video and the audio (formats that carry"
            " one: mp3, m4a, flac, opus).",
            extra=_error("invalid_option", "thumbnail must be true or false"),
        ),
    ] = False
    embed_metadata: Annotated[
        bool,
        Meta(
            description="Write title, uploader, date and description into the files.",
            extra=_error("invalid_option", "embed_metadata must be true or false"),
        ),
    ] = False
    embed_chapters: Annotated[
        bool,
        Meta(
            description="Write the video's chapters into the files.",
            extra=_error("invalid_option", "embed_chapters must be true or false"),
        ),
    ] = False
    container: Annotated[
        Container,
        Meta(
            description="The video's container: streams are remuxed, never re-encoded; a task fails when its streams"
            " do not fit the container. any: as downloaded (mp4 or mkv when streams are merged).",
            extra=_error("invalid_option", f"container must be one of {', '.join(CONTAINERS)}"),
        ),
    ] = "any"
    cookies: Annotated[
        Annotated[str, Meta(min_length=1, max_length=MAX_COOKIES_BYTES)] | None,
        Meta(
            description="A Netscape cookies.txt for sites behind a sign-in. Kept encrypted until the task ends, then"
            ' deleted; never shown back (the task says only "cookies": true).',
            extra=_error(
                "invalid_cookies",
                f"cookies must be the text of a Netscape cookies.txt of at most {MAX_COOKIES_BYTES // 1024} KiB",
            ),
        ),
    ] = None
    playlist_items: Annotated[
        Annotated[str, Meta(pattern=PLAYLIST_ITEMS_PATTERN, max_length=200)] | None,
        Meta(
            description='A playlist\'s or channel\'s items to download, in yt-dlp\'s syntax: "1-10,15", "-5:" (the last'
            ' five), "::2". Default: from the first, up to max_items.',
            extra=_error(
                "invalid_option",
                'playlist_items must be indexes, ranges and slices such as "1-10,15", "-5:" or "::2"',
            ),
        ),
    ] = None
    max_items: Annotated[
        Annotated[int, Meta(ge=1, le=PLAYLIST_ITEMS_LIMIT)] | None,
        Meta(
            description="At most this many items of a playlist or channel (default and upper bound:"
            " VIDEO_API_PLAYLIST_MAX_ITEMS).",
            extra=_error("invalid_option", f"max_items must be a whole number from 1 to {PLAYLIST_ITEMS_LIMIT}"),
        ),
    ] = None
    reuse: Annotated[
        bool,
        Meta(
            description="Answer a completed task of the same video (same site and video id) and options whose files"
            " are still kept (200), instead of downloading again.",
            extra=_error("invalid_option", "reuse must be true or false"),
        ),
    ] = False
    callback_url: Annotated[
        str | None,
        Meta(
            description="POSTed the final task JSON, signed (X-Video-Api-Signature).",
            extra=_error("invalid_url", "callback_url must be a non-empty string"),
        ),
    ] = None

    def __post_init__(self) -> None:
        # Checks across fields and spellings a type cannot express; messages as the API has always given.
        if not self.extract_audio and not self.keep_video:
            raise ValueError("extract_audio and keep_video are both false: nothing to produce")
        # A height given as a number becomes its name: 720 -> "720", one of VIDEO_QUALITIES.
        self.video_quality = cast(VideoQuality, str(self.video_quality))
        bitrate = self.audio_bitrate
        if isinstance(bitrate, str):
            bitrate = bitrate.strip().lower().removesuffix("k")
            if bitrate != "best":
                number = ascii_int(bitrate)
                if number is None:
                    raise ValueError("audio_bitrate must be a number of kbps (32-512) or 'best'")
                bitrate = number
        if isinstance(bitrate, int):  # every value but "best" is a number by now
            if not 32 <= bitrate <= 512:
                raise ValueError("audio_bitrate must be between 32 and 512 kbps")
            bitrate = str(bitrate)
        self.audio_bitrate = bitrate
        if isinstance(self.subtitles, list):
            if len(self.subtitles) > MAX_SUBTITLE_LANGUAGES:
                raise ValueError(f"subtitles may name at most {MAX_SUBTITLE_LANGUAGES} languages")
            self.subtitles = sorted(set(self.subtitles))  # the same choice is one dedupe key
        if self.embed_subtitles and not self.subtitles:
            raise ValueError('embed_subtitles needs subtitles: the languages to fetch, or "all"')
        if self.embed_subtitles and not self.keep_video:
            raise ValueError("embed_subtitles needs keep_video: subtitles are embedded into the video")
        if self.container != "any" and not self.keep_video:
            raise ValueError("container needs keep_video: it is the video's container")

    def options(self) -> dict[str, Any]:
        """The download options a task records (and deduplicates on); of the cookies only whether there are any."""
        options = {name: getattr(self, name) for name in self.__struct_fields__ if name not in _NOT_OPTIONS}
        options["cookies"] = self.cookies is not None
        for name in _PLAYLIST_OPTIONS:
            if options[name] is None:
                del options[name]
        return options


# Request fields that are not download options: where to tell, what to send, how to answer.
_NOT_OPTIONS = frozenset({"url", "callback_url", "cookies", "reuse"})


class TaskListQuery(msgspec.Struct, forbid_unknown_fields=False):
    """GET /api/tasks query parameters."""

    limit: Annotated[int, Meta(ge=1, le=500)] = 50
    offset: Annotated[int, Meta(ge=0, le=10_000_000)] = 0
    before: (
        Annotated[int, Meta(ge=1, le=2**62, description="Cursor from a page's `next` link: tasks older than it.")]
        | None
    ) = None
    status: Status | None = None
    parent_id: Annotated[
        Annotated[str, Meta(pattern="^[0-9a-f]{32}$")] | None,
        Meta(
            description="A playlist's items (in its order) instead of the top-level tasks.",
            extra=_error("invalid_parameter", "parent_id must be a task id (32 hexadecimal digits)"),
        ),
    ] = None


class FileView(msgspec.Struct):
    kind: Literal["video", "audio", "subtitles", "thumbnail"]
    language: Annotated[str | None, Meta(description="Of subtitles.")]
    url: str
    name: Annotated[str, Meta(description="The file name a download saves it under.")]
    size: int
    content_type: str


class Files(msgspec.Struct):
    """Links to the task's files (null or empty while there are none), and every file in `items`."""

    video: str | None
    audio: str | None
    subtitles: Annotated[dict[str, str], Meta(description="Language code -> link.")]
    thumbnail: str | None
    items: list[FileView]


class PlaylistView(msgspec.Struct):
    """A playlist or channel: its items are tasks of their own, summed up here."""

    title: str | None
    total: Annotated[int | None, Meta(description="Items the playlist has.")]
    items: Annotated[int, Meta(description="Items queued as tasks (those asked for, up to max_items).")]
    skipped: Annotated[int, Meta(description="Entries without a URL the service may download, or repeated.")]
    counts: Annotated[dict[str, int], Meta(description="The items by status.")]
    tasks: Annotated[str, Meta(description="The items, in the playlist's order: GET /api/tasks?parent_id=<id>.")]


class TaskView(msgspec.Struct):
    """A task as every endpoint, event and callback shows it."""

    task_id: Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]
    status: Status
    progress: Annotated[float, Meta(ge=0, le=100)]
    downloaded_bytes: int | None
    total_bytes: int | None
    speed: float | None
    eta: float | None
    message: str | None
    url: str
    options: dict[str, Any]
    attempts: int
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None
    video_info: dict[str, Any] | None
    files: Files
    error: str | None
    owner: Annotated[str, Meta(description="The user who asked for it (`admin` without a tenants file).")]
    parent_id: Annotated[str | None, Meta(description="The playlist this task is an item of.")] = None
    playlist: Annotated[
        PlaylistView | None,
        Meta(
            description="Of a playlist or channel, once its items are queued: the task's status, progress and"
            " bytes are then those of all its items."
        ),
    ] = None


class Me(msgspec.Struct):
    """Who the token is, what it may do, and how much of its limits it uses."""

    name: str
    role: Annotated[
        Literal["admin", "user"], Meta(description="admin: every user's tasks, storage; user: its own tasks only.")
    ]
    limits: Annotated[
        dict[str, int | None],
        Meta(description="max_active_tasks, max_storage_mb, submissions_per_minute; null: no limit."),
    ]
    active_tasks: Annotated[int, Meta(description="Its tasks queued or running (a playlist counts once).")]
    storage_bytes: Annotated[int, Meta(description="Bytes of its files kept, on every host.")]


class Accepted(msgspec.Struct):
    task_id: str
    status: Status
    status_url: str
    message: str


class TaskList(msgspec.Struct):
    counts: Annotated[
        dict[str, int],
        Meta(description="Tasks by status, a playlist once (not its items); with parent_id, that playlist's items."),
    ]
    total: int
    limit: int
    offset: int
    next: Annotated[str | None, Meta(description="The next page (keyset), or null.")]
    tasks: list[TaskView]


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    error: ErrorBody


class Index(msgspec.Struct):
    service: str
    version: str
    endpoints: dict[str, str]


class Health(msgspec.Struct):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, dict[str, Any]]
    failing: list[str]
    versions: dict[str, str | None]
    workers: dict[str, int]
    cluster: Annotated[dict[str, Any], Meta(description="This host's node id, and the hosts seen alive lately.")]


class StorageInfo(msgspec.Struct):
    """Of this host's media folder; cluster_*: all hosts' files together."""

    node: str
    files: int
    used_bytes: int
    max_storage_bytes: int
    disk_free_bytes: int
    disk_total_bytes: int
    min_free_bytes: int
    retention_hours: float
    cluster_files: int
    cluster_used_bytes: int


class DeletedFile(msgspec.Struct):
    file_id: str | None
    task_id: str | None
    kind: str
    bytes: int
    reason: str


class Cleanup(msgspec.Struct):
    deleted: list[DeletedFile]
    files_deleted: int
    bytes_freed: int


MODELS = (ProcessRequest, Accepted, TaskView, TaskList, Error, Index, Health, StorageInfo, Cleanup)


@functools.cache
def _errors_of(model: type) -> dict[str, dict[str, Any]]:
    """Each field's declared JSON error (from its Meta extra)."""
    hints = typing.get_type_hints(model, include_extras=True)
    return {
        name: meta.extra
        for name, hint in hints.items()
        for meta in getattr(hint, "__metadata__", ())
        if isinstance(meta, Meta) and meta.extra
    }


# The server reads bodies up to this; beyond MAX_BODY_BYTES only for the cookies (JSON escapes
# each tab and newline of a cookies.txt as two characters).
MAX_READ_BYTES = MAX_BODY_BYTES + 2 * MAX_COOKIES_BYTES


def decode_process_request(body: bytes) -> ProcessRequest:
    """The request, or ContractError with the field's declared message."""
    too_large = ContractError(
        413,
        "request_entity_too_large",
        f"request body larger than {MAX_BODY_BYTES // 1024} KiB (cookies may add {MAX_COOKIES_BYTES // 1024} KiB)",
    )
    if len(body) > MAX_BODY_BYTES and b'"cookies"' not in body:
        raise too_large
    try:
        try:
            request = msgspec.json.decode(body, type=ProcessRequest)
        except msgspec.ValidationError as exc:
            raise _contract_error(ProcessRequest, str(exc), body) from None
    except RecursionError:
        raise ContractError(400, "invalid_json", "request body is not valid JSON: nested too deeply") from None
    except msgspec.DecodeError as exc:
        raise ContractError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if request.cookies is not None:
        if len(body) - len(encode(request.cookies)) > MAX_BODY_BYTES:
            raise too_large
        try:
            request.cookies = cookie_files.checked_text(request.cookies)
        except cookie_files.CookiesError as exc:
            raise ContractError(422, "invalid_cookies", str(exc)) from None
    return request


def _contract_error(model: type[msgspec.Struct], message: str, body: bytes) -> ContractError:
    if message.startswith("Expected `object`"):
        return ContractError(400, "invalid_json", "request body must be a JSON object")
    if message.startswith("Object contains unknown field"):
        # All of them, not only the first; decoding the whole body also finds it malformed if it is.
        unknown = sorted(set(msgspec.json.decode(body)) - set(model.__struct_fields__))
        return ContractError(422, "unknown_option", f"unknown option(s): {', '.join(unknown)}")
    if message == "Object missing required field `url`":
        return ContractError(422, "invalid_url", "url is required")
    # "- at `$.subtitles[0]`": the field is subtitles.
    field = re.split(r"[`\[.]", message.rpartition("- at `$.")[2])[0] if "- at `$." in message else None
    declared = _errors_of(model).get(field) if field is not None else None
    if declared:
        return ContractError(422, **declared["error"])
    return ContractError(422, "invalid_option", message)  # a __post_init__ check: its message as it is


def parse_query(model: type[_Query], query: Mapping[str, str]) -> _Query:
    """Query parameters into model: numbers are ASCII digits only, bounds come from the model."""
    struct = msgspec.inspect.type_info(model)
    assert isinstance(struct, msgspec.inspect.StructType)  # _Query is a Struct
    info = {field.name: field.type for field in struct.fields}
    values: dict[str, str | int] = {}
    for name, raw in query.items():
        kind = info.get(name)
        if kind is None:
            continue
        bounds = _int_bounds(kind)
        if bounds is None:
            values[name] = raw
            continue
        number = ascii_int(raw)
        if number is None or not bounds[0] <= number <= bounds[1]:
            raise ContractError(422, "invalid_parameter", f"{name} must be an integer from {bounds[0]} to {bounds[1]}")
        values[name] = number
    try:
        return msgspec.convert(values, model)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("- at `$.")[2].rstrip("`")
        declared = _errors_of(model).get(field)
        if declared:
            raise ContractError(422, **declared["error"]) from None
        choices = ", ".join(member.value for member in _enum_of(info[field]))
        raise ContractError(422, "invalid_parameter", f"{field} must be one of {choices}") from None


def _members(kind: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    return [member.type if isinstance(member, msgspec.inspect.Metadata) else member for member in members]


def _int_bounds(kind: msgspec.inspect.Type) -> tuple[int, int] | None:
    for candidate in _members(kind):
        if isinstance(candidate, msgspec.inspect.IntType):
            # Every integer parameter declares both bounds (Meta(ge=..., le=...)).
            assert candidate.ge is not None and candidate.le is not None, "an integer parameter without bounds"
            return candidate.ge, candidate.le
    return None


def _enum_of(kind: msgspec.inspect.Type) -> type[enum.Enum]:
    return next(candidate.cls for candidate in _members(kind) if isinstance(candidate, msgspec.inspect.EnumType))


encode = msgspec.json.Encoder().encode
