"""The API's handlers. Each one declares its OpenAPI operation (`@describe`), from which the
document and the endpoint list of `GET /` are generated: routes are written once, here."""

import asyncio
import logging
import re
import shutil
import socket
import urllib.parse

import msgspec
from aiohttp import web

import app
from app import cluster, guard, health, media, openapi, ratelimit, ui
from app.appkeys import EVENTS, MANAGER, METRICS, RATE_LIMITER, RETENTION, SETTINGS, STORE
from app.config import Settings
from app.contract import (
    MAX_URL_LENGTH,
    Accepted,
    Cleanup,
    ContractError,
    Health,
    Index,
    ProcessRequest,
    StorageInfo,
    TaskList,
    TaskListQuery,
    TaskView,
    decode_process_request,
    encode,
    parse_query,
)
from app.middlewares import ApiError
from app.openapi import Reply, describe
from app.records import TaskRecord
from app.store import QueueFullError
from app.views import task_view

QUEUE_FULL_RETRY_AFTER_S = 30
SSE_KEEPALIVE_S = 15.0
_ID = re.compile(r"[0-9a-f]{32}")
_BYTE_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)
NO_TASK = Reply("No such task.")
RETRY_AFTER = {"Retry-After": "Seconds to wait."}
log = logging.getLogger("app.web")
routes = web.RouteTableDef()


def json_response(value, status: int = 200, headers=None) -> web.Response:
    return web.Response(body=encode(value), status=status, headers=headers, content_type="application/json")


def _task_id(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not _ID.fullmatch(task_id):
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task_id


async def _get_task(request: web.Request) -> TaskRecord:
    task_id = _task_id(request)
    task = await request.app[STORE].get(task_id)
    if task is None:
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task


@routes.get("/")
@describe(
    "Service name, version and endpoints",
    {
        200: Reply("Index.", Index),
        303: Reply(
            "A browser (Accept prefers text/html to JSON) is sent to the web page.", headers={"Location": "/ui/"}
        ),
    },
    public=True,
)
async def index(request: web.Request) -> web.Response:
    if ui.wants_page(request):
        return ui.redirect_to_page()
    described = openapi.operations(request.app.router)
    endpoints = {f"{method} {path}": handler.operation.summary for path, method, handler in described}
    return json_response(Index("video-download-api", app.__version__, endpoints), headers={"Vary": "Accept"})


async def check_url(url: str, settings: Settings, name: str = "url") -> str:
    """The URL, stripped, when its host resolves only to allowed addresses; else a 422."""
    url = url.strip()
    if not url:
        raise ApiError(422, "invalid_url", f"{name} must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(422, "invalid_url", f"{name} is longer than {MAX_URL_LENGTH} characters")
    try:
        host = guard.check_url_syntax(url)
    except guard.BlockedAddressError as exc:
        raise ApiError(422, "invalid_url", str(exc)) from None
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ApiError(422, "unresolvable_host", f"host {host} does not resolve: {exc}") from None
    try:
        guard.check_resolved(host, [info[4][0] for info in infos], settings.allow_networks)
    except guard.BlockedAddressError as exc:
        raise ApiError(422, "blocked_address", str(exc)) from None
    return url


def _rate_limit(request: web.Request) -> None:
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return
    settings = request.app[SETTINGS]
    client = ratelimit.client_address(
        request.remote, request.headers.getall("X-Forwarded-For", []), settings.trusted_proxies
    )
    wait = limiter.acquire(client)
    if wait:
        raise ApiError(
            429, "rate_limited", f"too many new tasks from {client}; try again in {wait} s", {"Retry-After": str(wait)}
        )


@routes.post("/api/process")
@describe(
    "Queue a download",
    {
        202: Reply(
            "Queued, or the active task for the same URL and options.",
            Accepted,
            headers={"Location": "The status URL."},
        ),
        400: Reply("Body is not a JSON object."),
        413: Reply("Body larger than 64 KiB."),
        422: Reply("Invalid option, URL or callback_url; blocked or unresolvable address; callbacks disabled."),
        429: Reply("Queue full, or this client's rate limit reached.", headers=RETRY_AFTER),
    },
    body=ProcessRequest,
)
async def process(request: web.Request) -> web.Response:
    _rate_limit(request)
    settings = request.app[SETTINGS]
    try:
        body = decode_process_request(await request.read())
    except ContractError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    options = body.options()
    url = await check_url(body.url, settings)
    if body.callback_url is not None:
        if not settings.callback_secret:
            raise ApiError(422, "callbacks_disabled", "callback_url needs VIDEO_API_CALLBACK_SECRET on the service")
        # The same guard as downloads: the service will connect there.
        options["callback_url"] = await check_url(body.callback_url, settings, "callback_url")
    try:
        task, created = await request.app[MANAGER].submit(url, options)
    except QueueFullError:
        raise ApiError(
            429, "queue_full", "too many tasks waiting; try again later", {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)}
        ) from None
    status_url = f"/api/status/{task['id']}"
    message = "task queued" if created else f"the same download is already {task['status']}; returning that task"
    return json_response(Accepted(task["id"], task["status"], status_url, message), 202, {"Location": status_url})


@routes.get("/api/status/{task_id}")
@describe("Status and progress of a task", {200: Reply("The task.", TaskView), 404: NO_TASK})
async def status(request: web.Request) -> web.Response:
    return json_response(task_view(await _get_task(request)))


@routes.delete("/api/tasks/{task_id}")
@describe("Cancel a task and delete its files", {200: Reply("The task as it is now.", TaskView), 404: NO_TASK})
async def delete_task(request: web.Request) -> web.Response:
    task = await request.app[MANAGER].cancel(await _get_task(request))
    view = msgspec.structs.replace(task_view(task), message=f"task {task['status']}; its files are deleted")
    return json_response(view)


@routes.get("/api/tasks/{task_id}/events")
@describe(
    "Server-Sent Events of a task until it ends",
    {
        200: Reply(
            "`event: status|progress`, `id: <boot>-<n>`, `data: <Task JSON>`.", content_type="text/event-stream"
        ),
        404: NO_TASK,
    },
    headers={"Last-Event-ID": "Resume after this event id; any other value: a snapshot first."},
)
async def task_events(request: web.Request) -> web.StreamResponse:
    task = await _get_task(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    # A reconnecting browser waits this long (ms) before trying again.
    await response.write(b"retry: 2000\n\n")
    events = request.app[EVENTS].follow(
        task["id"], request.headers.get("Last-Event-ID"), request.app[STORE], SSE_KEEPALIVE_S
    )
    try:
        async for event in events:
            if event is None:
                await response.write(b": keep-alive\n\n")
            else:
                head = f"id: {event.id}\nevent: {event.kind}\ndata: ".encode()
                await response.write(head + encode(task_view(event.task)) + b"\n\n")
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        # The status line is sent: an error response here would land inside the event stream.
        # Ending the stream makes the client reconnect with its Last-Event-ID.
        log.exception("event stream of task %s failed", task["id"])
    await response.write_eof()
    return response


@routes.get("/api/tasks")
@describe(
    "Counts and a page of tasks, newest first",
    {200: Reply("Counts and page.", TaskList), 422: Reply("Invalid limit, offset, before or status.")},
    query=TaskListQuery,
)
async def list_tasks(request: web.Request) -> web.Response:
    try:
        query = parse_query(TaskListQuery, request.query)
    except ContractError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if query.before is not None and query.offset:
        raise ApiError(422, "invalid_parameter", "before and offset cannot be combined")
    store = request.app[STORE]
    counts = await store.counts()
    # Keyset paging: `before` is the cursor of the page's `next` link; its cost does not grow
    # with depth the way a large offset's does. One row more tells whether a next page exists.
    tasks = await store.page(query.status, query.limit + 1, query.offset, query.before)
    next_link = None
    if len(tasks) > query.limit:
        tasks = tasks[: query.limit]
        cursor = {"limit": query.limit, "status": query.status, "before": tasks[-1]["seq"]}
        next_link = "/api/tasks?" + urllib.parse.urlencode({k: v for k, v in cursor.items() if v is not None})
    total = counts.get(query.status, 0) if query.status else sum(counts.values())
    page = TaskList(counts, total, query.limit, query.offset, next_link, [task_view(task) for task in tasks])
    return json_response(page)


def _content_disposition(name: str) -> str:
    fallback = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


@routes.get("/api/download/{file_id}")
@describe(
    "A file the service produced (Range supported)",
    {
        200: Reply("The file.", content_type="*/*"),
        206: Reply("The requested range.", content_type="*/*"),
        404: Reply("No such file."),
        410: Reply("Removed by retention or with its task."),
        416: Reply(
            "Range not satisfiable: it starts past the end, or asks for the last 0 bytes. A Range that does not"
            " parse is ignored (200).",
            headers={"Content-Range": "bytes */<size>"},
        ),
        503: Reply("Several hosts: the host holding the file does not answer.", headers=RETRY_AFTER),
    },
)
async def download(request: web.Request) -> web.StreamResponse:
    file = await _live_file(request, request.match_info["file_id"])
    settings = request.app[SETTINGS]
    if request.app[STORE].shared and file["node"] != settings.node_name:
        return await cluster.proxy_file(request, file)
    return await _serve_file(request, file)


@routes.get("/internal/files/{file_id}")
async def internal_file(request: web.Request) -> web.StreamResponse:
    """A file of this host, for another host answering a download (not in the API document)."""
    cluster.check_signature(request)
    return await _serve_file(request, await _live_file(request, request.match_info["file_id"]))


async def _live_file(request: web.Request, file_id: str) -> dict:
    file = await request.app[STORE].get_file(file_id) if _ID.fullmatch(file_id) else None
    if file is None:
        raise ApiError(404, "file_not_found", f"no file {file_id!r}")
    if file["removed_at"] is not None:
        raise ApiError(410, "file_gone", f"file was removed: {file['removed_reason']}")
    return file


async def _serve_file(request: web.Request, file: dict) -> web.StreamResponse:
    media_dir = request.app[SETTINGS].media_dir.resolve()
    # The path comes from the task store only; still refuse anything that resolves outside media_dir.
    path = (media_dir / file["path"]).resolve()
    if not path.is_relative_to(media_dir) or not path.is_file():
        raise ApiError(410, "file_gone", "file is no longer on disk")
    headers = {
        "Content-Type": media.content_type(file["path"]),
        "Content-Disposition": _content_disposition(file["name"]),
    }
    response = web.FileResponse(path, headers=headers)
    if not _range_is_usable(request, path.stat().st_size):
        # RFC 9110 section 14.2: a server may ignore a Range it cannot parse; it sends the whole file.
        without_range = request.headers.copy()
        del without_range["Range"]
        await response.prepare(request.clone(headers=without_range))
    return response


def _range_is_usable(request: web.Request, size: int) -> bool:
    """False for a Range header to ignore; raises 416 for one that is valid but unsatisfiable."""
    header = request.headers.get("Range")
    if header is None:
        return True
    match = _BYTE_RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return False  # another unit, several ranges, or no numbers
    first, last = (int(value) if value else None for value in match.groups())
    if first is not None and last is not None and last < first:
        return False
    if (first is not None and first >= size) or (first is None and last == 0):
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the range asked for is outside the file of {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    return True


@routes.get("/api/health")
@describe(
    "Real checks: database, media folder, FFmpeg, free disk",
    {200: Reply("Healthy.", Health), 503: Reply("Unhealthy.", Health)},
    public=True,
)
async def health_check(request: web.Request) -> web.Response:
    report = await health.check(request.app[SETTINGS], request.app[STORE], request.app[MANAGER].running_count)
    return json_response(report, 200 if report.status == "healthy" else 503)


@routes.get("/api/openapi.json")
@describe("This document", {200: Reply("OpenAPI 3.1 document.")})
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=openapi.document(request.app.router), content_type="application/json")


@routes.get("/metrics")
@describe(
    "Prometheus metrics",
    {
        200: Reply("Prometheus text format.", content_type="text/plain"),
        403: Reply("Peer outside VIDEO_API_METRICS_NETWORKS."),
    },
    public=True,
)
async def metrics(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    peer = request.remote or ""
    if not ratelimit.address_in(peer, settings.metrics_networks):
        raise ApiError(403, "forbidden", f"/metrics is not open to {peer} (VIDEO_API_METRICS_NETWORKS)")
    counts = await request.app[STORE].counts()
    _, used = await request.app[STORE].live_bytes()
    disk = await asyncio.to_thread(shutil.disk_usage, settings.media_dir)
    return request.app[METRICS].render(counts, request.app[MANAGER].running_count, used, disk.free)


@routes.get("/api/storage/info")
@describe("Disk use of the media folder", {200: Reply("Figures.", StorageInfo)})
async def storage_info(request: web.Request) -> web.Response:
    settings, store = request.app[SETTINGS], request.app[STORE]
    count, used = await store.live_bytes(settings.node_name if store.shared else None)
    cluster_count, cluster_used = await store.live_bytes() if store.shared else (count, used)
    disk = await asyncio.to_thread(shutil.disk_usage, settings.media_dir)
    mb = 1024 * 1024
    info = StorageInfo(
        settings.node_name,
        count,
        used,
        settings.max_storage_mb * mb,
        disk.free,
        disk.total,
        settings.min_free_mb * mb,
        settings.retention_hours,
        cluster_count,
        cluster_used,
    )
    return json_response(info)


@routes.post("/api/storage/cleanup")
@describe("Run retention now", {200: Reply("What was deleted.", Cleanup)})
async def storage_cleanup(request: web.Request) -> web.Response:
    return json_response(msgspec.convert(await request.app[RETENTION].run(), Cleanup))
