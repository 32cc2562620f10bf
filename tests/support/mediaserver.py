"""A local media server for tests and benchmarks: ffmpeg-generated files on 127.0.0.1 only."""

import asyncio
import collections
import html
import json
import secrets
import socket
import struct
import subprocess
import threading
from pathlib import Path

from aiohttp import web

# Every address a test may be sent to is loopback; 127.0.0.2 is the "blocked" target and nothing
# listens there, so even a broken guard could not fetch anything from it.
BLOCKED_HOST = "127.0.0.2"
# The <title> of /page-hostile.html: a page must show it as text, never parse it as HTML.
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
# The <title> of /playlist/<n>.html, the playlist's title.
PLAYLIST_TITLE = "Local Test Playlist"
# The subtitle tracks of /media/page-subtitles.html: language -> the words of its cues.
SUBTITLES = {"de": ("Hallo", "Welt"), "en": ("Hello", "World")}
# /page-chapters.html describes its video in JSON-LD (as many sites do), chapters included.
CHAPTERS = (("Opening", 0, 2), ("Ending", 2, 4))
METADATA = {"title": "Chaptered Test Video", "uploader": "Test Uploader", "description": "A clip with chapters"}
# /cookie/<name> serves a file only to a client sending this cookie.
COOKIE_NAME = "video_session"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def generate_media(folder: Path, seconds: int = 4) -> Path:
    """Write the test media into folder (once; reused when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / ".complete-2"  # the number grows with the set of files
    if done.exists():
        return folder
    video = ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}"]
    audio = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    _ffmpeg(
        *video,
        *audio,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-movflags",
        "+faststart",
        "-shortest",
        str(folder / "sample.mp4"),
    )
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=15:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:sample_rate=48000:duration=3",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "200k",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-shortest",
        str(folder / "sample.webm"),
    )
    # Noise does not compress: a bigger file for throttled downloads (progress, cancel, resume).
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "nullsrc=size=320x240:rate=25:duration=6,geq=random(1)*255:128:128",
        *audio,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        "2M",
        "-c:a",
        "aac",
        "-shortest",
        "-movflags",
        "+faststart",
        str(folder / "noise.mp4"),
    )
    # Long audio, tiny picture: extracting its audio keeps FFmpeg busy for a while (cancel in processing).
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=32x32:r=1:d=600",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=600",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-shortest",
        str(folder / "long.mp4"),
    )
    hls = folder / "hls"
    hls.mkdir(exist_ok=True)
    _ffmpeg(
        "-i",
        str(folder / "sample.mp4"),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        str(hls / "seg%03d.ts"),
        str(hls / "index.m3u8"),
    )
    # 1.3 MB in one-second segments (split between key frames): a stream whose size is unknown upfront.
    hls_noise = folder / "hls-noise"
    hls_noise.mkdir(exist_ok=True)
    _ffmpeg(
        "-i",
        str(folder / "noise.mp4"),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_flags",
        "split_by_time",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        str(hls_noise / "seg%03d.ts"),
        str(hls_noise / "index.m3u8"),
    )
    (folder / "page.html").write_text(
        "<!DOCTYPE html><html><head><title>Embedded Test Video</title></head><body>"
        '<h1>Embedded</h1><video controls src="/media/sample.mp4" type="video/mp4"></video></body></html>'
    )
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=1:duration=1", "-frames:v", "1", str(folder / "poster.jpg"))
    for language, words in SUBTITLES.items():
        cues = "".join(f"00:0{2 * i}.000 --> 00:0{2 * i + 2}.000\n{word}\n\n" for i, word in enumerate(words))
        (folder / f"{language}.vtt").write_text(f"WEBVTT\n\n{cues}")
    tracks = "".join(
        f'<track kind="subtitles" src="/media/{language}.vtt" srclang="{language}" label="{language}">'
        for language in SUBTITLES
    )
    (folder / "page-subtitles.html").write_text(
        "<!DOCTYPE html><html><head><title>Subtitled Test Video</title></head><body>"
        f'<video controls poster="/media/poster.jpg"><source src="/media/sample.mp4" type="video/mp4">{tracks}'
        "</video></body></html>"
    )
    done.touch()
    return folder


class MediaServer:
    """Serves a media folder on 127.0.0.1 from a background thread.

    /media/<name>                 static files (Range supported)
    /slow/<name>?rate=<bytes/s>   the same, throttled, with Range (resume) support
    /redirect-blocked             302 to the same file on 127.0.0.2 (a blocked address)
    /page-blocked.html            a page embedding a <video> on 127.0.0.2
    /page-hostile.html            a page embedding sample.mp4, titled HOSTILE_TITLE
    /hls-blocked.m3u8             the HLS playlist with its segments on 127.0.0.2
    /chunked/<name>               the file in chunked transfer encoding, without Content-Length
    /flaky/<key>/<name>?fails=2&mode=503|reset
                                  the first `fails` requests of each key fail (HTTP 503, or a TCP
                                  reset), later ones serve the file
    /truncated/<key>/<name>?times=7
                                  the first `times` requests of each key announce the whole (rest
                                  of the) file but close the connection after 64 KiB of it
    /redirect?to=<url>            302 to url
    /page-chapters.html           JSON-LD of sample.mp4: METADATA, CHAPTERS, poster.jpg as thumbnail
    /cookie/<name>                the file with the cookie COOKIE_NAME=cookie_value, else 403
    /hook                         a callback receiver: POSTed bodies kept in hook_bodies
    /media/page-subtitles.html    sample.mp4 with SUBTITLES as <track>s and poster.jpg as poster
    /playlist/<n>.html?src=<path>&delay=<s>
                                  a playlist: a page of n <video>s, item k at <path>?item=k (default
                                  /media/sample.mp4), answered after delay seconds (default 0)
    /feed/<n>.xml                 an RSS feed (a podcast, a channel) of n items with sample.mp4?item=k enclosures
    """

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0):
        # Another host only inside a test container (test_container.py); every other test stays on loopback.
        self.folder, self.host, self.port = folder, host, port
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.flaky_hits: collections.Counter = collections.Counter()
        self.hook_bodies: list[bytes] = []  # what callbacks POSTed to /hook
        self.cookie_value = secrets.token_hex(16)  # unique per run: found in a log, it can only have come from here
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> "MediaServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        application = web.Application(middlewares=[self._record])
        application.router.add_get("/redirect-blocked", self._redirect_blocked)
        application.router.add_get("/page-blocked.html", self._page_blocked)
        application.router.add_get("/page-hostile.html", self._page_hostile)
        application.router.add_get("/hls-blocked.m3u8", self._hls_blocked)
        application.router.add_get("/slow/{name:.+}", self._slow)
        application.router.add_get("/flaky/{key}/{name:.+}", self._flaky)
        application.router.add_get("/chunked/{name:.+}", self._chunked)
        application.router.add_get("/truncated/{key}/{name:.+}", self._truncated)
        application.router.add_get("/redirect", self._redirect)
        application.router.add_get("/page-chapters.html", self._page_chapters)
        application.router.add_get("/cookie/{name:.+}", self._cookie_only)
        application.router.add_get("/playlist/{count:[0-9]+}.html", self._playlist)
        application.router.add_get("/feed/{count:[0-9]+}.xml", self._feed)
        application.router.add_post("/hook", self._hook)
        application.router.add_static("/media", self.folder)
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @web.middleware
    async def _record(self, request, handler):
        self.requests.append((request.path, request.headers.get("Range")))
        return await handler(request)

    async def _redirect_blocked(self, request):
        raise web.HTTPFound(f"http://{BLOCKED_HOST}:{self.port}/media/sample.mp4")

    async def _page_blocked(self, request):
        body = (
            f"<html><head><title>Blocked embed</title></head><body><video controls "
            f'src="http://{BLOCKED_HOST}:{self.port}/media/sample.mp4"></video></body></html>'
        )
        return web.Response(text=body, content_type="text/html")

    async def _page_hostile(self, request):
        # Escaped in the page, so the title yt-dlp extracts is the markup itself.
        body = (
            f"<html><head><title>{html.escape(HOSTILE_TITLE)}</title></head><body>"
            '<video src="/media/sample.mp4"></video></body></html>'
        )
        return web.Response(text=body, content_type="text/html")

    async def _page_chapters(self, request):
        base = f"http://{self.host}:{self.port}/media"
        described = {
            "@context": "https://schema.org",
            "@type": "VideoObject",
            "name": METADATA["title"],
            "description": METADATA["description"],
            "author": {"@type": "Person", "name": METADATA["uploader"]},
            "uploadDate": "2026-01-02",
            "duration": "PT4S",
            "thumbnailUrl": f"{base}/poster.jpg",
            "contentUrl": f"{base}/sample.mp4",
            "hasPart": [
                {"@type": "Clip", "name": name, "startOffset": start, "endOffset": end} for name, start, end in CHAPTERS
            ],
        }
        body = (
            "<html><head><title>Chapters</title>"
            f'<script type="application/ld+json">{json.dumps(described)}</script></head><body><p>clip</p></body></html>'
        )
        return web.Response(text=body, content_type="text/html")

    async def _playlist(self, request):
        await asyncio.sleep(float(request.query.get("delay", "0")))
        source = request.query.get("src", "/media/sample.mp4")
        videos = "".join(
            f'<video controls src="{source}?item={item}"></video>'
            for item in range(1, int(request.match_info["count"]) + 1)
        )
        body = f"<!DOCTYPE html><html><head><title>{PLAYLIST_TITLE}</title></head><body>{videos}</body></html>"
        return web.Response(text=body, content_type="text/html")

    async def _feed(self, request):
        base = f"http://{request.host}"
        items = "".join(
            f"<item><title>Episode {item}</title><link>{base}/episode/{item}</link>"
            f'<enclosure url="{base}/media/sample.mp4?item={item}" type="video/mp4" length="1"/></item>'
            for item in range(1, int(request.match_info["count"]) + 1)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>{PLAYLIST_TITLE} feed</title><link>{base}/</link><description>feed</description>{items}"
            "</channel></rss>"
        )
        return web.Response(text=body, content_type="application/rss+xml")

    async def _hook(self, request):
        self.hook_bodies.append(await request.read())
        return web.Response(text="ok")

    async def _cookie_only(self, request):
        if request.cookies.get(COOKIE_NAME) != self.cookie_value:
            raise web.HTTPForbidden(text="sign in first")
        return web.FileResponse(self._file(request))

    async def _hls_blocked(self, request):
        playlist = (self.folder / "hls" / "index.m3u8").read_text()
        base = f"http://{BLOCKED_HOST}:{self.port}/media/hls/"
        lines = [base + line if line.endswith(".ts") else line for line in playlist.splitlines()]
        return web.Response(text="\n".join(lines) + "\n", content_type="application/vnd.apple.mpegurl")

    async def _flaky(self, request):
        key = request.match_info["key"]
        self.flaky_hits[key] += 1
        if self.flaky_hits[key] > int(request.query.get("fails", "2")):
            return web.FileResponse(self._file(request))
        if request.query.get("mode") == "reset":
            # SO_LINGER 0: close() sends a RST, what the client sees as "connection reset by peer".
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abort()
            raise web.HTTPServiceUnavailable()  # never reaches the closed connection
        raise web.HTTPServiceUnavailable(text="try again later")

    async def _redirect(self, request):
        raise web.HTTPFound(request.query["to"])

    async def _truncated(self, request):
        path = self._file(request)
        key = request.match_info["key"]
        self.flaky_hits[key] += 1
        if self.flaky_hits[key] > int(request.query.get("times", "7")):
            return web.FileResponse(path)
        start, response = await self._partial_response(request, path)
        with path.open("rb") as file:
            file.seek(start)
            await response.write(file.read(64 * 1024))
        request.transport.close()
        return response

    def _file(self, request) -> Path:
        path = (self.folder / request.match_info["name"]).resolve()
        if not path.is_relative_to(self.folder.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        return path

    async def _partial_response(self, request, path: Path) -> tuple[int, web.StreamResponse]:
        """A prepared 200, or 206 from the Range's start, announcing the rest of the file."""
        start, size = self._range_start(request, path), path.stat().st_size
        response = web.StreamResponse(status=206 if start else 200)
        response.content_type = "video/mp4"
        response.content_length = size - start
        response.headers["Accept-Ranges"] = "bytes"
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        await response.prepare(request)
        return start, response

    @staticmethod
    def _range_start(request, path: Path) -> int:
        start = 0
        range_header = request.headers.get("Range", "")
        if range_header.startswith("bytes="):
            start = int(range_header[6:].split("-", 1)[0] or 0)
        if start >= path.stat().st_size:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{path.stat().st_size}"})
        return start

    async def _chunked(self, request):
        path = self._file(request)
        response = web.StreamResponse()
        response.content_type = "video/mp4"
        response.enable_chunked_encoding()
        await response.prepare(request)
        with path.open("rb") as file:
            try:
                while data := file.read(64 * 1024):
                    await response.write(data)
            except ConnectionResetError:  # the client gave up at the size limit
                pass
        return response

    async def _slow(self, request):
        path = self._file(request)
        rate = int(request.query.get("rate", "200000"))
        start, response = await self._partial_response(request, path)
        if request.method == "HEAD":
            return response
        chunk = max(1024, rate // 20)
        with path.open("rb") as file:
            file.seek(start)
            try:
                while data := file.read(chunk):
                    await response.write(data)
                    await asyncio.sleep(len(data) / rate)
            except ConnectionResetError:  # the client stopped reading (probe, cancel, restart)
                pass
        return response
