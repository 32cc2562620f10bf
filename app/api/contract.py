"""The HTTP API's contract, written once: request and response models (msgspec Structs).

Requests are validated by decoding into these models, responses are encoded from them, and the
OpenAPI components are generated from them (app/openapi.py). A request field's error message is
declared on the field itself (`Meta(extra={"error": ...})`), so a new option is one field here.
"""

import datetime
import enum
import functools
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec
from msgspec import Meta

from app.ascii_numbers import ascii_int
from app.store.records import Status
from app.tasks import media

MAX_URL_LENGTH = 4096
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

    def options(self) -> dict[str, Any]:
        """The download options a task records (and deduplicates on)."""
        return {name: getattr(self, name) for name in self.__struct_fields__ if name not in ("url", "callback_url")}


class TaskListQuery(msgspec.Struct, forbid_unknown_fields=False):
    """GET /api/tasks query parameters."""

    limit: Annotated[int, Meta(ge=1, le=500)] = 50
    offset: Annotated[int, Meta(ge=0, le=10_000_000)] = 0
    before: (
        Annotated[int, Meta(ge=1, le=2**62, description="Cursor from a page's `next` link: tasks older than it.")]
        | None
    ) = None
    status: Status | None = None


class Files(msgspec.Struct):
    video: str | None
    audio: str | None


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


class Accepted(msgspec.Struct):
    task_id: str
    status: Status
    status_url: str
    message: str


class TaskList(msgspec.Struct):
    counts: dict[str, int]
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


def decode_process_request(body: bytes) -> ProcessRequest:
    """The request, or ContractError with the field's declared message."""
    try:
        try:
            return msgspec.json.decode(body, type=ProcessRequest)
        except msgspec.ValidationError as exc:
            raise _contract_error(ProcessRequest, str(exc), body) from None
    except RecursionError:
        raise ContractError(400, "invalid_json", "request body is not valid JSON: nested too deeply") from None
    except msgspec.DecodeError as exc:
        raise ContractError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def _contract_error(model: type[msgspec.Struct], message: str, body: bytes) -> ContractError:
    if message.startswith("Expected `object`"):
        return ContractError(400, "invalid_json", "request body must be a JSON object")
    if message.startswith("Object contains unknown field"):
        # All of them, not only the first; decoding the whole body also finds it malformed if it is.
        unknown = sorted(set(msgspec.json.decode(body)) - set(model.__struct_fields__))
        return ContractError(422, "unknown_option", f"unknown option(s): {', '.join(unknown)}")
    if message == "Object missing required field `url`":
        return ContractError(422, "invalid_url", "url is required")
    field = message.rpartition("- at `$.")[2].rstrip("`") if "- at `$." in message else None
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
