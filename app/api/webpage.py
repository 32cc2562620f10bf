"""The web page for people: /ui/ serves the files of app/static; browsers asking for / are sent there.

Security headers are set here, on the page's own responses only, so the API's routes pay nothing
for them. Files are read once and served from memory with a content-hash ETag and `no-cache`:
every load revalidates, and an unchanged file costs a 304 without a body.
"""

import functools
import hashlib
from pathlib import Path

from aiohttp import web

PAGE_PATH = "/ui/"
STATIC_DIR = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    # No inline script or style anywhere: the page's code and styles are its own files.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Fixed here rather than from mimetypes, whose answers depend on the host's /etc/mime.types.
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@functools.cache
def files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, ETag value) of every file in app/static; only these names are served."""
    served = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            body = path.read_bytes()
            kind = TYPES.get(path.suffix, "application/octet-stream")
            served[path.name] = (body, kind, hashlib.sha256(body).hexdigest()[:20])
    return served


def _accept_q(accept: str, media_type: str) -> float:
    """The quality the Accept header gives media_type (exact, type/*, or */*: the most specific wins)."""
    kind = media_type.split("/")[0]
    best = (-1, 0.0)  # (specificity, q)
    for part in accept.split(","):
        name, *params = (piece.strip() for piece in part.split(";"))
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(name.lower())
        if specificity is None or specificity < best[0]:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = (specificity, q)
    return best[1]


def wants_page(request: web.Request) -> bool:
    """A browser: text/html named explicitly and preferred to JSON (curl's */* and API clients get JSON)."""
    accept = request.headers.get("Accept", "")
    if "text/html" not in accept.lower():
        return False
    return _accept_q(accept, "text/html") > _accept_q(accept, "application/json")


def redirect_to_page() -> web.Response:
    return web.Response(status=303, headers={"Location": PAGE_PATH, "Vary": "Accept"})


async def _serve(request: web.Request, name: str) -> web.Response:
    found = files().get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, kind, etag = found
    headers = {**SECURITY_HEADERS, "ETag": f'"{etag}"'}
    if any(tag.value in (etag, "*") for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=body, content_type=kind, charset="utf-8" if kind.startswith("text/") else None, headers=headers
    )


async def page(request: web.Request) -> web.Response:
    return await _serve(request, "index.html")


async def asset(request: web.Request) -> web.Response:
    return await _serve(request, request.match_info["name"])


async def to_page(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(PAGE_PATH)


def setup(application: web.Application) -> None:
    application.router.add_get("/ui", to_page)
    application.router.add_get(PAGE_PATH, page)
    application.router.add_get(PAGE_PATH + "{name}", asset)
