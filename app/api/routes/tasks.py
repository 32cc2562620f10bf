"""Routes of tasks: queue a download, its status, its live events, cancel it, list them.
Each handler declares its OpenAPI operation (`@describe`), from which the document and the
endpoint list of `GET /` are generated: routes are written once, here and beside."""

import asyncio
import logging
import urllib.parse
from typing import Any

import msgspec
from aiohttp import web

from app.api.contract import (
    MAX_URL_LENGTH,
    Accepted,
    ContractError,
    ProcessRequest,
    TaskList,
    TaskListQuery,
    TaskView,
    decode_process_request,
    encode,
    parse_query,
)
from app.api.keys import EVENTS, MANAGER, METRICS, RATE_LIMITER, SETTINGS, STORE, TENANT, VIEWS
from app.api.middlewares import ApiError
from app.api.networks import client_address
from app.api.openapi import Reply, describe
from app.api.routes.common import (
    NO_TASK,
    RETRY_AFTER,
    audit,
    json_response,
    no_task,
    sees,
    task_id_of,
    task_of,
    tenant_of,
)
from app.api.serializers import task_view
from app.settings import Settings
from app.store.base import STATUSES, QueueFullError, QuotaExceededError, StoreUnavailableError
from app.store.records import TaskRecord
from app.tasks import address_guard

QUEUE_FULL_RETRY_AFTER_S = 30
SSE_KEEPALIVE_S = 15.0
log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def check_url(url: str, settings: Settings, name: str = "url") -> str:
    """The URL, stripped, when its host resolves only to allowed addresses; else a 422."""
    url = url.strip()
    if not url:
        raise ApiError(422, "invalid_url", f"{name} must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(422, "invalid_url", f"{name} is longer than {MAX_URL_LENGTH} characters")
    try:
        address_guard.check_url_syntax(url)
    except address_guard.BlockedAddressError as exc:
        raise ApiError(422, "invalid_url", str(exc)) from None
    try:
        await address_guard.check_url_host(url, settings.allow_networks)
    except address_guard.UnresolvableHostError as exc:
        raise ApiError(422, "unresolvable_host", str(exc)) from None
    except address_guard.BlockedAddressError as exc:
        raise ApiError(422, "blocked_address", str(exc)) from None
    return url


def _rate_limit(request: web.Request) -> None:
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return
    if TENANT in request:  # with tokens, per user: a team behind one NAT address does not share a bucket
        client = f"user {request[TENANT].name}"
    else:
        settings = request.app[SETTINGS]
        client = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), settings.trusted_proxies)
    wait = limiter.acquire(client)
    if wait:
        raise ApiError(
            429, "rate_limited", f"too many new tasks from {client}; try again in {wait} s", {"Retry-After": str(wait)}
        )


@routes.post("/api/process")
@describe(
    "Queue a download",
    {
        200: Reply(
            "With reuse: a completed task of the same video and options whose files are kept.",
            Accepted,
            headers={"Location": "The status URL."},
        ),
        202: Reply(
            "Queued, or the active task for the same URL and options.",
            Accepted,
            headers={"Location": "The status URL."},
        ),
        400: Reply("Body is not a JSON object."),
        413: Reply("Body larger than 64 KiB, beyond what cookies may add."),
        422: Reply(
            "Invalid option, URL, callback_url or cookies; blocked or unresolvable address; callbacks or cookies"
            " disabled."
        ),
        429: Reply(
            "Queue full; this client's rate limit reached; or one of the user's limits (active tasks, submissions"
            " per minute) reached.",
            headers=RETRY_AFTER,
        ),
    },
    body=ProcessRequest,
)
async def process(request: web.Request) -> web.Response:
    _rate_limit(request)
    settings, tenant = request.app[SETTINGS], tenant_of(request)
    try:
        body = decode_process_request(await request.read())
    except ContractError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    options = body.options()
    if body.max_items is not None and body.max_items > settings.playlist_max_items:
        raise ApiError(
            422,
            "invalid_option",
            f"max_items may be at most {settings.playlist_max_items} (VIDEO_API_PLAYLIST_MAX_ITEMS)",
        )
    url = await check_url(body.url, settings)
    if body.callback_url is not None:
        if not settings.callback_secret:
            raise ApiError(422, "callbacks_disabled", "callback_url needs VIDEO_API_CALLBACK_SECRET on the service")
        # The same guard as downloads: the service will connect there.
        options["callback_url"] = await check_url(body.callback_url, settings, "callback_url")
    manager = request.app[MANAGER]
    if body.cookies is not None and not manager.takes_cookies:
        raise ApiError(422, "cookies_disabled", "cookies need VIDEO_API_COOKIE_SECRET on the service")
    if body.reuse:
        reused = await _reusable(request, url, options, tenant.name)
        if reused is not None:
            status_url = f"/api/status/{reused['id']}"
            message = "the same video with the same options is downloaded already; returning that task"
            return json_response(
                Accepted(reused["id"], reused["status"], status_url, message), 200, {"Location": status_url}
            )
    try:
        task, created = await manager.submit(url, options, tenant.limits(), body.cookies)
    except QueueFullError:
        raise ApiError(
            429, "queue_full", "too many tasks waiting; try again later", {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)}
        ) from None
    except QuotaExceededError as exc:
        request.app[METRICS].user_refused(tenant.name)
        audit.info("user %s refused a new task: %s", tenant.name, exc)
        raise ApiError(429, "user_limit_reached", str(exc), {"Retry-After": str(exc.retry_after)}) from None
    if created:
        request.app[METRICS].user_submitted(tenant.name)
        audit.info("user %s submitted task %s", tenant.name, task["id"])
    status_url = f"/api/status/{task['id']}"
    message = "task queued" if created else f"the same download is already {task['status']}; returning that task"
    return json_response(Accepted(task["id"], task["status"], status_url, message), 202, {"Location": status_url})


async def _reusable(request: web.Request, url: str, options: dict[str, Any], tenant: str) -> TaskRecord | None:
    """The user's completed task of the video url names, with the same options (where to call back
    aside) and all its files kept, or None."""

    def compared(options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k != "callback_url"}

    media_key = await request.app[MANAGER].media_key(url)
    if media_key is None:  # reuse only saves a download: the request downloads anew
        return None
    for task in await request.app[STORE].reusable(media_key, tenant):
        if compared(task["options"]) == compared(options):
            return task
    return None


@routes.get("/api/status/{task_id}")
@describe("Status and progress of a task", {200: Reply("The task.", TaskView), 404: NO_TASK})
async def status(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    view = await request.app[VIEWS].view(request.app[STORE], task_id)
    if view is None or not sees(request, view.owner):  # another user's: the same answer as no task
        raise no_task(task_id)
    return web.Response(body=view.body, content_type="application/json")


@routes.delete("/api/tasks/{task_id}")
@describe("Cancel a task and delete its files", {200: Reply("The task as it is now.", TaskView), 404: NO_TASK})
async def delete_task(request: web.Request) -> web.Response:
    task = await request.app[MANAGER].cancel(await task_of(request))
    audit.info("user %s cancelled task %s and deleted its files", tenant_of(request).name, task["id"])
    view = msgspec.structs.replace(task_view(task), message=f"task {task['status']}; its files are deleted")
    return json_response(view)


@routes.get("/api/tasks/{task_id}/events")
@describe(
    "Server-Sent Events of a task until it ends",
    {
        200: Reply(
            "`event: status|progress|item`, `id: <boot>-<n>`, `data: <Task JSON>`; a playlist's stream has an"
            " `item` event (the item's Task JSON) whenever one of its items changes status.",
            content_type="text/event-stream",
        ),
        404: NO_TASK,
    },
    headers={"Last-Event-ID": "Resume after this event id; any other value: a snapshot first."},
)
async def task_events(request: web.Request) -> web.StreamResponse:
    task = await task_of(request)
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
    except StoreUnavailableError:
        pass  # the client reconnects with its Last-Event-ID; the store has said why once
    except Exception:
        # The status line is sent: an error response here would land inside the event stream.
        # Ending the stream makes the client reconnect with its Last-Event-ID.
        log.exception("event stream of task %s failed", task["id"])
    await response.write_eof()
    return response


async def _item_counts(request: web.Request, parent_id: str) -> dict[str, int]:
    """The items of a playlist by status, as the playlist sums them up; 404 for no such task (or another user's)."""
    parent = await task_of(request, parent_id)
    if parent["playlist"] is None:
        return dict.fromkeys(STATUSES, 0)
    counts: dict[str, int] = parent["playlist"]["counts"]
    return counts


@routes.get("/api/tasks")
@describe(
    "Counts and a page of tasks (an admin's: every user's; a user's: its own), newest first; or of a playlist's"
    " items, in its order",
    {
        200: Reply("Counts and page.", TaskList),
        404: Reply("No task with that parent_id (or another user's)."),
        422: Reply("Invalid limit, offset, before, status or parent_id."),
    },
    query=TaskListQuery,
)
async def list_tasks(request: web.Request) -> web.Response:
    try:
        query = parse_query(TaskListQuery, request.query)
    except ContractError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if query.before is not None and query.offset:
        raise ApiError(422, "invalid_parameter", "before and offset cannot be combined")
    if query.before is not None and query.parent_id is not None:
        raise ApiError(422, "invalid_parameter", "a playlist's items are paged with offset, not before")
    store, views, tenant = request.app[STORE], request.app[VIEWS], tenant_of(request)
    # An admin's list is every user's; a user's its own (a playlist's items are its playlist's user's).
    owner = None if tenant.is_admin or query.parent_id is not None else tenant.name
    if query.parent_id is not None:
        counting = _item_counts(request, query.parent_id)
    elif owner is None:
        counting = views.listed(("counts", None), lambda: store.counts(top_level=True))
    else:
        counting = views.listed(("counts", owner), lambda: store.counts_of(owner))
    # One row more tells whether a next page exists. Top-level tasks: keyset paging, `before` is the
    # cursor of the page's `next` link (its cost does not grow with depth as a large offset's does);
    # a playlist's items, at most VIDEO_API_PLAYLIST_MAX_ITEMS in its order: offset. Only the keys
    # of the page are read: the views come from memory, those updated since from one more query.
    # Counts and page at once: on PostgreSQL two pooled connections, one round trip of waiting.
    page_of = (query.status, query.limit + 1, query.offset, query.before, query.parent_id, owner)
    reading = views.listed(("page", *page_of), lambda: store.page(*page_of, "id, seq, updated_at"))
    counts, tasks = await asyncio.gather(counting, reading)
    next_link = None
    if len(tasks) > query.limit:
        tasks = tasks[: query.limit]
        cursor: dict[str, str | int | None] = {"limit": query.limit, "status": query.status}
        if query.parent_id is None:
            cursor["before"] = tasks[-1]["seq"]
        else:
            cursor |= {"parent_id": query.parent_id, "offset": query.offset + query.limit}
        next_link = "/api/tasks?" + urllib.parse.urlencode({k: v for k, v in cursor.items() if v is not None})
    total = counts.get(query.status, 0) if query.status else sum(counts.values())
    # Each view is JSON already: msgspec writes a Raw as it is.
    page = [msgspec.Raw(view.body) for view in await views.views(store, tasks)]
    return json_response(TaskList(counts, total, query.limit, query.offset, next_link, page))  # type: ignore[arg-type]
