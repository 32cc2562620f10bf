"""Several hosts on one PostgreSQL (prints figures; not a test), everything in one run:

    .venv/bin/python bench/cluster_bench.py [--tasks 100000] [--seconds 5] [--big-mb 200] [--only api,cross,download]

api       GET /api/status and GET /api/tasks?limit=50 per second with --tasks stored tasks (wrk): one host
          on PostgreSQL beside one on SQLite in alternating rounds (aims: status >= 0.8x, list >= 0.6x);
          the view cache with every stored task read twice (hit rate, views kept, bytes, RSS) at the
          default bound and at 512 MB; two hosts sharing PostgreSQL under load at once
cross     two hosts: time from a cancel on B to the download stopped on A (5 trials), and from a change on A
          to the same change reaching an SSE follower on B (p50, p99 over a throttled download)
download  a --big-mb file fetched from the host holding it; through Debian's haproxy (2.6, run here in the
          foreground, HTTPS frontend with a throwaway CA's certificate, plain HTTP to the hosts) on the haproxy
          role's configuration (tests/support/haproxy.py renders it): for both hosts, where the file id's
          rule sends every request to the holder, beside the same with the holder as its only server (the
          reference; aim >= 0.95x) and with the other host as its only server (the proxied path a download
          balanced there took before the rules); and straight to the other host, which streams it from the
          holder (the fallback for clients that reach a host directly). Best of alternating rounds.

PostgreSQL is a throwaway server (tests/support/postgres.py); services, wrk and the database share
this machine's cores, so figures are floors and the ratios are what to read.
"""

import argparse
import asyncio
import json
import random
import re
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from service_bench import Service, big_file, load_wrk, rss_kb, side_by_side  # noqa: E402
from store_bench import fill_postgres, fill_sqlite  # noqa: E402

from tests.support import haproxy  # noqa: E402
from tests.support.certificates import TestCA  # noqa: E402
from tests.support.haproxy import local_values, render_config  # noqa: E402
from tests.support.helpers import free_port, leftovers, task_worker  # noqa: E402
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


def cache_figures(base: str) -> dict[str, float]:
    """The host's view cache figures from its /metrics (video_api_view_cache_*)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        name.removeprefix("video_api_view_cache_"): float(value)
        for name, value in re.findall(r"^(video_api_view_cache_\w+) (\S+)$", text, re.MULTILINE)
    }


def every_status(base: str, ids: list[str]) -> float:
    """Reads the status of every task once, 32 at a time; returns the requests per second."""

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
            pending = iter(ids)

            async def reader() -> None:
                for task_id in pending:
                    async with session.get(f"{base}/api/status/{task_id}") as response:
                        await response.read()
                        assert response.status == 200, response.status

            await asyncio.gather(*(reader() for _ in range(32)))

    started = time.perf_counter()
    asyncio.run(run())
    return len(ids) / (time.perf_counter() - started)


def cache_at_scale(service: Service, ids: list[str], label: str) -> None:
    """Every one of the stored tasks read twice, the second time in another (random) order: the
    second pass's hit rate with the cache's bound, what it holds, and the main process's RSS before
    and after. (In the same order a bound smaller than the tasks would hit nothing: least recently
    used goes first.)"""
    rss_before = rss_kb(service.process.pid)
    first = every_status(service.base, ids)
    before = cache_figures(service.base)
    second = every_status(service.base, random.sample(ids, len(ids)))
    after = cache_figures(service.base)
    hits, misses = after["hits_total"] - before["hits_total"], after["misses_total"] - before["misses_total"]
    print(
        f"  {label}: {len(ids):,} statuses twice ({first:.0f}, then {second:.0f} req/s): second pass"
        f" {hits / (hits + misses):.0%} from memory; {after['entries']:,.0f} views kept,"
        f" {after['bytes'] / (1 << 20):.1f} MB counted ({after['bytes'] / max(1, after['entries']):.0f} B a view);"
        f" main process RSS {rss_before / 1024:.0f} -> {rss_kb(service.process.pid) / 1024:.0f} MB"
    )


def bench_api(work: Path, server: PostgresServer, tasks: int, seconds: float) -> None:
    print(
        f"== API with {tasks:,} stored tasks: one host on PostgreSQL beside one on SQLite, alternating rounds"
        " (wrk: status of 1,000 tasks at 64 connections, the 50-task list at 16)"
    )
    sqlite_dir = work / "sqlite-host"
    (sqlite_dir / "db").mkdir(parents=True)
    lite_ids = fill_sqlite(sqlite_dir / "db" / "tasks.sqlite3", tasks)[::-1]  # newest first
    url = server.url(server.create_database())
    with host(work, "pg-a", url):  # creates the schema, then the rows go in
        pass
    fill_postgres(url, tasks)
    with psycopg.connect(url) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM tasks ORDER BY seq DESC")]
    with Service(sqlite_dir) as lite, host(work, "pg-a", url) as a:
        # The newest 1,000 of each store (the web page's and most clients' working set).
        targets = {
            "status": ([f"/api/status/{t}" for t in lite_ids[:1000]], ids[:1000], 64),
            "list50": (["/api/tasks?limit=50"], None, 16),
        }
        for name, (paths, pg_ids, connections) in targets.items():
            pg_paths = paths if pg_ids is None else [f"/api/status/{t}" for t in pg_ids]
            rounds = [
                (
                    load_wrk(lite.base, paths, connections, seconds, work),
                    load_wrk(a.base, pg_paths, connections, seconds, work),
                )
                for _ in range(3)
            ]
            print(f"  {name:<7} {side_by_side(rounds, ('SQLite', 'PostgreSQL'))}")
        kept = cache_figures(a.base)
        hit_rate = kept["hits_total"] / (kept["hits_total"] + kept["misses_total"])
        print(f"  the PostgreSQL host's views over these rounds: {hit_rate:.2%} from memory")
        cache_at_scale(a, ids, "PostgreSQL, default bound")
    with host(work, "pg-big", url, {"VIDEO_API_VIEW_CACHE_MB": "512"}) as big:
        cache_at_scale(big, ids, "PostgreSQL, VIDEO_API_VIEW_CACHE_MB=512")
    with host(work, "pg-a", url) as a, host(work, "pg-b", url) as b:
        results = {}
        threads = [
            threading.Thread(
                target=lambda s=s: results.__setitem__(
                    s.base, api_figures(s.base, ids[:1000], seconds, work / s.env["VIDEO_API_NODE_ID"])
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
            print(f"  PostgreSQL, 2 hosts under load at once: {name}  {results[service.base]}")


def api_figures(base: str, task_ids: list[str], seconds: float, work: Path) -> str:
    status = load_wrk(base, [f"/api/status/{t}" for t in task_ids[:1000]], 64, seconds, work)
    page = load_wrk(base, ["/api/tasks?limit=50"], 16, seconds, work)
    return (
        f"status {status['rps']:8.0f}/s p99 {status['p99_ms']:6.2f} ms | list50 {page['rps']:6.0f}/s"
        f" p99 {page['p99_ms']:6.2f} ms"
    )


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
            while task_worker(holder.process.pid, task_dir) is None:
                time.sleep(0.01)
            started = time.monotonic()
            urllib.request.urlopen(urllib.request.Request(f"{other.base}/api/tasks/{task_id}", method="DELETE"))
            while leftovers(holder.process.pid, task_dir):
                time.sleep(0.005)
            cancel_s.append(time.monotonic() - started)
        print(
            f"  cancel on one host -> download stopped on the other: median {statistics.median(cancel_s):.2f} s,"
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


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[float, str]:
    """Seconds to read the whole answer, and the host that answered (X-Served-By)."""
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=300, context=context) as answer:
        while answer.read(1 << 20):
            pass
        return time.monotonic() - started, answer.headers["X-Served-By"]


def balancer(work: Path, cert: Path, servers: list[Service], name: str) -> tuple[str, dict]:
    """The haproxy role's configuration (its template, tests/support/haproxy.py) for these local hosts, on free
    ports: plain HTTP to them, the role's HTTPS frontend with a throwaway CA's certificate. Its base URL and values."""
    folder = work / name
    folder.mkdir()
    port = free_port()
    backends = [{"name": s.env["VIDEO_API_NODE_ID"], "address": "127.0.0.1", "port": s.port} for s in servers]
    return f"https://127.0.0.1:{port}", local_values(folder, cert, port, free_port(), backends)


def bench_download(work: Path, server: PostgresServer, media: MediaServer, big_mb: int) -> None:
    print(f"== A {big_mb} MB file: from its host, through HAProxy (the haproxy role's config), through the other host")
    big = big_file(media, big_mb)
    url = server.url(server.create_database())
    ca = TestCA.create(work)
    cert, _key, _serial = ca.issue(work)
    tls = ssl.create_default_context(cafile=str(ca.path))
    with host(work, "d-a", url) as a, host(work, "d-b", url) as b:
        task_id = submit(a.base, media.url(f"/media/{big.name}"), extract_audio=False)
        while (done := status(a.base, task_id))["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        holder = owner(task_id, a, b)
        other = b if holder is a else a
        link = done["files"]["video"]
        # Both hosts behind HAProxy: its pick alternates (roundrobin), the rule of the file's id sends every
        # request to the holder. The reference: the same configuration with the holder alone, where every
        # request lands on the host holding the file as balanced.
        routed_base, routed = balancer(work, cert, [a, b], "haproxy-both")
        alone_base, alone = balancer(work, cert, [holder], "haproxy-holder")
        # Before the rules, a download balanced to the other host took this path: HAProxy, then that host,
        # which streams the file from the holder.
        other_base, other_only = balancer(work, cert, [other], "haproxy-other")
        sides = {"direct": [], "alone": [], "routed": [], "other": [], "proxied": []}
        served_by = []
        with (
            haproxy.running(render_config(**routed), work / "haproxy-both", routed["haproxy_https_port"]),
            haproxy.running(render_config(**alone), work / "haproxy-holder", alone["haproxy_https_port"]),
            haproxy.running(render_config(**other_only), work / "haproxy-other", other_only["haproxy_https_port"]),
        ):
            for _ in range(6):  # alternating rounds, so a slower moment of the machine hits every side
                sides["direct"].append(fetch(holder.base + link)[0])
                sides["alone"].append(fetch(alone_base + link, tls)[0])
                seconds, by = fetch(routed_base + link, tls)
                sides["routed"].append(seconds)
                served_by.append(by)
                sides["other"].append(fetch(other_base + link, tls)[0])
                sides["proxied"].append(fetch(other.base + link)[0])
        size_mb = big.stat().st_size / (1 << 20)
        best = {side: min(times) for side, times in sides.items()}
        rate = {side: size_mb / seconds for side, seconds in best.items()}
        by_holder = served_by.count(holder.env["VIDEO_API_NODE_ID"])
        lines = [
            ("from its host, no HAProxy", rate["direct"], ""),
            ("HAProxy, the holder its only server", rate["alone"], "the reference"),
            (
                "HAProxy, both hosts (routed)",
                rate["routed"],
                f"{rate['routed'] / rate['alone']:.2f}x the reference (aim >= 0.95x);"
                f" answered by the holder {by_holder} of {len(served_by)}",
            ),
            (
                "HAProxy, the other host its only server",
                rate["other"],
                f"{rate['other'] / rate['alone']:.2f}x the reference (proxied: a download balanced there before)",
            ),
            (
                "straight to the other host (proxied)",
                rate["proxied"],
                f"{rate['proxied'] / rate['direct']:.2f}x from its host",
            ),
        ]
        for label, mb_s, note in lines:
            print(f"  {label:<40} {mb_s:6.0f} MB/s" + (f" | {note}" if note else ""))
        print(f"  (best of {len(served_by)} alternating rounds; HAProxy {haproxy.version()})")


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
