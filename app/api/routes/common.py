"""What every route module shares: JSON answers, and looking up the task or file a path names."""

import re
from collections.abc import Mapping

import msgspec
from aiohttp import web

from app.api.contract import encode
from app.api.keys import STORE
from app.api.middlewares import ApiError
from app.api.openapi import Reply
from app.store.records import FileRecord, TaskRecord

ID = re.compile(r"[0-9a-f]{32}")
NO_TASK = Reply("No such task.")
RETRY_AFTER = {"Retry-After": "Seconds to wait."}


def json_response(value: msgspec.Struct, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(value), status=status, headers=headers, content_type="application/json")


def task_id_of(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not ID.fullmatch(task_id):
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task_id


async def task_of(request: web.Request) -> TaskRecord:
    task_id = task_id_of(request)
    task = await request.app[STORE].get(task_id)
    if task is None:
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task


async def live_file_of(request: web.Request) -> FileRecord:
    file_id = request.match_info["file_id"]
    file = await request.app[STORE].get_file(file_id) if ID.fullmatch(file_id) else None
    if file is None:
        raise ApiError(404, "file_not_found", f"no file {file_id!r}")
    if file["removed_at"] is not None:
        raise ApiError(410, "file_gone", f"file was removed: {file['removed_reason']}")
    return file
