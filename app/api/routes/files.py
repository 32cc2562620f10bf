"""Routes of files: a download (from this host's disk, or through the host that holds it) and
the internal endpoint other hosts fetch files from."""

import re
import urllib.parse

from aiohttp import web

from app.api.keys import CLUSTER, SETTINGS
from app.api.middlewares import ApiError
from app.api.openapi import Reply, describe
from app.api.routes.common import RETRY_AFTER, live_file_of
from app.cluster.file_proxy import FileHostUnavailableError
from app.store.records import FileRecord
from app.tasks import media

FILE_HOST_RETRY_AFTER_S = 30
_BYTE_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)
routes = web.RouteTableDef()


def _content_disposition(name: str) -> str:
    fallback = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


@routes.get("/api/download/{file_id}")
@describe(
    "A file the service produced (Range supported)",
    {
        200: Reply("The file.", content_type="*/*"),
        206: Reply("The requested range.", content_type="*/*"),
        404: Reply("No such file (or another user's)."),
        410: Reply("Removed by retention or with its task."),
        416: Reply(
            "Range not satisfiable: it starts past the end, or asks for the last 0 bytes. A Range that does not"
            " parse is ignored (200).",
            headers={"Content-Range": "bytes */<size>"},
        ),
        503: Reply("Several hosts: the host holding the file does not answer.", headers=RETRY_AFTER),
    },
)
async def download(request: web.Request) -> web.StreamResponse:
    file = await live_file_of(request)
    cluster = request.app.get(CLUSTER)
    if cluster is None or cluster.holds_here(file):
        return await _serve_file(request, file)
    try:
        return await cluster.stream_file(request, file)
    except FileHostUnavailableError as exc:
        raise ApiError(503, "file_host_unavailable", str(exc), {"Retry-After": str(FILE_HOST_RETRY_AFTER_S)}) from None


@routes.get("/internal/files/{file_id}")
async def internal_file(request: web.Request) -> web.StreamResponse:
    """A file of this host, for another host answering a download (not in the API document)."""
    cluster = request.app.get(CLUSTER)
    if cluster is None or not cluster.is_signed(request):
        raise ApiError(403, "forbidden", "internal endpoint: a current cluster signature, used once, is required")
    return await _serve_file(request, await live_file_of(request))


async def _serve_file(request: web.Request, file: FileRecord) -> web.StreamResponse:
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
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the range asked for is outside the file of {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    return True
