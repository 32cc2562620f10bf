"""The application factory: settings in, an aiohttp application with its store, manager,
retention, events and callbacks out (started and stopped by its cleanup context)."""

import asyncio

import aiohttp
from aiohttp import web

from app import cluster, middlewares, ratelimit, ui
from app.appkeys import (
    CALLBACKS,
    EVENTS,
    MANAGER,
    METRICS,
    PEERS,
    RATE_LIMITER,
    RETENTION,
    SETTINGS,
    STORE,
    TOKEN_DIGESTS,
)
from app.callbacks import Callbacks
from app.config import Settings
from app.events import EventHub, PublishingStore
from app.handlers import routes
from app.manager import Manager
from app.metrics import Metrics
from app.retention import Retention
from app.store import SQLiteTaskStore, TaskStore
from app.views import task_view

MAX_BODY_BYTES = 64 * 1024


async def make_store(settings: Settings) -> TaskStore:
    """The task store the settings ask for: PostgreSQL shared by several hosts, or SQLite."""
    if settings.shared_store:
        # Imported only here: a single host never loads the PostgreSQL driver.
        from app.store_pg import PostgresTaskStore

        return await PostgresTaskStore.connect(settings.database_url)
    return SQLiteTaskStore(settings.db_path)


async def _services(application: web.Application):
    settings = application[SETTINGS]
    store = PublishingStore(await make_store(settings), application[EVENTS], settings.node_name)
    retention = Retention(settings, store, settings.node_name if store.shared else None)
    manager = Manager(settings, store, application[METRICS], retention)
    callbacks = Callbacks(settings, task_view)
    application[STORE] = store
    application[MANAGER] = manager
    application[RETENTION] = retention
    application[CALLBACKS] = callbacks
    application[EVENTS].listeners.append(callbacks.on_task)
    background = [asyncio.create_task(retention.run_periodically())]
    if store.shared:
        # Large reads: a file streamed from another host passes through in 1 MiB pieces.
        application[PEERS] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=60), read_bufsize=1 << 20, auto_decompress=False
        )
        background.append(asyncio.create_task(store.follow_other_hosts()))
    await manager.start()
    yield
    for task in background:
        task.cancel()
    await manager.shutdown()
    await callbacks.close()
    if store.shared:
        await application[PEERS].close()
    await store.close()


async def _end_event_streams(application: web.Application) -> None:
    application[EVENTS].close()


def create_app(settings: Settings) -> web.Application:
    # CORS and token checks are left out of the chain when not configured: every request would
    # pay for them, and without settings they do nothing.
    chain = [middlewares.count_requests]
    if settings.cors_origins:
        chain.append(middlewares.cors)
    chain.append(middlewares.json_errors)
    if settings.tokens:
        chain.append(middlewares.require_token)
    application = web.Application(middlewares=chain, client_max_size=MAX_BODY_BYTES)
    application[SETTINGS] = settings
    application[METRICS] = Metrics()
    application[EVENTS] = EventHub()
    if settings.cors_origins:
        application.on_response_prepare.append(middlewares.cors_headers)
    application.on_shutdown.append(_end_event_streams)
    application.on_response_prepare.append(cluster.served_by)
    if settings.rate_per_minute > 0:
        application[RATE_LIMITER] = ratelimit.RateLimiter(settings.rate_per_minute, settings.rate_burst)
    application[TOKEN_DIGESTS] = tuple(middlewares.token_digest(token.encode()) for token in settings.tokens)
    application.add_routes(routes)
    ui.setup(application)
    application.cleanup_ctx.append(_services)
    return application
