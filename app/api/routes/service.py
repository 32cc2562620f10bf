"""Routes of the service itself: the index, health, the OpenAPI document, metrics, storage."""

import asyncio
import contextlib
import shutil

import msgspec
from aiohttp import web

import app
from app import health
from app.api import openapi, webpage
from app.api.contract import Cleanup, Health, Index, StorageInfo
from app.api.keys import CLUSTER, DIRECTORY, MANAGER, METRICS, RETENTION, SETTINGS, STORE, VIEWS
from app.api.middlewares import ApiError
from app.api.networks import address_in
from app.api.openapi import Reply, describe
from app.api.routes.common import ADMIN_ONLY, audit, json_response, require_admin, tenant_of
from app.store.backup import newest_backup_time
from app.store.base import Occupancy, StoreUnavailableError

routes = web.RouteTableDef()


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
    if webpage.wants_page(request):
        return webpage.redirect_to_page()
    described = openapi.operations(request.app.router)
    endpoints = {f"{method} {path}": handler.operation.summary for path, method, handler in described}
    return json_response(Index("video-download-api", app.__version__, endpoints), headers={"Vary": "Accept"})


@routes.get("/api/health")
@describe(
    "Real checks: database, media folder, FFmpeg, free disk",
    {200: Reply("Healthy.", Health), 503: Reply("Unhealthy.", Health)},
    public=True,
)
async def health_check(request: web.Request) -> web.Response:
    report = await health.check(
        request.app[SETTINGS], request.app[STORE], request.app[MANAGER].running_count, request.app.get(CLUSTER)
    )
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
    if not address_in(peer, settings.metrics_networks):
        raise ApiError(403, "forbidden", f"/metrics is not open to {peer} (VIDEO_API_METRICS_NETWORKS)")
    counts: dict[str, int] | None = None
    occupancy: Occupancy | None = None
    used: int | None = None
    user_bytes: dict[str, int] | None = None
    with contextlib.suppress(StoreUnavailableError):  # the host's own figures still answer
        store = request.app[STORE]
        counts = await store.counts()
        occupancy = await store.occupancy()
        _, used = await store.live_bytes(every_node=True)
        stored = await store.bytes_by_tenant()
        # The file's users only (and each of them): the label set stays what the file names.
        user_bytes = {user: stored.get(user, 0) for user in request.app[DIRECTORY].names()}
    disk = await asyncio.to_thread(shutil.disk_usage, settings.media_dir)
    # A listing of a few files: cheap enough to read on every scrape, so it is never stale.
    last_backup = None if settings.database_url else newest_backup_time(settings) or 0.0
    running = request.app[MANAGER].running_count
    views = request.app[VIEWS].stats()
    metrics = request.app[METRICS]
    return metrics.render(settings, counts, occupancy, running, used, disk.free, last_backup, user_bytes, views)


@routes.get("/api/storage/info")
@describe("Disk use of the media folder (admins)", {200: Reply("Figures.", StorageInfo), 403: ADMIN_ONLY})
async def storage_info(request: web.Request) -> web.Response:
    require_admin(request)
    settings, store = request.app[SETTINGS], request.app[STORE]
    count, used = await store.live_bytes()
    cluster_count, cluster_used = await store.live_bytes(every_node=True)
    disk = await asyncio.to_thread(shutil.disk_usage, settings.media_dir)
    info = StorageInfo(
        settings.node_name,
        count,
        used,
        settings.max_storage_bytes,
        disk.free,
        disk.total,
        settings.min_free_bytes,
        settings.retention_hours,
        cluster_count,
        cluster_used,
    )
    return json_response(info)


@routes.post("/api/storage/cleanup")
@describe("Run retention now (admins)", {200: Reply("What was deleted.", Cleanup), 403: ADMIN_ONLY})
async def storage_cleanup(request: web.Request) -> web.Response:
    require_admin(request)
    summary = await request.app[RETENTION].run()
    audit.info("user %s ran the storage cleanup: %d files deleted", tenant_of(request).name, summary["files_deleted"])
    return json_response(msgspec.convert(summary, Cleanup))
