"""Any host answers a download: a file another host holds is streamed through this one from the
owner's signed /internal/files/{file_id}, Range and all; the client never needs to know which
host it reached."""

import logging
import ssl
from collections.abc import Callable

import aiohttp
from aiohttp import web

from app.cluster.signing import signed_headers
from app.store.records import FileRecord

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
log = logging.getLogger(__name__)


class FileHostUnavailableError(Exception):
    """The host holding a file is not alive or did not answer; the message names it."""


class FileProxy:
    def __init__(self, secret: str, node: str, clock: Callable[[], float], tls: ssl.SSLContext) -> None:
        self._secret = secret
        self._node = node
        self._clock = clock  # the time signatures are stamped with
        # Large reads: a file streamed from another host passes through in 1 MiB pieces. An https://
        # owner's certificate is verified with tls (the fleet's CA).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls),
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=60),
            read_bufsize=1 << 20,
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def stream(self, request: web.Request, file: FileRecord, owner_url: str) -> web.StreamResponse:
        """Stream the file from its owner at owner_url to this client, passing Range through."""
        path = f"/internal/files/{file['id']}"
        headers = signed_headers(self._secret, self._node, "GET", path, self._clock())
        headers.update({name: request.headers[name] for name in ("Range", "If-Range") if name in request.headers})
        response = web.StreamResponse()
        try:
            async with self._session.get(owner_url + path, headers=headers) as answer:
                response.set_status(answer.status)
                response.headers.update({name: answer.headers[name] for name in PASSED_ON if name in answer.headers})
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
                    await response.write(chunk)
        except aiohttp.ClientError as exc:
            log.warning("file %s from host %s failed: %s", file["id"], file["node"], type(exc).__name__)
            if not response.prepared:
                raise FileHostUnavailableError(f"the host holding this file ({file['node']}) did not answer") from None
            return response  # cut short: the client sees fewer bytes than announced and can resume
        await response.write_eof()
        return response
