"""The download itself, run in a thread of the download host (app/tasks/host.py): yt-dlp's
Python API, then FFmpeg. Never import it in the service's main process.
"""

import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any, NoReturn

import yt_dlp
import yt_dlp.downloader.common
import yt_dlp.downloader.external
import yt_dlp.downloader.hls
import yt_dlp.downloader.http
import yt_dlp.extractor
import yt_dlp.extractor.generic
import yt_dlp.networking._urllib
import yt_dlp.postprocessor
import yt_dlp.postprocessor.ffmpeg
from yt_dlp.networking.exceptions import CertificateVerifyError, HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, ReExtractInfo

from app.store.records import FileKind
from app.tasks import address_guard, media, media_keys, task_scope
from app.tasks import cookies as cookie_files
from app.tasks.messages import (
    Done,
    DownloadOptions,
    Playlist,
    PlaylistItem,
    Processing,
    ProducedFile,
    Progress,
    Report,
    Retrying,
    RunSpec,
)
from app.tasks.retry import TRANSIENT_HTTP_STATUSES, backoff_s

ReportTo = Callable[[Report], None]

PROGRESS_INTERVAL_S = 0.25
_RETRIES_EXHAUSTED = re.compile(r"Giving up after \d+ (?:fragment )?retries")
log = logging.getLogger(__name__)


class TaskError(Exception):
    """The task failed for a reason worth showing to the client as it is."""


class FileTooLargeError(TaskError):
    def __init__(self, max_filesize: int):
        limit_mb = max_filesize // (1024 * 1024)
        super().__init__(f"file is larger than the limit of {limit_mb} MB (VIDEO_API_MAX_FILESIZE_MB)")


def _refuse_ffmpeg_download(self: object, *args: object, **kwargs: object) -> NoReturn:
    # The socket guard cannot see FFmpeg's connections, so FFmpeg never downloads.
    raise TaskError("this media needs FFmpeg to fetch it from the network, which the service does not allow")


yt_dlp.downloader.external.FFmpegFD._call_downloader = _refuse_ffmpeg_download

# yt-dlp's HTTP downloader reads about a second of data a block, up to 4 MiB: with the bytes object
# and malloc's reuse that is ~9 MB more per worker at full speed. Still adaptive, capped at 1 MiB
# (no slower here: bench/service_bench.py --only wall).
MAX_BLOCK_BYTES = 1024 * 1024
_best_block_size: Callable[[float, int], int] = yt_dlp.downloader.common.FileDownloader.best_block_size


def _capped_block_size(elapsed_time: float, received: int) -> int:
    return min(_best_block_size(elapsed_time, received), MAX_BLOCK_BYTES)


yt_dlp.downloader.common.FileDownloader.best_block_size = staticmethod(_capped_block_size)
_follow_redirect: Callable[..., urllib.request.Request | None] = (
    yt_dlp.networking._urllib.RedirectHandler.redirect_request
)


def _refuse_other_schemes(
    self: urllib.request.HTTPRedirectHandler,
    req: urllib.request.Request,
    fp: IO[bytes],
    code: int,
    msg: str,
    headers: HTTPMessage,
    newurl: str,
) -> urllib.request.Request | None:
    # urllib follows redirects to ftp:// too, and the socket guard checks addresses, not schemes.
    try:
        address_guard.check_url_syntax(newurl)
    except address_guard.BlockedAddressError as exc:
        task_scope.current().refused.append(f"redirect refused: {exc}")
        raise urllib.error.URLError(exc) from None
    return _follow_redirect(self, req, fp, code, msg, headers, newurl)


yt_dlp.networking._urllib.RedirectHandler.redirect_request = _refuse_other_schemes


def _warm_up() -> None:
    """Do once as the download host starts what its first task would otherwise wait for: yt-dlp
    matches a URL against ~1,900 extractor patterns, compiling each on first use (about 0.3 s of CPU)."""
    for extractor in yt_dlp.extractor.gen_extractor_classes():
        extractor.suitable("http://127.0.0.1/warm-up")
    yt_dlp.YoutubeDL({"quiet": True, "cachedir": False}).close()


_warm_up()


class _Logger:
    """yt-dlp's messages as plain log lines; remembers why a download was skipped."""

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.skip_reason: str | None = None

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


class _Progress(yt_dlp.postprocessor.PostProcessor):  # type: ignore[misc]  # yt-dlp has no type information
    """Turns yt-dlp progress hooks into throttled progress reports over all files of a task.

    As a 'before_dl' post-processor it learns how many files (video, audio) the download has,
    so progress rises once from 0 to 100 instead of restarting for each file.
    """

    def __init__(self, report: ReportTo, max_filesize: int) -> None:
        super().__init__()
        self.report = report
        self.max_filesize = max_filesize
        self.parts = 1
        self.finished_parts = 0
        self.finished_bytes = 0
        self.last_sent = 0.0
        self.progress = 0.0

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        self.parts = len(info.get("requested_formats") or ()) or 1
        return [], info

    def hook(self, d: dict[str, Any]) -> None:
        task_scope.current().check()  # called for every block: where a cancelled download stops
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
            Progress(
                progress=round(self.progress, 1),
                downloaded_bytes=self.finished_bytes + downloaded,
                total_bytes=self.finished_bytes + total if total else None,
                speed=d.get("speed"),
                eta=d.get("eta"),
            )
        )


def _format_selector(quality: str, with_video: bool, container: str) -> str:
    if not with_video:
        return "ba/b"
    height = "" if quality == "best" else f"[height<={quality}]"
    anything = "bv*+ba/b" if quality == "best" else f"bv*{height}+ba/b{height}/wv*+ba/w"
    if container not in ("mp4", "webm"):
        return anything
    # Streams made for the container first: then it is a merge, not a remux that may not fit.
    audio = "m4a" if container == "mp4" else "webm"
    return f"bv*{height}[ext={container}]+ba[ext={audio}]/b{height}[ext={container}]/{anything}"


class _ContainerFit(yt_dlp.postprocessor.PostProcessor):  # type: ignore[misc]  # yt-dlp has no type information
    """Fails the task before a remux into a container that cannot hold the streams as they are."""

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        try:
            misfit = media.container_misfit(Path(info["filepath"]), self.container)
        except media.MediaError as exc:
            raise TaskError(str(exc)) from None
        if misfit:
            raise TaskError(misfit)
        return [], info


def _postprocessors(options: DownloadOptions) -> list[dict[str, Any]]:
    """yt-dlp's post-processors for the video's options, in the order they must run: remux, then
    what is written into the file. The audio is tagged after its extraction (_tag_audio)."""
    steps: list[dict[str, Any]] = []
    if options.thumbnail:
        # One common picture type to serve and to embed (sites often give WebP).
        steps.append({"key": "FFmpegThumbnailsConvertor", "format": "jpg", "when": "before_dl"})
    if not options.keep_video:
        return steps
    if options.container != "any":
        steps.append({"key": "FFmpegVideoRemuxer", "preferedformat": options.container})
    if options.embed_subtitles:
        steps.append({"key": "FFmpegEmbedSubtitle", "already_have_subtitle": True})
    if options.embed_metadata or options.embed_chapters:
        steps.append({"key": "FFmpegMetadata", **_metadata_options(options)})
    if options.thumbnail:
        steps.append({"key": "EmbedThumbnail", "already_have_thumbnail": True})
    return steps


def _metadata_options(options: DownloadOptions) -> dict[str, bool]:
    """FFmpegMetadata's options, for the video (a post-processor step) and the audio (_tag_audio) alike."""
    return {"add_metadata": options.embed_metadata, "add_chapters": options.embed_chapters, "add_infojson": False}


def _display_name(title: str, suffix: str) -> str:
    name = re.sub(r"[\x00-\x1f/\\]", "_", title).strip(" .") or "download"
    return name[:150] + suffix


def _video_info(info: dict[str, Any]) -> dict[str, Any]:
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


def download(spec: RunSpec, report: ReportTo) -> Done | Playlist:
    """Download spec.url into spec.task_dir and produce the files the options ask for; or, when
    the URL is a playlist and the task may expand, list the items asked for."""
    task_dir = Path(spec.task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(report, spec.max_filesize)
    logger = _Logger(spec.task_id)
    started = time.monotonic()
    params = _params(spec, task_dir, progress, logger, report)
    with cookie_files.cookie_file(spec.task_id, spec.cookies) as cookie_path:
        if cookie_path is not None:
            params["cookiefile"] = str(cookie_path)
        info = _fetch_with_retry(spec, params, progress, report)
    if spec.max_items is not None and _is_playlist(info):
        return _playlist(info, spec.max_items)
    video_path = _downloaded_file(spec, info, logger)
    return _produce_files(spec, info, video_path, time.monotonic() - started, report, logger)


def _params(spec: RunSpec, task_dir: Path, progress: _Progress, logger: _Logger, report: ReportTo) -> dict[str, Any]:
    """yt-dlp's options for this task: one item, no proxies, no external downloaders, no live streams."""

    def postprocessor_hook(d: dict[str, Any]) -> None:
        task_scope.current().check()
        if d["status"] == "started" and d.get("postprocessor") != _Progress.pp_key():
            report(Processing(f"post-processing ({d.get('postprocessor')})"))

    options = spec.options
    return {
        "format": _format_selector(options.video_quality, options.keep_video, options.container),
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
        "max_filesize": spec.max_filesize,
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
        "writesubtitles": bool(options.subtitles),
        "subtitleslangs": ["all"] if options.subtitles == "all" else list(options.subtitles),
        "writethumbnail": options.thumbnail,
        "postprocessors": _postprocessors(options),
    }


def _fetch_with_retry(spec: RunSpec, params: dict[str, Any], progress: _Progress, report: ReportTo) -> Any:
    """yt-dlp's info of the downloaded item, after up to spec.download_attempts tries of transient errors."""
    attempts = spec.download_attempts
    for attempt in range(1, attempts + 1):
        try:
            with yt_dlp.YoutubeDL(params) as ydl:
                ydl.add_post_processor(progress, when="before_dl")
                if spec.options.keep_video and spec.options.container != "any":
                    # Ahead of the remux, which the postprocessors option placed at the start of post_process.
                    ydl._pps["post_process"].insert(0, _ContainerFit(spec.options.container))
                if spec.max_items is None:
                    info = ydl.extract_info(spec.url, download=True)
                else:
                    info = _download_or_list(ydl, spec, params)
            break
        except DownloadError as exc:
            task_scope.current().check()  # a cancel that yt-dlp reported as a failed download
            message = _clean_error(str(exc))
            if attempt == attempts or not is_transient(exc):
                raise TaskError(message) from None
            wait = backoff_s(spec.retry_delay_s, attempt)
            report(Retrying(f"transient error, retry {attempt} of {attempts - 1} in {wait:g} s: {message}"))
            # A retry resumes the .part file (continuedl), it does not start over.
            task_scope.current().sleep(wait)
    if spec.max_items is None and _is_playlist(info):  # a playlist's item downloads the first video its URL names
        info = next(iter(info.get("entries") or []), None)
    return info


def _is_playlist(info: Any) -> bool:
    return bool(info) and info.get("_type") in ("playlist", "multi_video")


def _download_or_list(ydl: yt_dlp.YoutubeDL, spec: RunSpec, params: dict[str, Any]) -> Any:
    """One extraction: a video is downloaded; a playlist's entries asked for are listed (flat:
    entries that are links to other pages are not opened), without downloading any."""
    found = ydl.extract_info(spec.url, download=False, process=False)
    if not _is_playlist(found):
        try:
            return ydl.process_ie_result(found, download=True)
        except ReExtractInfo:  # what was read went stale: read again, as yt-dlp's --load-info-json does
            return ydl.extract_info(spec.url, download=True)
        except ExtractorError as exc:  # extract_info() reports these as a DownloadError: the same here
            ydl.report_error(str(exc), exc.format_traceback())
            raise
    wanted = spec.options.playlist_items or f"1-{spec.max_items}"
    with yt_dlp.YoutubeDL({**params, "extract_flat": "in_playlist", "playlist_items": wanted}) as lister:
        return lister.process_ie_result(found, download=False)


def _playlist(info: dict[str, Any], max_items: int) -> Playlist:
    """The playlist's first max_items entries with a URL the service may download, each once."""
    items: list[PlaylistItem] = []
    seen: set[str] = set()
    skipped = 0
    for entry in info.get("entries") or ():
        if len(items) == max_items:
            break
        url = _entry_url(entry or {})
        if url is None or url in seen or not _downloadable(url):
            skipped += 1
            continue
        seen.add(url)
        items.append(PlaylistItem(url, entry.get("title")))
    return Playlist(info.get("title"), info.get("playlist_count"), items, skipped)


def _downloadable(url: str) -> bool:
    try:
        address_guard.check_url_syntax(url)
    except address_guard.BlockedAddressError:
        return False
    return True


def _entry_url(entry: dict[str, Any]) -> str | None:
    """What a playlist's item downloads: the page of a flat entry, else the media of a resolved
    one (its best format when it has several)."""
    if entry.get("_type") in ("url", "url_transparent"):
        return entry.get("url")
    formats = entry.get("formats") or ()
    return entry.get("url") or (formats[-1].get("url") if formats else None)


def _downloaded_file(spec: RunSpec, info: Any, logger: _Logger) -> Path:
    """The file yt-dlp wrote, or the reason there is none."""
    downloads = (info or {}).get("requested_downloads") or []
    if not downloads or not Path(downloads[0].get("filepath") or "").is_file():
        if logger.skip_reason:
            raise FileTooLargeError(spec.max_filesize)
        if info and info.get("is_live"):
            raise TaskError("live streams are not supported")
        raise TaskError("yt-dlp produced no file")
    video_path = Path(downloads[0]["filepath"])
    if video_path.stat().st_size > spec.max_filesize:
        raise FileTooLargeError(spec.max_filesize)
    return video_path


def _produce_files(
    spec: RunSpec, info: Any, video_path: Path, download_s: float, report: ReportTo, logger: _Logger
) -> Done:
    """The audio extracted (and tagged) when asked, the video checked (or removed when not kept),
    and the subtitles and thumbnail yt-dlp wrote."""
    options, task_dir = spec.options, video_path.parent
    report(Processing("checking files", _video_info(info)))
    title = info.get("title") or "download"
    files = [*_subtitle_files(info, task_dir, title), *_thumbnail_files(info, task_dir, title)]
    extract_s = None
    if options.extract_audio:
        report(Processing(f"extracting audio ({options.audio_format})"))
        audio_path = task_dir / f"audio.{options.audio_format}"
        try:
            extract_started = time.monotonic()
            media.extract_audio(video_path, audio_path, options.audio_format, options.audio_bitrate)
            extract_s = time.monotonic() - extract_started
            _tag_audio(audio_path, info, options, logger)
            media.verify(audio_path, "audio")
        except media.MediaError as exc:
            raise TaskError(str(exc)) from None
        files.append(_produced("audio", audio_path, title))
    if options.keep_video:
        try:
            media.verify(video_path, "video")
        except media.MediaError as exc:
            raise TaskError(str(exc)) from None
        files.append(_produced("video", video_path, title))
    else:
        video_path.unlink()
    return Done(files, _video_info(info), download_s, extract_s, media_keys.media_key(spec.url))


def _subtitle_files(info: dict[str, Any], task_dir: Path, title: str) -> list[ProducedFile]:
    produced = []
    for language, subtitle in sorted((info.get("requested_subtitles") or {}).items()):
        path = Path(subtitle.get("filepath") or "")
        if path.parent == task_dir and path.is_file():
            produced.append(_produced("subtitles", path, title, f".{language}{path.suffix}", language))
    return produced


def _thumbnail_files(info: dict[str, Any], task_dir: Path, title: str) -> list[ProducedFile]:
    written = [Path(t["filepath"]) for t in info.get("thumbnails") or () if t.get("filepath")]
    return [_produced("thumbnail", path, title) for path in written[-1:] if path.parent == task_dir and path.is_file()]


def _tag_audio(audio_path: Path, info: dict[str, Any], options: DownloadOptions, logger: _Logger) -> None:
    """Write the metadata, chapters and thumbnail the options ask for into the extracted audio,
    with the post-processors yt-dlp uses for its own audio (formats that cannot carry a picture get none)."""
    audio_info = {**info, "filepath": str(audio_path), "ext": audio_path.suffix[1:], "__files_to_move": {}}
    with yt_dlp.YoutubeDL({"quiet": True, "noprogress": True, "logger": logger}) as ydl:
        try:
            if options.embed_metadata or options.embed_chapters:
                yt_dlp.postprocessor.FFmpegMetadataPP(ydl, **_metadata_options(options)).run(audio_info)
            if options.thumbnail and options.audio_format in media.AUDIO_FORMATS_WITH_PICTURE:
                yt_dlp.postprocessor.EmbedThumbnailPP(ydl, already_have_thumbnail=True).run(audio_info)
        except yt_dlp.utils.PostProcessingError as exc:
            raise media.MediaError(f"tagging the audio failed: {exc}") from None


def _produced(
    kind: FileKind, path: Path, title: str, suffix: str | None = None, language: str | None = None
) -> ProducedFile:
    name = _display_name(title, path.suffix if suffix is None else suffix)
    return ProducedFile(kind, path.name, name, path.stat().st_size, language)


def is_transient(error: BaseException) -> bool:
    """True when a failed download is worth trying again: connection reset or refused, timeouts,
    bodies cut short, HTTP 5xx/408/429. Refused addresses, TLS certificate errors, other HTTP errors (404, 403),
    unsupported URLs and size limits are final."""
    if task_scope.current().refused:
        return False
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TaskError | address_guard.BlockedAddressError | CertificateVerifyError):
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
