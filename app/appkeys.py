"""The application's shared objects, one typed key each (aiohttp's AppKey)."""

import aiohttp
from aiohttp import web

from app.callbacks import Callbacks
from app.config import Settings
from app.events import EventHub
from app.manager import Manager
from app.metrics import Metrics
from app.ratelimit import RateLimiter
from app.retention import Retention
from app.store import TaskStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", TaskStore)
MANAGER = web.AppKey("manager", Manager)
RETENTION = web.AppKey("retention", Retention)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
METRICS = web.AppKey("metrics", Metrics)
EVENTS = web.AppKey("events", EventHub)
CALLBACKS = web.AppKey("callbacks", Callbacks)
TOKEN_DIGESTS = web.AppKey("token_digests", tuple)
# Several hosts: the HTTP client for requests to the other hosts (app/cluster.py).
PEERS = web.AppKey("peers", aiohttp.ClientSession)
