"""GET /api/health's checks: each one real (the database answers, the media folder takes a file,
FFmpeg runs, the disk has room), so a load balancer or systemd sees a host that cannot work."""

import asyncio
import contextlib
import functools
import importlib.util
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

import app
from app.api.contract import Health
from app.settings import Settings
from app.store.base import TaskStore
from app.tasks import media

if TYPE_CHECKING:
    from app.cluster.cluster import Cluster


async def check(settings: Settings, store: TaskStore, running_workers: int, cluster: "Cluster | None") -> Health:
    checks: dict[str, dict[str, Any]] = {}
    versions: dict[str, str | None] = dict(_static_versions())
    members = {"node": settings.node_name, "nodes": [settings.node_name]}
    started = time.perf_counter()
    try:
        await store.ping()
        checks["database"] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
        if cluster is not None:
            members["nodes"] = sorted(node["node"] for node in await cluster.nodes_alive())
    except Exception as exc:
        # A host without its database answers 503, so a load balancer takes it out.
        checks["database"] = {"ok": False, "detail": f"database does not answer: {exc}"}
    try:
        await asyncio.to_thread(_probe_writable, settings.media_dir)
        checks["media_writable"] = {"ok": True}
    except OSError as exc:
        checks["media_writable"] = {"ok": False, "detail": f"cannot write to media folder: {exc}"}
    try:
        versions["ffmpeg"] = await media.ffmpeg_version()
        checks["ffmpeg"] = {"ok": True}
    except media.MediaError as exc:
        versions["ffmpeg"] = None
        checks["ffmpeg"] = {"ok": False, "detail": str(exc)}
    try:
        free = shutil.disk_usage(settings.media_dir).free
        ok = free >= settings.min_free_mb * 1024 * 1024
        checks["disk_free"] = {"ok": ok, "free_mb": free // (1024 * 1024), "min_free_mb": settings.min_free_mb}
        if not ok:
            checks["disk_free"]["detail"] = "free disk below VIDEO_API_MIN_FREE_MB"
    except OSError as exc:
        checks["disk_free"] = {"ok": False, "detail": str(exc)}
    failing = [name for name, result in checks.items() if not result["ok"]]
    return Health(
        "unhealthy" if failing else "healthy",
        checks,
        failing,
        versions,
        {"running": running_workers, "max": settings.max_concurrent},
        members,
    )


@functools.cache
def _static_versions() -> dict[str, str]:
    # yt_dlp/version.py holds only constants: run alone, it gives the version without importing
    # yt-dlp into the main process, and without importlib.metadata (~1.4 MB of RSS for two lookups).
    package = importlib.util.find_spec("yt_dlp")
    if package is None or not package.submodule_search_locations:
        raise ImportError("yt-dlp is not installed")
    package_dir = package.submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("yt_dlp_version", Path(package_dir) / "version.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"yt-dlp's version module cannot be loaded from {package_dir}")
    yt_dlp_version = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(yt_dlp_version)
    return {
        "app": app.__version__,
        "yt_dlp": yt_dlp_version.__version__,
        "aiohttp": aiohttp.__version__,
        "python": platform.python_version(),
    }


def _probe_writable(folder: Path) -> None:
    """Raises OSError unless a file can be created in folder. Creating it is the check: a retention
    pass running at that moment may already have removed it as a leftover."""
    descriptor, path = tempfile.mkstemp(dir=folder, prefix=".health-")
    os.close(descriptor)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
