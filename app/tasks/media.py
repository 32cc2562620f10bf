"""FFmpeg and ffprobe: probing results, extracting audio, and the types of the files served."""

import asyncio
import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Literal, get_args

AudioFormat = Literal["mp3", "m4a", "opus", "flac", "wav"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = get_args(AudioFormat)
AUDIO_FORMATS_WITH_PICTURE = frozenset({"mp3", "m4a", "opus", "flac"})
# Codecs each container holds as they are (a remux copies streams, it never re-encodes); mkv holds all.
_CONTAINER_CODECS = {
    "mp4": {"h264", "hevc", "av1", "vp9", "mpeg4", "aac", "mp3", "opus", "alac", "flac", "ac3", "eac3"},
    "webm": {"vp8", "vp9", "av1", "opus", "vorbis"},
}

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".ass": "text/x-ssa",
    ".ttml": "application/ttml+xml",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}

# Encoder and how "best" is spelled per audio format; lossless formats ignore the bitrate.
_ENCODERS = {
    "mp3": ("libmp3lame", ["-q:a", "0"]),
    "m4a": ("aac", ["-b:a", "256k"]),
    "opus": ("libopus", ["-b:a", "192k"]),
    "flac": ("flac", None),
    "wav": ("pcm_s16le", None),
}
_MUXERS = {"mp3": "mp3", "m4a": "ipod", "opus": "opus", "flac": "flac", "wav": "wav"}
# Source codecs each container takes as they are when the bitrate is "best".
_COPYABLE = {"mp3": "mp3", "m4a": "aac", "opus": "opus", "flac": "flac"}


class MediaError(Exception):
    """FFmpeg failed or a file is not valid media."""


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def _run(command: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except FileNotFoundError:
        raise MediaError(f"{command[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise MediaError(f"{command[0]} did not finish within {timeout} s") from None


# One ffprobe at a time in the download host: each takes ~7 MB, and downloads that end together would
# otherwise probe together (a probe takes tens of milliseconds).
_probing = threading.Lock()


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's format and streams of a local file; raises MediaError if it is not media."""
    command = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-show_format", "-show_streams", "-of", "json"]
    with _probing:
        result = _run([*command, "file:" + str(path)], timeout=120)
    if result.returncode != 0:
        raise MediaError(f"ffprobe rejected {path.name}: {result.stderr.strip()[-300:]}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def verify(path: Path, kind: str) -> dict[str, Any]:
    """Probe path and require a stream of its kind ('video' or 'audio') and a positive duration."""
    if not path.is_file() or path.stat().st_size == 0:
        raise MediaError(f"{kind} file {path.name} is missing or empty")
    info = probe(path)
    codec_types = {stream.get("codec_type") for stream in info.get("streams", [])}
    if kind not in codec_types:
        raise MediaError(f"{kind} file {path.name} has no {kind} stream")
    duration = float(info.get("format", {}).get("duration") or 0)
    if duration <= 0:
        raise MediaError(f"{kind} file {path.name} has no duration")
    return info


def container_misfit(path: Path, container: str) -> str | None:
    """Why the audio and video streams of path cannot be remuxed into container, or None when they can."""
    allowed = _CONTAINER_CODECS.get(container)
    if allowed is None:
        return None
    streams = probe(path).get("streams", [])
    codecs = [s.get("codec_name") for s in streams if s.get("codec_type") in ("video", "audio")]
    misfits = sorted({codec for codec in codecs if codec not in allowed})
    if not misfits:
        return None
    return (
        f"the video's streams ({', '.join(str(codec) for codec in codecs)}) cannot go into {container} without"
        f" re-encoding ({', '.join(str(codec) for codec in misfits)} does not fit); ask for mkv or any instead"
    )


def extract_audio(source: Path, target: Path, audio_format: str, bitrate: str) -> None:
    """Write the audio of the local file source to target; raises MediaError."""
    encoder, best_args = _ENCODERS[audio_format]
    source_codecs = [
        stream.get("codec_name") for stream in probe(source).get("streams", []) if stream.get("codec_type") == "audio"
    ]
    if not source_codecs:
        raise MediaError(f"{source.name} has no audio stream to extract")
    if bitrate == "best" and _COPYABLE.get(audio_format) == source_codecs[0]:
        codec_args = ["-c:a", "copy"]
    elif best_args is None:
        codec_args = ["-c:a", encoder]
    elif bitrate == "best":
        codec_args = ["-c:a", encoder, *best_args]
    else:
        codec_args = ["-c:a", encoder, "-b:a", f"{bitrate}k"]
    partial = target.with_name(target.name + ".part")
    # Inputs are local files only: the protocol whitelist keeps FFmpeg off the network.
    command = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-protocol_whitelist",
        "file",
        "-i",
        "file:" + str(source),
        "-vn",
        "-sn",
        "-dn",
        "-map",
        "0:a:0",
        *codec_args,
        "-f",
        _MUXERS[audio_format],
        "file:" + str(partial),
    ]
    result = _run(command)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise MediaError(f"ffmpeg audio extraction failed: {result.stderr.strip()[-300:]}")
    partial.replace(target)


async def ffmpeg_version() -> str:
    """First line of `ffmpeg -version`; raises MediaError if FFmpeg is missing or broken."""
    try:
        process = await asyncio.create_subprocess_exec(
            "ffmpeg", "-version", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        raise MediaError(f"ffmpeg not runnable: {exc.strerror or exc}") from None
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise MediaError("ffmpeg -version timed out") from None
    if process.returncode != 0:
        raise MediaError(f"ffmpeg -version exited with {process.returncode}")
    first_line = stdout.decode(errors="replace").splitlines()[0] if stdout else ""
    parts = first_line.split()
    return parts[2] if len(parts) > 2 else first_line
