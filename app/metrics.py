"""Prometheus metrics of one service instance (several apps may share a process in tests).

Counted in plain Python and handed to prometheus-client only when /metrics is read: the client and
its exposition modules (about 1.1 MB of RSS) are imported on the first scrape instead of by every
idle service, and counting a request is a dict update instead of labels() with its lock.
"""

import bisect
import time
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web

import app
from app.store.base import LOCAL_NODE, STATUSES, Occupancy

if TYPE_CHECKING:  # prometheus-client is imported on the first scrape only
    from prometheus_client.core import HistogramMetricFamily, Metric

    from app.settings import Settings

# Downloads and extractions of test clips take ~1 s, of real videos up to an hour.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Bucket "le" b counts values <= b: the first bound not below the value.
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def add_to(self, family: "HistogramMetricFamily", labels: list[str]) -> None:
        from prometheus_client.utils import floatToGoString

        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(floatToGoString, self.buckets), "+Inf"), self.counts, strict=True):
            total += count
            cumulative.append((bound, total))
        family.add_metric(labels, cumulative, self.sum)


class CacheStats(NamedTuple):
    hits: int
    misses: int
    entries: int
    size_bytes: int


class Metrics:
    def __init__(self) -> None:
        self.downloaded_bytes = 0
        self.finished: dict[str, int] = {}
        self.download_seconds = _Histogram(DURATION_BUCKETS)
        self.extract_seconds = _Histogram(DURATION_BUCKETS)
        self.http_requests: dict[tuple[str, str, int], int] = {}
        self.http_seconds: dict[tuple[str, str], _Histogram] = {}
        # By user name: only names of the tenants file reach here (tokens are checked first), so
        # the label values are bounded by the file.
        self.user_tasks: dict[str, int] = {}
        self.user_refusals: dict[str, int] = {}

    def user_submitted(self, user: str) -> None:
        self.user_tasks[user] = self.user_tasks.get(user, 0) + 1

    def user_refused(self, user: str) -> None:
        self.user_refusals[user] = self.user_refusals.get(user, 0) + 1

    def task_finished(
        self, status: str, downloaded_bytes: int = 0, download_s: float | None = None, extract_s: float | None = None
    ) -> None:
        self.finished[status] = self.finished.get(status, 0) + 1
        if status == "completed":
            self.downloaded_bytes += downloaded_bytes
            if download_s is not None:
                self.download_seconds.observe(download_s)
            if extract_s is not None:
                self.extract_seconds.observe(extract_s)

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        resource = request.match_info.route.resource
        # The route's pattern, not the path: ids must not create a label value each.
        route = resource.canonical if resource is not None else "unmatched"
        key = (request.method, route, status)
        self.http_requests[key] = self.http_requests.get(key, 0) + 1
        histogram = self.http_seconds.get(key[:2])
        if histogram is None:
            histogram = self.http_seconds[key[:2]] = _Histogram(HTTP_BUCKETS)
        histogram.observe(seconds)

    def render(
        self,
        settings: "Settings",
        counts: dict[str, int] | None,
        occupancy: Occupancy | None,
        running: int,
        used_bytes: int | None,
        free_bytes: int,
        last_backup: float | None = None,
        user_bytes: dict[str, int] | None = None,
        views: CacheStats | None = None,
    ) -> web.Response:
        """counts, occupancy, used_bytes and user_bytes are None while the task database cannot be
        reached: their families are left out, and video_api_database_up says 0. last_backup: when the
        newest SQLite backup was taken (0: none yet), None on PostgreSQL, whose backups pgBackRest
        reports. user_bytes: bytes of each user's files, every user of the tenants file present.
        views: the task view cache's figures (app/api/view_cache.py)."""
        from prometheus_client import generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        node = settings.node_name
        from_database = []
        if counts is not None and occupancy is not None and used_bytes is not None:
            tasks = GaugeMetricFamily("video_api_tasks", "Stored tasks by status.", labels=["status"])
            for status in STATUSES:
                tasks.add_metric([status], counts.get(status, 0))
            leased = GaugeMetricFamily(
                "video_api_tasks_leased",
                "Tasks downloading or processing, by the node that owns them (this node always present).",
                labels=["node"],
            )
            # A single host's store records its tasks' owner as LOCAL_NODE: they are this node's.
            by_node = {node: 0} | {node if owner == LOCAL_NODE else owner: n for owner, n in occupancy.running.items()}
            for owner, n in sorted(by_node.items()):
                leased.add_metric([owner], n)
            queued_at = occupancy.oldest_queued_at
            from_database = [
                tasks,
                GaugeMetricFamily("video_api_queue_depth", "Tasks waiting for a worker.", counts.get("queued", 0)),
                leased,
                GaugeMetricFamily(
                    "video_api_oldest_queued_age_seconds",
                    "Seconds since the task next in the queue was created (0: none waits).",
                    0.0 if queued_at is None else max(0.0, time.time() - queued_at),
                ),
                GaugeMetricFamily("video_api_media_used_bytes", "Bytes of the media files kept.", used_bytes),
            ]
        if from_database and user_bytes is not None:
            by_user = GaugeMetricFamily(
                "video_api_user_media_bytes", "Bytes of each user's files kept, on every host.", labels=["user"]
            )
            for user, used in sorted(user_bytes.items()):
                by_user.add_metric([user], used)
            from_database.append(by_user)
        user_tasks = CounterMetricFamily(
            "video_api_user_tasks", "Tasks each user asked for through this node.", labels=["user"]
        )
        for user, n in sorted(self.user_tasks.items()):
            user_tasks.add_metric([user], n)
        user_refusals = CounterMetricFamily(
            "video_api_user_refusals",
            "New tasks refused by this node because the user was at one of its limits.",
            labels=["user"],
        )
        for user, n in sorted(self.user_refusals.items()):
            user_refusals.add_metric([user], n)
        build_info = GaugeMetricFamily(
            "video_api_build_info", "Always 1: the service's version and this node's name.", labels=["version", "node"]
        )
        build_info.add_metric([app.__version__, node], 1)
        finished = CounterMetricFamily(
            "video_api_tasks_finished", "Tasks that ended, by final status.", labels=["status"]
        )
        for final_status, n in self.finished.items():
            finished.add_metric([final_status], n)
        download_seconds = HistogramMetricFamily(
            "video_api_download_duration_seconds", "Download time of completed tasks (retries included)."
        )
        self.download_seconds.add_to(download_seconds, [])
        extract_seconds = HistogramMetricFamily(
            "video_api_extraction_duration_seconds", "Audio extraction time (FFmpeg) of completed tasks."
        )
        self.extract_seconds.add_to(extract_seconds, [])
        requests = CounterMetricFamily(
            "video_api_http_requests", "HTTP requests by route and status.", labels=["method", "route", "status"]
        )
        for (method, route, http_status), n in self.http_requests.items():
            requests.add_metric([method, route, str(http_status)], n)
        latency = HistogramMetricFamily(
            "video_api_http_request_duration_seconds", "HTTP request latency by route.", labels=["method", "route"]
        )
        for labels, histogram in self.http_seconds.items():
            histogram.add_to(latency, list(labels))
        families = [
            build_info,
            *from_database,
            GaugeMetricFamily(
                "video_api_database_up",
                "1 when the task database answered this scrape, else 0.",
                int(bool(from_database)),
            ),
            GaugeMetricFamily(
                "video_api_workers_running", "Downloads running now (threads of the download host).", running
            ),
            CounterMetricFamily(
                "video_api_downloaded_bytes", "Bytes downloaded by completed tasks.", self.downloaded_bytes
            ),
            finished,
            download_seconds,
            extract_seconds,
            GaugeMetricFamily("video_api_disk_free_bytes", "Free bytes on the data file system.", free_bytes),
            # The configured limits: alert rules divide by these instead of copying the thresholds.
            GaugeMetricFamily(
                "video_api_queue_limit", "Tasks that may wait (VIDEO_API_QUEUE_LIMIT).", settings.queue_limit
            ),
            GaugeMetricFamily(
                "video_api_workers_max",
                "Downloads running at once at most (VIDEO_API_MAX_CONCURRENT).",
                settings.max_concurrent,
            ),
            GaugeMetricFamily(
                "video_api_min_free_bytes",
                "Free-disk floor in bytes (VIDEO_API_MIN_FREE_MB, MiB).",
                settings.min_free_bytes,
            ),
            GaugeMetricFamily(
                "video_api_media_limit_bytes",
                "Size cap of the media folder in bytes (VIDEO_API_MAX_STORAGE_MB, MiB).",
                settings.max_storage_bytes,
            ),
            requests,
            latency,
            user_tasks,
            user_refusals,
        ]
        if views is not None:
            families += [
                CounterMetricFamily(
                    "video_api_view_cache_hits", "Task views answered from memory (status and lists).", views.hits
                ),
                CounterMetricFamily(
                    "video_api_view_cache_misses", "Task views read from the task store.", views.misses
                ),
                GaugeMetricFamily("video_api_view_cache_entries", "Task views kept in memory.", views.entries),
                GaugeMetricFamily(
                    "video_api_view_cache_bytes",
                    "Memory the kept task views take, estimated (VIDEO_API_VIEW_CACHE_MB caps it).",
                    views.size_bytes,
                ),
            ]
        if last_backup is not None:
            families.append(
                GaugeMetricFamily(
                    "video_api_backup_last_success_timestamp_seconds",
                    "When the newest complete backup of the SQLite task store was taken (0: none).",
                    last_backup,
                )
            )
        response = web.Response(body=generate_latest(_Families(families)))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


class _Families:
    """What generate_latest() reads from a registry: collect() yielding the metric families."""

    def __init__(self, families: list["Metric"]) -> None:
        self.families = families

    def collect(self) -> list["Metric"]:
        return self.families
