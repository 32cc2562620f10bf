"""The application factory: settings in, an aiohttp application with its store, manager,
retention, events, callbacks and (several hosts) cluster out, started and stopped by its
cleanup context."""

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from app.api import middlewares, ratelimit, webpage
from app.api.contract import MAX_READ_BYTES, encode
from app.api.keys import (
    CALLBACKS,
    CLUSTER,
    DIRECTORY,
    EVENTS,
    MANAGER,
    METRICS,
    RATE_LIMITER,
    RETENTION,
    SETTINGS,
    STORE,
    VIEWS,
)
from app.api.routes import add_routes
from app.api.serializers import task_view
from app.api.view_cache import ViewCache
from app.metrics import Metrics
from app.settings import Settings
from app.store.base import TaskStore
from app.store.sqlite import SQLiteTaskStore
from app.tasks.callbacks import Callbacks
from app.tasks.events import EventHub
from app.tasks.manager import Manager
from app.tasks.retention import Retention
from app.tenants.directory import Directory

if TYPE_CHECKING:
    from app.cluster.cluster import Cluster


async def open_store(settings: Settings) -> tuple[TaskStore, "Cluster | None"]:
    """The task store the settings ask for: SQLite on a single host; or PostgreSQL shared by
    several hosts, which then form a cluster."""
    if not settings.database_url:
        return SQLiteTaskStore(settings.db_path), None
    # Imported only here: a single host never loads the PostgreSQL driver.
    from app.cluster.cluster import Cluster
    from app.store.postgres import PostgresTaskStore

    store = await PostgresTaskStore.connect(settings.database_url, settings.node_name, settings.lease_s)
    return store, Cluster(settings, store)


async def _services(application: web.Application) -> AsyncIterator[None]:
    settings, hub = application[SETTINGS], application[EVENTS]
    store, cluster = await open_store(settings)
    # Off on several hosts until the cluster hears other hosts' changes (Cluster.start).
    views = ViewCache(settings.view_cache_mb << 20, enabled=cluster is None)
    store.observe(views.forget_tasks)
    store.observe(hub.publish_changes)
    retention = Retention(settings, store, application[DIRECTORY].storage_limits)
    manager = Manager(
        settings, store, application[METRICS], retention, None if cluster is None else cluster.claim_poll_s
    )
    callbacks = Callbacks(settings, lambda task: encode(task_view(task)))
    application[STORE] = store
    application[VIEWS] = views
    application[MANAGER] = manager
    application[RETENTION] = retention
    application[CALLBACKS] = callbacks
    hub.listeners.append(callbacks.on_task)
    if cluster is not None:
        application[CLUSTER] = cluster
        await cluster.start(manager, hub, views)
    background = [asyncio.create_task(retention.run_periodically())]
    if application[DIRECTORY].path is not None:
        background.append(asyncio.create_task(application[DIRECTORY].watch()))
    await manager.start()
    yield
    for task in background:
        task.cancel()
    if cluster is not None:
        await cluster.stop()
    await manager.shutdown()
    await callbacks.close()
    if cluster is not None:
        await cluster.close()
    await store.close()


async def _end_event_streams(application: web.Application) -> None:
    application[EVENTS].close()


def create_app(settings: Settings) -> web.Application:
    """Raises TenantsFileError when the tenants file cannot be used."""
    directory = Directory(settings)
    # CORS and token checks are left out of the chain when not configured: every request would
    # pay for them, and without settings they do nothing.
    chain = [middlewares.count_requests]
    if settings.cors_origins:
        chain.append(middlewares.cors)
    chain.append(middlewares.json_errors)
    if directory.required:
        chain.append(middlewares.require_token)
    application = web.Application(middlewares=chain, client_max_size=MAX_READ_BYTES)
    application[SETTINGS] = settings
    application[METRICS] = Metrics()
    application[EVENTS] = EventHub()
    if settings.cors_origins:
        application.on_response_prepare.append(middlewares.cors_headers)
    application.on_shutdown.append(_end_event_streams)
    application.on_response_prepare.append(middlewares.served_by(settings.node_name))
    if settings.rate_per_minute > 0:
        application[RATE_LIMITER] = ratelimit.RateLimiter(settings.rate_per_minute, settings.rate_burst)
    application[DIRECTORY] = directory
    add_routes(application)
    webpage.setup(application)
    application.cleanup_ctx.append(_services)
    return application
