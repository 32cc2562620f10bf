"""Several hosts, one API: host-to-host requests signed with the cluster secret (checked by the
internal file endpoint in app/handlers.py), and the proxy that lets any host answer a download.

A file lives on the host whose worker made it (files.node). A download asked of another host is
streamed through it from the owner's /internal/files/{file_id}, Range and all; the client never
needs to know which host it reached.
"""

import hashlib
import hmac
import logging
import time

import aiohttp
from aiohttp import web

from app.appkeys import PEERS, SETTINGS, STORE
from app.middlewares import ApiError
from app.numbers import ascii_int

NODE_HEADER = "X-Video-Api-Node"
TIMESTAMP_HEADER = "X-Video-Api-Timestamp"
SIGNATURE_HEADER = "X-Video-Api-Signature"
MAX_CLOCK_SKEW_S = 30
CHUNK_BYTES = 1024 * 1024
# Headers of the owner's answer that the client gets as they are.
PASSED_ON = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Content-Disposition",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)
log = logging.getLogger("app.cluster")


def signature(secret: str, timestamp: str, method: str, path: str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}\n{method}\n{path}".encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str, node: str, method: str, path: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, method, path),
    }


def check_signature(request: web.Request) -> None:
    """403 unless the request is signed with the cluster secret within MAX_CLOCK_SKEW_S."""
    secret = request.app[SETTINGS].cluster_secret
    stamp = request.headers.get(TIMESTAMP_HEADER, "")
    given = request.headers.get(SIGNATURE_HEADER, "")
    seconds = ascii_int(stamp)
    fresh = seconds is not None and abs(time.time() - seconds) <= MAX_CLOCK_SKEW_S
    expected = signature(secret, stamp, request.method, request.path) if secret else ""
    if not (secret and fresh and hmac.compare_digest(given.encode(), expected.encode())):
        raise ApiError(403, "forbidden", "internal endpoint: a valid, current cluster signature is required")


async def proxy_file(request: web.Request, file: dict) -> web.StreamResponse:
    """Stream a file another host holds to this client, passing Range through."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    nodes = {node["node"]: node for node in await store.nodes_alive(time.time() - settings.lease_s)}
    owner = nodes.get(file["node"])
    if owner is None:
        raise ApiError(
            503,
            "file_host_unavailable",
            f"the host holding this file ({file['node']}) is not reachable",
            {"Retry-After": "30"},
        )
    path = f"/internal/files/{file['id']}"
    headers = signed_headers(settings.cluster_secret, settings.node_name, "GET", path)
    headers.update({name: request.headers[name] for name in ("Range", "If-Range") if name in request.headers})
    response = web.StreamResponse()
    try:
        async with request.app[PEERS].get(owner["url"] + path, headers=headers) as answer:
            response.set_status(answer.status)
            response.headers.update({name: answer.headers[name] for name in PASSED_ON if name in answer.headers})
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
    except aiohttp.ClientError as exc:
        log.warning("file %s from host %s failed: %s", file["id"], file["node"], type(exc).__name__)
        if not response.prepared:
            raise ApiError(
                503,
                "file_host_unavailable",
                f"the host holding this file ({file['node']}) did not answer",
                {"Retry-After": "30"},
            ) from None
        return response  # cut short: the client sees fewer bytes than announced and can resume
    await response.write_eof()
    return response


async def served_by(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not a middleware: streamed responses (events, files) send their headers early.
    response.headers["X-Served-By"] = request.app[SETTINGS].node_name
