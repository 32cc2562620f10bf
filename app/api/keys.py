"""The application's shared objects, one typed key each (aiohttp's AppKey)."""

from typing import TYPE_CHECKING

from aiohttp import web

from app.api.ratelimit import RateLimiter
from app.api.view_cache import ViewCache
from app.metrics import Metrics
from app.settings import Settings
from app.store.base import TaskStore
from app.tasks.callbacks import Callbacks
from app.tasks.events import EventHub
from app.tasks.manager import Manager
from app.tasks.retention import Retention
from app.tenants.directory import Directory
from app.tenants.tenants_file import Tenant

if TYPE_CHECKING:  # a single host never imports the cluster (nor the PostgreSQL driver)
    from app.cluster.cluster import Cluster

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
MANAGER = web.AppKey("manager", Manager)
RETENTION = web.AppKey("retention", Retention)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", EventHub)
CALLBACKS = web.AppKey("callbacks", Callbacks)
DIRECTORY = web.AppKey("directory", Directory)
VIEWS = web.AppKey("views", ViewCache)
# Who sent the request: set by the token check (app/api/middlewares.py); the admin without tokens.
TENANT = web.RequestKey("tenant", Tenant)
# Several hosts only: absent on a single host.
CLUSTER: web.AppKey["Cluster"] = web.AppKey("cluster")
