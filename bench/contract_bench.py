"""The API contract's cost on the hot paths: msgspec (adopted) against pydantic v2, same models.

    .venv/bin/python bench/contract_bench.py [--rounds 20000]

Prints microseconds per call for: validating a POST /api/process body, encoding one task
(GET /api/status) and encoding a 50-task page (GET /api/tasks), with the standard library's
json decode/encode of the same bytes (no validation at all) as the floor.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pydantic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.api import contract
from app.api.serializers import task_view
from app.tasks import media

BODY = b'{"url": "https://media.example/v.mp4", "audio_format": "m4a", "audio_bitrate": "160k"}'
NOW = time.time()
ROW = {
    "id": "0123456789abcdef0123456789abcdef",
    "seq": 7,
    "status": "downloading",
    "progress": 42.123,
    "downloaded_bytes": 1234567,
    "total_bytes": 9876543,
    "speed": 250000.0,
    "eta": 12.0,
    "message": "downloading",
    "url": "https://media.example/v.mp4",
    "attempts": 1,
    "created_at": NOW,
    "updated_at": NOW,
    "started_at": NOW,
    "finished_at": None,
    "video_file_id": None,
    "audio_file_id": None,
    "error": None,
    "options": {
        "extract_audio": True,
        "keep_video": True,
        "video_quality": "best",
        "audio_format": "mp3",
        "audio_bitrate": "192",
    },
    "video_info": {"title": "A title", "duration": 4.0, "extractor": "generic", "width": 320, "height": 240},
}


class PydanticProcessRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    url: str = pydantic.Field(min_length=1)
    extract_audio: bool = True
    keep_video: bool = True
    video_quality: Literal["360", "480", "720", "1080", "best", 360, 480, 720, 1080] = "best"
    audio_format: Literal[media.AUDIO_FORMATS] = "mp3"
    audio_bitrate: int | str = "192"
    callback_url: str | None = None


class PydanticFiles(pydantic.BaseModel):
    video: str | None
    audio: str | None


class PydanticTask(pydantic.BaseModel):
    task_id: str
    status: str
    progress: float
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
    files: PydanticFiles
    error: str | None


class PydanticPage(pydantic.BaseModel):
    tasks: list[PydanticTask]


def per_call_us(function, rounds: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds * 1e6


def pydantic_task(row: dict) -> PydanticTask:
    view = task_view(row)
    return PydanticTask(
        **{name: getattr(view, name) for name in view.__struct_fields__ if name != "files"},
        files=PydanticFiles(video=view.files.video, audio=view.files.audio),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20000)
    rounds = parser.parse_args().rounds
    rows = [dict(ROW, seq=n) for n in range(50)]
    floor_page = json.dumps([dict(ROW, seq=n) for n in range(50)]).encode()
    cases = {
        "submit: validate body": (
            lambda: contract.decode_process_request(BODY),
            lambda: PydanticProcessRequest.model_validate_json(BODY),
            lambda: json.loads(BODY),
        ),
        "status: encode one task": (
            lambda: contract.encode(task_view(ROW)),
            lambda: pydantic_task(ROW).model_dump_json(),
            lambda: json.dumps(ROW).encode(),
        ),
        "list: encode 50 tasks": (
            lambda: contract.encode([task_view(row) for row in rows]),
            lambda: PydanticPage(tasks=[pydantic_task(row) for row in rows]).model_dump_json(),
            lambda: json.loads(floor_page) and json.dumps(rows).encode(),
        ),
    }
    print(f"{'µs per call':28} {'msgspec':>9} {'pydantic':>9} {'json (no validation)':>21}")
    for name, (ours, theirs, floor) in cases.items():
        calls = rounds if "50" not in name else rounds // 20
        counts = [per_call_us(function, calls) for function in (ours, theirs, floor)]
        print(f"{name:28} {counts[0]:9.2f} {counts[1]:9.2f} {counts[2]:21.2f}")
    print(f"msgspec {contract.msgspec.__version__}, pydantic {pydantic.VERSION}")


if __name__ == "__main__":
    main()
