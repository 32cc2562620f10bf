"""The download itself, run inside a worker process: yt-dlp's Python API, then FFmpeg.

The fork server preloads this module, so each worker starts with yt-dlp already imported.
Never import it in the service's main process.
"""

import gc
import logging
import re
import time
import urllib.error
from pathlib import Path

import yt_dlp
import yt_dlp.downloader.external
import yt_dlp.downloader.hls
import yt_dlp.downloader.http
import yt_dlp.extractor
import yt_dlp.extractor.generic
import yt_dlp.networking._urllib
import yt_dlp.postprocessor
import yt_dlp.postprocessor.ffmpeg
from yt_dlp.networking.exceptions import CertificateVerifyError, HTTPError, TransportError
from yt_dlp.utils import DownloadError

from app import guard, media

PROGRESS_INTERVAL_S = 0.25
# Answers that say "try again later"; every other HTTP error status is final.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_DELAY_S = 60.0
_RETRIES_EXHAUSTED = re.compile(r"Giving up after \d+ (?:fragment )?retries")
log = logging.getLogger("app.worker")


class TaskError(Exception):
    """The task failed for a reason worth showing to the client as it is."""


class FileTooLargeError(TaskError):
    def __init__(self, max_filesize: int):
        limit_mb = max_filesize // (1024 * 1024)
        super().__init__(f"file is larger than the limit of {limit_mb} MB (VIDEO_API_MAX_FILESIZE_MB)")


def _refuse_ffmpeg_download(self, *args, **kwargs):
    # The socket guard cannot see FFmpeg's connections, so FFmpeg never downloads.
    raise TaskError("this media needs FFmpeg to fetch it from the network, which the service does not allow")


yt_dlp.downloader.external.FFmpegFD._call_downloader = _refuse_ffmpeg_download
_follow_redirect = yt_dlp.networking._urllib.RedirectHandler.redirect_request


def _refuse_other_schemes(self, req, fp, code, msg, headers, newurl):
    # urllib follows redirects to ftp:// too, and the socket guard checks addresses, not schemes.
    try:
        guard.check_url_syntax(newurl)
    except guard.BlockedAddressError as exc:
        guard.refused.append(f"redirect refused: {exc}")
        raise urllib.error.URLError(exc) from None
    return _follow_redirect(self, req, fp, code, msg, headers, newurl)


yt_dlp.networking._urllib.RedirectHandler.redirect_request = _refuse_other_schemes


def _warm_up() -> None:
    """Do once in the fork server what every task would otherwise repeat: yt-dlp matches a URL
    against ~1,900 extractor patterns, compiling each on first use (about 0.3 s of CPU)."""
    for extractor in yt_dlp.extractor.gen_extractor_classes():
        extractor.suitable("http://127.0.0.1/warm-up")
    yt_dlp.YoutubeDL({"quiet": True, "cachedir": False}).close()


_warm_up()
# Everything imported so far lives as long as the fork server: kept out of the collector, its pages
# are not written by any worker's garbage collection, so they stay shared instead of copied per worker.
gc.freeze()


class _Logger:
    """yt-dlp's messages as plain log lines; remembers why a download was skipped."""

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.skip_reason = None

    def debug(self, message: str) -> None:
        if "max-filesize" in message:
            self.skip_reason = message
        log.debug("task %s yt-dlp: %s", self.task_id, message)

    def info(self, message: str) -> None:
        self.debug(message)

    def warning(self, message: str) -> None:
        log.warning("task %s yt-dlp: %s", self.task_id, message)

    def error(self, message: str) -> None:
        log.error("task %s yt-dlp: %s", self.task_id, message)


class _Progress(yt_dlp.postprocessor.PostProcessor):
    """Turns yt-dlp progress hooks into throttled progress reports over all files of a task.

    As a 'before_dl' post-processor it learns how many files (video, audio) the download has,
    so progress rises once from 0 to 100 instead of restarting for each file.
    """

    def __init__(self, report, max_filesize: int):
        super().__init__()
        self.report = report
        self.max_filesize = max_filesize
        self.parts = 1
        self.finished_parts = 0
        self.finished_bytes = 0
        self.last_sent = 0.0
        self.progress = 0.0

    def run(self, info: dict):
        self.parts = len(info.get("requested_formats") or ()) or 1
        return [], info

    def hook(self, d: dict) -> None:
        downloaded = d.get("downloaded_bytes") or 0
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        # total_bytes is exact (Content-Length); an estimate alone must not fail a download.
        if max(downloaded, d.get("total_bytes") or 0) > self.max_filesize:
            raise FileTooLargeError(self.max_filesize)
        now = time.monotonic()
        if d["status"] == "finished":
            self.finished_parts += 1
            self.finished_bytes += downloaded or total or 0
            downloaded, total, part_share = 0, None, 0.0
        elif now - self.last_sent < PROGRESS_INTERVAL_S:
            return
        else:
            part_share = downloaded / total if total else 0.0
        self.last_sent = now
        # Never backwards; 100 is kept for "completed", after the files are checked.
        share = (min(self.finished_parts, self.parts) + min(part_share, 1.0)) / self.parts
        self.progress = max(self.progress, min(99.9, 100.0 * share))
        self.report(
            {
                "type": "progress",
                "progress": round(self.progress, 1),
                "downloaded_bytes": self.finished_bytes + downloaded,
                "total_bytes": self.finished_bytes + total if total else None,
                "speed": d.get("speed"),
                "eta": d.get("eta"),
            }
        )


def _format_selector(quality: str, with_video: bool) -> str:
    if not with_video:
        return "ba/b"
    if quality == "best":
        return "bv*+ba/b"
    return f"bv*[height<={quality}]+ba/b[height<={quality}]/wv*+ba/w"


def _display_name(title: str, suffix: str) -> str:
    name = re.sub(r"[\x00-\x1f/\\]", "_", title).strip(" .") or "download"
    return name[:150] + suffix


def _video_info(info: dict) -> dict:
    keys = (
        "title",
        "duration",
        "uploader",
        "extractor",
        "webpage_url",
        "width",
        "height",
        "ext",
        "format_id",
        "vcodec",
        "acodec",
        "filesize",
        "upload_date",
    )
    return {key: info.get(key) for key in keys if info.get(key) is not None}


def download(spec: dict, report) -> dict:
    """Download spec['url'] into spec['task_dir']; returns {'files': [...], 'video_info': {...}}."""
    task_dir = Path(spec["task_dir"])
    task_dir.mkdir(parents=True, exist_ok=True)
    options = spec["options"]
    progress = _Progress(report, spec["max_filesize"])
    logger = _Logger(spec["task_id"])

    def postprocessor_hook(d: dict) -> None:
        if d["status"] == "started" and d.get("postprocessor") != _Progress.pp_key():
            report({"type": "processing", "message": f"post-processing ({d.get('postprocessor')})"})

    params = {
        "format": _format_selector(options["video_quality"], options["keep_video"]),
        "outtmpl": {"default": "video.%(ext)s"},
        "paths": {"home": str(task_dir), "temp": str(task_dir)},
        "merge_output_format": "mp4/mkv",
        "noplaylist": True,
        "playlist_items": "1",
        "cachedir": False,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "noprogress": True,
        "quiet": True,
        "logger": logger,
        "continuedl": True,
        "overwrites": False,
        "max_filesize": spec["max_filesize"],
        "proxy": "",  # direct connections only: proxies from the environment are ignored
        # yt-dlp's urllib handler whether or not `requests` is installed: one HTTP client, whose
        # redirects are checked above.
        "compat_opts": {"prefer-legacy-http-handler"},
        "external_downloader": {"default": "native"},
        "match_filter": yt_dlp.match_filter_func("!is_live"),
        "socket_timeout": 30,
        "retries": 5,
        "fragment_retries": 5,
        "progress_hooks": [progress.hook],
        "postprocessor_hooks": [postprocessor_hook],
        "updatetime": False,
    }
    started = time.monotonic()
    attempts, delay = spec["download_attempts"], spec["retry_delay"]
    for attempt in range(1, attempts + 1):
        try:
            with yt_dlp.YoutubeDL(params) as ydl:
                ydl.add_post_processor(progress, when="before_dl")
                info = ydl.extract_info(spec["url"], download=True)
            break
        except DownloadError as exc:
            message = _clean_error(str(exc))
            if attempt == attempts or not is_transient(exc):
                raise TaskError(message) from None
            wait = min(delay * 2 ** (attempt - 1), MAX_RETRY_DELAY_S)
            report(
                {
                    "type": "retry",
                    "message": f"transient error, retry {attempt} of {attempts - 1} in {wait:g} s: {message}",
                }
            )
            # A retry resumes the .part file (continuedl), it does not start over.
            time.sleep(wait)
    if info and info.get("_type") == "playlist":
        info = next(iter(info.get("entries") or []), None)
    downloads = (info or {}).get("requested_downloads") or []
    if not downloads or not Path(downloads[0].get("filepath") or "").is_file():
        if logger.skip_reason:
            raise FileTooLargeError(spec["max_filesize"])
        if info and info.get("is_live"):
            raise TaskError("live streams are not supported")
        raise TaskError("yt-dlp produced no file")
    video_path = Path(downloads[0]["filepath"])
    if video_path.stat().st_size > spec["max_filesize"]:
        raise FileTooLargeError(spec["max_filesize"])

    timings = {"download_s": time.monotonic() - started, "extract_s": None}
    report({"type": "processing", "message": "checking files", "video_info": _video_info(info)})
    title = info.get("title") or "download"
    files = []
    if options["extract_audio"]:
        report({"type": "processing", "message": f"extracting audio ({options['audio_format']})"})
        audio_path = task_dir / f"audio.{options['audio_format']}"
        try:
            extract_started = time.monotonic()
            media.extract_audio(video_path, audio_path, options["audio_format"], options["audio_bitrate"])
            timings["extract_s"] = time.monotonic() - extract_started
            media.verify(audio_path, "audio")
        except media.MediaError as exc:
            raise TaskError(str(exc)) from None
        files.append({"kind": "audio", "file": audio_path.name, "name": _display_name(title, audio_path.suffix)})
    if options["keep_video"]:
        try:
            media.verify(video_path, "video")
        except media.MediaError as exc:
            raise TaskError(str(exc)) from None
        files.append({"kind": "video", "file": video_path.name, "name": _display_name(title, video_path.suffix)})
    else:
        video_path.unlink()
    for file in files:
        file["size"] = (task_dir / file["file"]).stat().st_size
    return {"files": files, "video_info": _video_info(info), "timings": timings}


def is_transient(error: BaseException) -> bool:
    """True when a failed download is worth trying again: connection reset or refused, timeouts,
    bodies cut short, HTTP 5xx/408/429. Refused addresses, TLS certificate errors, other HTTP errors (404, 403),
    unsupported URLs and size limits are final."""
    if guard.refused:
        return False
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TaskError | guard.BlockedAddressError | CertificateVerifyError):
            return False
        if isinstance(current, HTTPError):
            return current.status in TRANSIENT_HTTP_STATUSES
        if isinstance(current, TransportError | TimeoutError | ConnectionError):
            return True
        # yt-dlp's downloaders retry only transient failures (bodies cut short, resets, timeouts);
        # when their retries run out the error carries no cause, only this wording.
        if isinstance(current, DownloadError) and _RETRIES_EXHAUSTED.search(str(current)):
            return True
        # yt-dlp keeps the original exception in exc_info (DownloadError, ExtractorError) or cause.
        exc_info = getattr(current, "exc_info", None)
        pending += [
            exc_info[1] if exc_info else None,
            getattr(current, "cause", None),
            current.__cause__,
            current.__context__,
        ]
    return False


def _clean_error(message: str) -> str:
    return re.sub(r"^ERROR:\s*", "", message).strip()
