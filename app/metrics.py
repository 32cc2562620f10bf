"""Prometheus metrics of one service instance, in a registry of its own (several apps may share a process in tests)."""

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.store import STATUSES

# Downloads and extractions of test clips take ~1 s, of real videos up to an hour.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("video_api_tasks", "Stored tasks by status.", ["status"], registry=r)
        self.queue_depth = Gauge("video_api_queue_depth", "Tasks waiting for a worker.", registry=r)
        self.workers = Gauge("video_api_workers_running", "Worker processes running a download.", registry=r)
        self.downloaded_bytes = Counter("video_api_downloaded_bytes", "Bytes downloaded by completed tasks.",
                                        registry=r)  # fmt: skip
        self.finished = Counter("video_api_tasks_finished", "Tasks that ended, by final status.", ["status"],
                                registry=r)  # fmt: skip
        self.download_seconds = Histogram("video_api_download_duration_seconds",
                                          "Download time of completed tasks (retries included).",
                                          buckets=DURATION_BUCKETS, registry=r)  # fmt: skip
        self.extract_seconds = Histogram("video_api_extraction_duration_seconds",
                                         "Audio extraction time (FFmpeg) of completed tasks.",
                                         buckets=DURATION_BUCKETS, registry=r)  # fmt: skip
        self.disk_used = Gauge("video_api_media_used_bytes", "Bytes of the media files kept.", registry=r)
        self.disk_free = Gauge("video_api_disk_free_bytes", "Free bytes on the data file system.", registry=r)
        self.http_requests = Counter("video_api_http_requests", "HTTP requests by route and status.",
                                     ["method", "route", "status"], registry=r)  # fmt: skip
        self.http_seconds = Histogram("video_api_http_request_duration_seconds", "HTTP request latency by route.",
                                      ["method", "route"], buckets=HTTP_BUCKETS, registry=r)  # fmt: skip
        for status in STATUSES:
            self.tasks.labels(status)

    def task_finished(self, status: str, timings: dict | None = None, downloaded_bytes: int = 0) -> None:
        self.finished.labels(status).inc()
        if status == "completed":
            self.downloaded_bytes.inc(downloaded_bytes)
            timings = timings or {}
            if timings.get("download_s") is not None:
                self.download_seconds.observe(timings["download_s"])
            if timings.get("extract_s") is not None:
                self.extract_seconds.observe(timings["extract_s"])

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        resource = request.match_info.route.resource
        # The route's pattern, not the path: ids must not create a label value each.
        route = resource.canonical if resource is not None else "unmatched"
        self.http_requests.labels(request.method, route, str(status)).inc()
        self.http_seconds.labels(request.method, route).observe(seconds)

    def render(self, counts: dict, running: int, used_bytes: int, free_bytes: int) -> web.Response:
        for status in STATUSES:
            self.tasks.labels(status).set(counts.get(status, 0))
        self.queue_depth.set(counts.get("queued", 0))
        self.workers.set(running)
        self.disk_used.set(used_bytes)
        self.disk_free.set(free_bytes)
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
