"""Middlewares: JSON errors, bearer tokens, request metrics, CORS. Each is installed only when
configured (app/api/application.py): every request would pay for it, and unconfigured it does nothing."""

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from app.api.contract import Error, ErrorBody, encode
from app.api.keys import DIRECTORY, METRICS, SETTINGS, TENANT
from app.store.base import StoreUnavailableError

PUBLIC_API_PATHS = frozenset({"/api/health"})
CORS_ALLOW_METHODS = "GET, POST, DELETE"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Content-Disposition"
CORS_MAX_AGE_S = 600
DATABASE_RETRY_AFTER_S = 5
log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode(Error(ErrorBody(code, message))), status=status, headers=headers, content_type="application/json"
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except StoreUnavailableError:
        # Said once in the log by the store, not once per request.
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        return error_response(503, "database_unavailable", "the task database is not reachable; try again", headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = re.sub(r"\W+", "_", exc.reason.lower()).strip("_")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.path not in PUBLIC_API_PATHS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        tenant = request.app[DIRECTORY].authenticate(given.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid token is required: Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="video-download-api"'},
            )
        request[TENANT] = tenant
    return await handler(request)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        request.app[METRICS].observe_request(request, status, time.perf_counter() - started)


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
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Tokens travel in the Authorization header, not in cookies, so Allow-Credentials is never
    # sent: "*" can never be combined with credentials.
    allowed = _allowed_origin(request)
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if preflight and allowed:
        response = web.Response(status=204)
        response.headers.update(
            {
                "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
            }
        )
        return response
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not the middleware: streamed responses (events, files) send their headers early.
    allowed = _allowed_origin(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = allowed
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    if allowed != "*":
        response.headers.add("Vary", "Origin")


def served_by(node: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """A signal, not a middleware: streamed responses (events, files) send their headers early. The
    name is read once: without VIDEO_API_NODE_ID it is the host name, a system call each time."""

    async def add_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Served-By"] = node

    return add_header
