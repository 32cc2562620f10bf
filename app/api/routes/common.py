"""What every route module shares: JSON answers, and looking up the task or file a path names."""

import logging
import re
from collections.abc import Mapping

import msgspec
from aiohttp import web

from app.api.contract import encode
from app.api.keys import STORE, TENANT
from app.api.middlewares import ApiError
from app.api.openapi import Reply
from app.store.records import FileRecord, TaskRecord
from app.tenants.directory import ADMIN
from app.tenants.tenants_file import Tenant

ID = re.compile(r"[0-9a-f]{32}")
NO_TASK = Reply("No such task (or another user's).")
ADMIN_ONLY = Reply("The token is a user's, not an admin's.")
RETRY_AFTER = {"Retry-After": "Seconds to wait."}
# Who asked for, cancelled, deleted or cleaned up what: a user's name, never its token.
audit = logging.getLogger("app.audit")


def json_response(value: msgspec.Struct, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(value), status=status, headers=headers, content_type="application/json")


def no_task(task_id: str) -> ApiError:
    """The answer for a task that does not exist, or that the request's user may not see."""
    return ApiError(404, "task_not_found", f"no task {task_id!r}")


def task_id_of(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not ID.fullmatch(task_id):
        raise no_task(task_id)
    return task_id


def tenant_of(request: web.Request) -> Tenant:
    """Who sent the request; without tokens everyone is the admin."""
    tenant: Tenant = request.get(TENANT, ADMIN)
    return tenant


def sees(request: web.Request, owner: str) -> bool:
    """Whether the request's user may see what owner owns: an admin everything, a user its own."""
    tenant = tenant_of(request)
    return tenant.is_admin or tenant.name == owner


def require_admin(request: web.Request) -> None:
    if not tenant_of(request).is_admin:
        raise ApiError(403, "admin_only", "this needs an admin's token")


async def task_of(request: web.Request, task_id: str | None = None) -> TaskRecord:
    """The task the path (or task_id) names, if the request's user may see it; else 404, the same
    answer as for no task at all, so another user's task ids are not revealed."""
    task_id = task_id or task_id_of(request)
    task = await request.app[STORE].get(task_id)
    if task is None or not sees(request, task["tenant"]):
        raise no_task(task_id)
    return task


async def live_file_of(request: web.Request) -> FileRecord:
    """The file the path names, if not removed and the request's user may see it (another host
    asking through /internal/ carries no token: it is the admin)."""
    file_id = request.match_info["file_id"]
    file = await request.app[STORE].get_file(file_id) if ID.fullmatch(file_id) else None
    if file is None or not sees(request, file["tenant"]):
        raise ApiError(404, "file_not_found", f"no file {file_id!r}")
    if file["removed_at"] is not None:
        raise ApiError(410, "file_gone", f"file was removed: {file['removed_reason']}")
    return file
