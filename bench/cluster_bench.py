"""Several hosts on one PostgreSQL (prints figures; not a test), everything in one run:

    .venv/bin/python bench/cluster_bench.py [--tasks 100000] [--seconds 5] [--big-mb 200] [--only api,cross,download]

api       GET /api/status and GET /api/tasks?limit=50 per second with --tasks stored tasks (wrk): one host
          on SQLite, one host on PostgreSQL, and two hosts sharing PostgreSQL under load at once
cross     two hosts: time from a cancel on B to the worker gone on A (5 trials), and from a change on A
          to the same change reaching an SSE follower on B (p50, p99 over a throttled download)
download  a --big-mb file fetched from the host holding it and through the other host (ratio)

PostgreSQL is a throwaway server (tests/support/postgres.py); services, wrk and the database share
this machine's cores, so figures are floors and the ratios are what to read.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from service_bench import Service, big_file, load_wrk  # noqa: E402
from store_bench import fill_postgres, fill_sqlite  # noqa: E402

from tests.support.helpers import process_group_members, task_worker  # noqa: E402
from tests.support.mediaserver import MediaServer, generate_media  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

SECRET = "cluster-bench-secret-0123456789"


def host(work: Path, name: str, url: str | None, port_env: dict | None = None) -> Service:
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    env = {"VIDEO_API_NODE_ID": name, "VIDEO_API_LEASE_S": "5", **(port_env or {})}
    if url:
        env |= {"VIDEO_API_DATABASE_URL": url, "VIDEO_API_CLUSTER_SECRET": SECRET}
    service = Service(data, **env)
    service.env["VIDEO_API_NODE_URL"] = service.base
    return service


def api_figures(base: str, task_ids: list[str], seconds: float, work: Path) -> str:
    status = load_wrk(base, [f"/api/status/{t}" for t in task_ids[:1000]], 64, seconds, work)
    page = load_wrk(base, ["/api/tasks?limit=50"], 16, seconds, work)
    return (
        f"status {status['rps']:8.0f}/s p99 {status['p99_ms']:6.2f} ms | list50 {page['rps']:6.0f}/s"
        f" p99 {page['p99_ms']:6.2f} ms"
    )


def task_ids_of(base: str) -> list[str]:
    with urllib.request.urlopen(base + "/api/tasks?limit=500", timeout=10) as answer:
        return [task["task_id"] for task in json.load(answer)["tasks"]]


def bench_api(work: Path, server: PostgresServer, tasks: int, seconds: float) -> None:
    print(f"== API with {tasks:,} stored tasks (wrk: status 64 connections, list 16)")
    sqlite_dir = work / "sqlite-host"
    (sqlite_dir / "db").mkdir(parents=True)
    fill_sqlite(sqlite_dir / "db" / "tasks.sqlite3", tasks)
    with Service(sqlite_dir) as service:
        print(f"  SQLite, 1 host          {api_figures(service.base, task_ids_of(service.base), seconds, work)}")
    url = server.url(server.create_database())
    with host(work, "pg-a", url) as a:  # creates the schema, then the rows go in
        pass
    fill_postgres(url, tasks)
    with host(work, "pg-a", url) as a:
        ids = task_ids_of(a.base)
        print(f"  PostgreSQL, 1 host      {api_figures(a.base, ids, seconds, work)}")
        with host(work, "pg-b", url) as b:
            results = {}
            threads = [
                threading.Thread(
                    target=lambda s=s: results.__setitem__(
                        s.base, api_figures(s.base, ids, seconds, work / s.env["VIDEO_API_NODE_ID"])
                    ),
                    daemon=True,
                )
                for s in (a, b)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name, service in (("a", a), ("b", b)):
                print(f"  PostgreSQL, 2 hosts: {name}  {results[service.base]}")


def submit(base: str, url: str, **options) -> str:
    body = json.dumps({"url": url, **options}).encode()
    request = urllib.request.Request(base + "/api/process", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["task_id"]


def status(base: str, task_id: str) -> dict:
    with urllib.request.urlopen(f"{base}/api/status/{task_id}", timeout=10) as answer:
        return json.load(answer)


def owner(task_id: str, *services: Service) -> Service:
    while True:
        found = [s for s in services if (Path(s.env["VIDEO_API_DATA_DIR"]) / "media" / task_id).exists()]
        if found:
            return found[0]
        time.sleep(0.01)


def follow(base: str, task_id: str, arrivals: dict) -> None:
    """Record when each change (by its updated_at) reaches this host's SSE stream."""
    with urllib.request.urlopen(f"{base}/api/tasks/{task_id}/events", timeout=120) as stream:
        for raw in stream:
            line = raw.decode()
            if line.startswith("data: "):
                task = json.loads(line[6:])
                arrivals.setdefault(task["updated_at"], time.monotonic())
                if task["status"] in ("completed", "failed", "cancelled"):
                    return


def bench_cross(work: Path, server: PostgresServer, media: MediaServer) -> None:
    print("== Across hosts (two hosts, one PostgreSQL)")
    url = server.url(server.create_database())
    with host(work, "x-a", url) as a, host(work, "x-b", url) as b:
        cancel_s = []
        for n in range(5):
            task_id = submit(a.base, media.url(f"/slow/noise.mp4?rate=100000&c={n}"), extract_audio=False)
            holder = owner(task_id, a, b)
            other = b if holder is a else a
            task_dir = Path(holder.env["VIDEO_API_DATA_DIR"]) / "media" / task_id
            while (worker := task_worker(holder.process.pid, task_dir)) is None:
                time.sleep(0.01)
            started = time.monotonic()
            urllib.request.urlopen(urllib.request.Request(f"{other.base}/api/tasks/{task_id}", method="DELETE"))
            while process_group_members(worker):
                time.sleep(0.005)
            cancel_s.append(time.monotonic() - started)
        print(
            f"  cancel on one host -> worker gone on the other: median {statistics.median(cancel_s):.2f} s,"
            f" max {max(cancel_s):.2f} s ({len(cancel_s)} trials)"
        )
        task_id = submit(a.base, media.url("/slow/noise.mp4?rate=400000&events=1"), extract_audio=False)
        holder = owner(task_id, a, b)
        other = b if holder is a else a
        near, far = {}, {}
        followers = [
            threading.Thread(target=follow, args=(s.base, task_id, arrivals))
            for s, arrivals in ((holder, near), (other, far))
        ]
        for thread in followers:
            thread.start()
        for thread in followers:
            thread.join()
        delays = sorted((far[k] - near[k]) * 1000 for k in near.keys() & far.keys())
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(
            f"  change on the owner -> SSE event on the other host: p50 {statistics.median(delays):.1f} ms,"
            f" p99 {p99:.1f} ms ({len(delays)} changes)"
        )


def fetch_seconds(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=300) as answer:
        while answer.read(1 << 20):
            pass
    return time.monotonic() - started


def bench_download(work: Path, server: PostgresServer, media: MediaServer, big_mb: int) -> None:
    print(f"== A {big_mb} MB file, from its host and through the other")
    big = big_file(media, big_mb)
    url = server.url(server.create_database())
    with host(work, "d-a", url) as a, host(work, "d-b", url) as b:
        task_id = submit(a.base, media.url(f"/media/{big.name}"), extract_audio=False)
        while (done := status(a.base, task_id))["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        holder = owner(task_id, a, b)
        other = b if holder is a else a
        direct = min(fetch_seconds(holder.base + done["files"]["video"]) for _ in range(3))
        proxied = min(fetch_seconds(other.base + done["files"]["video"]) for _ in range(3))
        size_mb = big.stat().st_size / (1 << 20)
        print(
            f"  from its host {size_mb / direct:7.0f} MB/s | through the other {size_mb / proxied:7.0f} MB/s |"
            f" ratio {direct / proxied:.2f}x (best of 3)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--only", default="api,cross,download")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    server = PostgresServer().start()
    media = MediaServer(generate_media(Path(tempfile.gettempdir()) / "vda-bench-media")).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if "api" in sections:
                bench_api(work, server, args.tasks, args.seconds)
            if "cross" in sections:
                bench_cross(work, server, media)
            if "download" in sections:
                bench_download(work, server, media, args.big_mb)
    finally:
        media.stop()
        server.stop()


if __name__ == "__main__":
    main()
