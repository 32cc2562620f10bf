"""HTTP API: routes, request validation, JSON errors. Keeps the old service's paths and fields."""

import asyncio
import functools
import hashlib
import hmac
import importlib.util
import json
import logging
import platform
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

import app
from app import guard, media, ratelimit
from app.callbacks import Callbacks
from app.config import Settings
from app.events import EventHub, PublishingStore
from app.manager import Manager
from app.metrics import Metrics
from app.numbers import ascii_int
from app.retention import Retention
from app.store import STATUSES, QueueFullError, SQLiteTaskStore, TaskStore

MAX_BODY_BYTES = 64 * 1024
MAX_URL_LENGTH = 4096
QUEUE_FULL_RETRY_AFTER_S = 30
MAX_OFFSET = 10_000_000
MAX_CURSOR = 2**62
VIDEO_QUALITIES = ("360", "480", "720", "1080", "best")
OPTION_DEFAULTS = {
    "extract_audio": True,
    "keep_video": True,
    "video_quality": "best",
    "audio_format": "mp3",
    "audio_bitrate": "192",
}
_ID = re.compile(r"[0-9a-f]{32}")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
MANAGER = web.AppKey("manager", Manager)
RETENTION = web.AppKey("retention", Retention)
RATE_LIMITER = web.AppKey("rate_limiter", ratelimit.RateLimiter)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", EventHub)
SSE_KEEPALIVE_S = 15.0
log = logging.getLogger("app.web")
routes = web.RouteTableDef()


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error_response(status: int, code: str, message: str, headers=None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = re.sub(r"\W+", "_", exc.reason.lower()).strip("_")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _error_response(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(500, "internal_error", "internal server error")


PUBLIC_API_PATHS = frozenset({"/api/health"})
TOKEN_DIGESTS = web.AppKey("token_digests", tuple)


def _digest(token: bytes) -> bytes:
    # Fixed-length digests, so the constant-time compare does not even reveal a token's length.
    return hashlib.sha256(token).digest()


@web.middleware
async def require_token(request: web.Request, handler):
    if request.path.startswith("/api/") and request.path not in PUBLIC_API_PATHS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given_digest = _digest(given.strip().encode())
        # Compare with every token, without stopping at a match, so timing says nothing.
        matched = False
        for digest in request.app[TOKEN_DIGESTS]:
            matched |= hmac.compare_digest(given_digest, digest)
        if scheme.lower() != "bearer" or not given.strip() or not matched:
            raise ApiError(401, "unauthorized", "a valid token is required: Authorization: Bearer <token>",
                           {"WWW-Authenticate": 'Bearer realm="video-download-api"'})  # fmt: skip
    return await handler(request)


@web.middleware
async def count_requests(request: web.Request, handler):
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        request.app[METRICS].observe_request(request, status, time.perf_counter() - started)


CORS_ALLOW_METHODS = "GET, POST, DELETE"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Content-Disposition"
CORS_MAX_AGE_S = 600


def _allowed_origin(request: web.Request) -> str | None:
    """The Access-Control-Allow-Origin value for this request, or None (no Origin, or not listed)."""
    origins = request.app[SETTINGS].cors_origins
    origin = request.headers.get("Origin", "")
    if not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.lower() in origins else None


@web.middleware
async def cors(request: web.Request, handler):
    # Tokens travel in the Authorization header, not in cookies, so Allow-Credentials is never
    # sent: "*" can never be combined with credentials.
    allowed = _allowed_origin(request)
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if preflight and allowed:
        response = web.Response(status=204)
        response.headers.update({"Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                                 "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                                 "Access-Control-Max-Age": str(CORS_MAX_AGE_S)})  # fmt: skip
        return response
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not the middleware: streamed responses (events, files) send their headers early.
    allowed = _allowed_origin(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = allowed
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    if allowed != "*":
        response.headers.add("Vary", "Origin")


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def task_view(task: dict) -> dict:
    def download_url(file_id):
        return None if file_id is None else f"/api/download/{file_id}"

    return {
        "task_id": task["id"],
        "status": task["status"],
        "progress": round(task["progress"], 1),
        "downloaded_bytes": task["downloaded_bytes"],
        "total_bytes": task["total_bytes"],
        "speed": task["speed"],
        "eta": task["eta"],
        "message": task["message"],
        "url": task["url"],
        "options": task["options"],
        "attempts": task["attempts"],
        "created_at": _iso(task["created_at"]),
        "updated_at": _iso(task["updated_at"]),
        "started_at": _iso(task["started_at"]),
        "completed_at": _iso(task["finished_at"]),
        "video_info": task["video_info"],
        "files": {"video": download_url(task["video_file_id"]), "audio": download_url(task["audio_file_id"])},
        "error": task["error"],
    }


def _validate_options(body: dict) -> dict:
    unknown = sorted(set(body) - set(OPTION_DEFAULTS) - {"url", "callback_url"})
    if unknown:
        raise ApiError(422, "unknown_option", f"unknown option(s): {', '.join(unknown)}")
    options = {**OPTION_DEFAULTS, **{k: v for k, v in body.items() if k not in ("url", "callback_url")}}
    for flag in ("extract_audio", "keep_video"):
        if not isinstance(options[flag], bool):
            raise ApiError(422, "invalid_option", f"{flag} must be true or false")
    if not options["extract_audio"] and not options["keep_video"]:
        raise ApiError(422, "invalid_option", "extract_audio and keep_video are both false: nothing to produce")
    quality = options["video_quality"]
    quality = str(quality).lower() if isinstance(quality, int | str) and not isinstance(quality, bool) else None
    if quality not in VIDEO_QUALITIES:
        raise ApiError(422, "invalid_option", f"video_quality must be one of {', '.join(VIDEO_QUALITIES)}")
    options["video_quality"] = quality
    if options["audio_format"] not in media.AUDIO_FORMATS:
        raise ApiError(422, "invalid_option", f"audio_format must be one of {', '.join(media.AUDIO_FORMATS)}")
    bitrate = options["audio_bitrate"]
    if isinstance(bitrate, str):
        bitrate = bitrate.strip().lower().removesuffix("k")
    if bitrate != "best":
        kbps = bitrate if isinstance(bitrate, int) and not isinstance(bitrate, bool) else None
        if isinstance(bitrate, str):
            kbps = ascii_int(bitrate)
        if kbps is None:
            raise ApiError(422, "invalid_option", "audio_bitrate must be a number of kbps (32-512) or 'best'")
        if not 32 <= kbps <= 512:
            raise ApiError(422, "invalid_option", "audio_bitrate must be between 32 and 512 kbps")
        bitrate = str(kbps)
    options["audio_bitrate"] = bitrate
    return options


async def _check_url(url, settings: Settings, name: str = "url") -> str:
    if not isinstance(url, str) or not url.strip():
        raise ApiError(422, "invalid_url", f"{name} must be a non-empty string")
    url = url.strip()
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


def _task_id(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not _ID.fullmatch(task_id):
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task_id


async def _get_task(request: web.Request) -> dict:
    task_id = _task_id(request)
    task = await request.app[STORE].get(task_id)
    if task is None:
        raise ApiError(404, "task_not_found", f"no task {task_id!r}")
    return task


def _int_param(request: web.Request, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None or not minimum <= value <= maximum:
        raise ApiError(422, "invalid_parameter", f"{name} must be an integer from {minimum} to {maximum}")
    return value


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    endpoints = {
        "GET /api/health": "service health and versions",
        "POST /api/process": "queue a download: {url, extract_audio, keep_video, video_quality, audio_format,"
        " audio_bitrate, callback_url}",
        "GET /api/status/{task_id}": "task status and progress",
        "GET /api/download/{file_id}": "a produced file (supports Range)",
        "DELETE /api/tasks/{task_id}": "cancel a task and delete its files",
        "GET /api/tasks": "counts and a page of tasks (limit, offset, status)",
        "GET /api/tasks/{task_id}/events": "Server-Sent Events: progress and status until the task ends"
        " (Last-Event-ID resumes)",
        "GET /api/storage/info": "disk use of the media folder",
        "POST /api/storage/cleanup": "run retention now",
        "GET /metrics": "Prometheus metrics (from VIDEO_API_METRICS_NETWORKS only)",
        "GET /api/openapi.json": "OpenAPI 3.1 description of this API",
    }
    return web.json_response({"service": "video-download-api", "version": app.__version__, "endpoints": endpoints})


@routes.post("/api/process")
async def process(request: web.Request) -> web.Response:
    limiter = request.app.get(RATE_LIMITER)
    if limiter is not None:
        settings = request.app[SETTINGS]
        client = ratelimit.client_address(request.remote, request.headers.getall("X-Forwarded-For", []),
                                          settings.trusted_proxies)  # fmt: skip
        wait = limiter.acquire(client)
        if wait:
            raise ApiError(429, "rate_limited", f"too many new tasks from {client}; try again in {wait} s",
                           {"Retry-After": str(wait)})  # fmt: skip
    try:
        body = await request.json(loads=_strict_json)
    except ValueError as exc:  # also bad UTF-8 (UnicodeDecodeError) and nesting too deep
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    if "url" not in body:
        raise ApiError(422, "invalid_url", "url is required")
    options = _validate_options(body)
    url = await _check_url(body["url"], request.app[SETTINGS])
    if body.get("callback_url") is not None:
        if not request.app[SETTINGS].callback_secret:
            raise ApiError(422, "callbacks_disabled", "callback_url needs VIDEO_API_CALLBACK_SECRET on the service")
        # The same guard as downloads: the service will connect there.
        options["callback_url"] = await _check_url(body["callback_url"], request.app[SETTINGS], "callback_url")
    try:
        task, created = await request.app[MANAGER].submit(url, options)
    except QueueFullError:
        raise ApiError(429, "queue_full", "too many tasks waiting; try again later",
                       {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)}) from None  # fmt: skip
    status_url = f"/api/status/{task['id']}"
    message = "task queued" if created else f"the same download is already {task['status']}; returning that task"
    return web.json_response(
        {"task_id": task["id"], "status": task["status"], "status_url": status_url, "message": message},
        status=202,
        headers={"Location": status_url},
    )


def _strict_json(text: str):
    def reject_constant(name):
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@routes.get("/api/status/{task_id}")
async def status(request: web.Request) -> web.Response:
    return web.json_response(task_view(await _get_task(request)))


@routes.delete("/api/tasks/{task_id}")
async def delete_task(request: web.Request) -> web.Response:
    task = await request.app[MANAGER].cancel(await _get_task(request))
    return web.json_response({**task_view(task), "message": f"task {task['status']}; its files are deleted"})


@routes.get("/api/tasks/{task_id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    task = await _get_task(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
    await response.prepare(request)
    # A reconnecting browser waits this long (ms) before trying again.
    await response.write(b"retry: 2000\n\n")
    events = request.app[EVENTS].follow(task["id"], request.headers.get("Last-Event-ID"), request.app[STORE],
                                        SSE_KEEPALIVE_S)  # fmt: skip
    try:
        async for event in events:
            if event is None:
                await response.write(b": keep-alive\n\n")
            else:
                data = json.dumps(task_view(event.task), separators=(",", ":"))
                await response.write(f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode())
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        # The status line is sent: an error response here would land inside the event stream.
        # Ending the stream makes the client reconnect with its Last-Event-ID.
        log.exception("event stream of task %s failed", task["id"])
    await response.write_eof()
    return response


@routes.get("/api/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    # Keyset paging: `before` is the cursor of the page's `next` link; its cost does not grow
    # with depth the way a large offset's does.
    before = _int_param(request, "before", None, 1, MAX_CURSOR)
    if before is not None and offset:
        raise ApiError(422, "invalid_parameter", "before and offset cannot be combined")
    status_filter = request.query.get("status")
    if status_filter is not None and status_filter not in STATUSES:
        raise ApiError(422, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}")
    store = request.app[STORE]
    counts = await store.counts()
    tasks = await store.page(status_filter, limit + 1, offset, before)
    next_link = None
    if len(tasks) > limit:
        tasks = tasks[:limit]
        query = {"limit": limit, **({"status": status_filter} if status_filter else {}), "before": tasks[-1]["seq"]}
        next_link = f"/api/tasks?{urllib.parse.urlencode(query)}"
    total = counts.get(status_filter, 0) if status_filter else sum(counts.values())
    page = {"counts": counts, "total": total, "limit": limit, "offset": offset, "next": next_link,
            "tasks": [task_view(t) for t in tasks]}  # fmt: skip
    return web.json_response(page)


def _content_disposition(name: str) -> str:
    fallback = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


@routes.get("/api/download/{file_id}")
async def download(request: web.Request) -> web.StreamResponse:
    file_id = request.match_info["file_id"]
    file = await request.app[STORE].get_file(file_id) if _ID.fullmatch(file_id) else None
    if file is None:
        raise ApiError(404, "file_not_found", f"no file {file_id!r}")
    if file["removed_at"] is not None:
        raise ApiError(410, "file_gone", f"file was removed: {file['removed_reason']}")
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


_BYTE_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)


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
        raise ApiError(416, "range_not_satisfiable", f"the range asked for is outside the file of {size} bytes",
                       {"Content-Range": f"bytes */{size}"})  # fmt: skip
    return True


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    checks = {}
    versions = dict(_static_versions())
    try:
        await request.app[STORE].ping()
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "detail": f"database does not answer: {exc}"}
    try:
        await asyncio.to_thread(_probe_writable, settings.media_dir)
        checks["media_writable"] = {"ok": True}
    except OSError as exc:
        checks["media_writable"] = {"ok": False, "detail": f"cannot write to media folder: {exc}"}
    try:
        versions["ffmpeg"] = await media.ffmpeg_version()
        checks["ffmpeg"] = {"ok": True}
    except media.MediaError as exc:
        versions["ffmpeg"] = None
        checks["ffmpeg"] = {"ok": False, "detail": str(exc)}
    try:
        free = shutil.disk_usage(settings.media_dir).free
        ok = free >= settings.min_free_mb * 1024 * 1024
        checks["disk_free"] = {"ok": ok, "free_mb": free // (1024 * 1024), "min_free_mb": settings.min_free_mb}
        if not ok:
            checks["disk_free"]["detail"] = "free disk below VIDEO_API_MIN_FREE_MB"
    except OSError as exc:
        checks["disk_free"] = {"ok": False, "detail": str(exc)}
    healthy = all(check["ok"] for check in checks.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checks": checks,
        "failing": [name for name, check in checks.items() if not check["ok"]],
        "versions": versions,
        "workers": {"running": request.app[MANAGER].running_count, "max": settings.max_concurrent},
    }
    return web.json_response(body, status=200 if healthy else 503)


@functools.cache
def _static_versions() -> dict:
    # yt_dlp/version.py holds only constants: run alone, it gives the version without importing
    # yt-dlp into the main process, and without importlib.metadata (~1.4 MB of RSS for two lookups).
    package_dir = importlib.util.find_spec("yt_dlp").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("yt_dlp_version", Path(package_dir) / "version.py")
    yt_dlp_version = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(yt_dlp_version)
    return {"app": app.__version__, "yt_dlp": yt_dlp_version.__version__, "aiohttp": aiohttp.__version__,
            "python": platform.python_version()}  # fmt: skip


def _probe_writable(folder) -> None:
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".health-"):
        pass


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    # Imported on first use: the document is rarely asked for, and the idle service need not hold it.
    from app import openapi

    return web.json_response(openapi.DOCUMENT)


@routes.get("/metrics")
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
async def storage_info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    count, used = await request.app[STORE].live_bytes()
    disk = await asyncio.to_thread(shutil.disk_usage, settings.media_dir)
    return web.json_response(
        {
            "files": count,
            "used_bytes": used,
            "max_storage_bytes": settings.max_storage_mb * 1024 * 1024,
            "disk_free_bytes": disk.free,
            "disk_total_bytes": disk.total,
            "min_free_bytes": settings.min_free_mb * 1024 * 1024,
            "retention_hours": settings.retention_hours,
        }
    )


@routes.post("/api/storage/cleanup")
async def storage_cleanup(request: web.Request) -> web.Response:
    return web.json_response(await request.app[RETENTION].run())


async def _services(application: web.Application):
    settings = application[SETTINGS]
    store = PublishingStore(SQLiteTaskStore(settings.db_path), application[EVENTS])
    retention = Retention(settings, store)
    manager = Manager(settings, store, application[METRICS], retention)
    application[STORE] = store
    application[MANAGER] = manager
    application[RETENTION] = retention
    callbacks = Callbacks(settings, task_view)
    application[EVENTS].listeners.append(callbacks.on_task)
    await manager.start()
    retention_task = asyncio.create_task(application[RETENTION].run_periodically())
    yield
    retention_task.cancel()
    await manager.shutdown()
    await callbacks.close()
    await store.close()


async def _end_event_streams(application: web.Application) -> None:
    application[EVENTS].close()


def create_app(settings: Settings) -> web.Application:
    # CORS and token checks are left out of the chain when not configured: every request would
    # pay for them, and without settings they do nothing.
    middlewares = [count_requests]
    if settings.cors_origins:
        middlewares.append(cors)
    middlewares.append(json_errors)
    if settings.tokens:
        middlewares.append(require_token)
    application = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    application[SETTINGS] = settings
    application[METRICS] = Metrics()
    application[EVENTS] = EventHub()
    if settings.cors_origins:
        application.on_response_prepare.append(_cors_headers)
    application.on_shutdown.append(_end_event_streams)
    if settings.rate_per_minute > 0:
        application[RATE_LIMITER] = ratelimit.RateLimiter(settings.rate_per_minute, settings.rate_burst)
    application[TOKEN_DIGESTS] = tuple(_digest(token.encode()) for token in settings.tokens)
    application.add_routes(routes)
    application.cleanup_ctx.append(_services)
    return application
