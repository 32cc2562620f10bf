"""The cost of being monitored: the service's request rate with Prometheus scraping its /metrics and
without, side by side in one run (prints figures; not a test):

    .venv/bin/python bench/monitoring_bench.py [--tasks 10000] [--seconds 10] [--rounds 3] [--connections 32]
                                               [--intervals 5,1]

scrape 5s   GET /api/status/<id>, wrk keep-alive (one thread, --connections), to one service on SQLite with
            --tasks stored tasks, while one Prometheus scrapes the service's /metrics every 5 s (the
            interval the Ansible role sets), against the same load with no scraping: req/s, p99,
            scraped/not (the issue's aim: no measurable cost). Each scrape counts the tasks by status
            and the kept bytes in the database, lists the backups and renders every family
scrape 1s   the same with a scrape every second: a stress figure, five times the intended rate

One Prometheus (Debian's 2.42, run here in the foreground from a temporary config, its TSDB in a
temporary folder, listening on a loopback port; never the system service) runs through the whole
bench; each round switches its scraping on or off by rewriting the config and sending SIGHUP, and
waits until its target list shows the change. So both sides have Prometheus running and the
difference is the scraping alone: the service rendering /metrics, and Prometheus fetching, parsing
and storing it on the same cores. The scrapes within each measured window are counted by the
service's own video_api_http_requests_total{route="/metrics"} (read before and after the window);
Prometheus's count of the scrapes it stored and that every one of them was up (up == 1) are queried
from its API. The size of a /metrics body, its time on an idle service (median of 100 fetches) and
the service's CPU time a fetch (from /proc/<pid>/stat; the machine's other load does not stretch it,
so it bounds the cost where the rates cannot) are measured directly; scrape_duration_seconds is
Prometheus's own figure, taken under the load. Prometheus's RSS (VmRSS) at the end is the memory of a
monitoring host scraping one service (the per-fleet figure comes from the Molecule scenario).

Each comparison alternates not scraped and scraped --rounds times after a 1 s warm-up each and keeps
each side's best round; the range of the rounds' ratios shows how much the machine's other load
moved them. Service, Prometheus and wrk share this machine's 2 cores, so the rates are floors and
the ratios are what to read.

Here, 2026-12-07, `.venv/bin/python bench/monitoring_bench.py` (defaults, 2 min 44 s), load average 9.1
at the start and 4.7 at the end (other sessions' test suites and Molecule runs on the same 2 cores):

    monitoring_bench: 10,000 tasks; wrk 1 thread, 32 connections, 10 s a measurement, best of 3 alternating
      rounds; Prometheus 2.42.0+ds; load average 9.13
      /metrics: 8,172 bytes, 4.0 ms a fetch on the idle service (median of 100), 3.6 ms of its CPU a fetch:
        0.07% of a core at 5 s, 0.36% at 1 s
      Prometheus RSS idle, no target yet: 43.0 MiB
      scrape 5s   not  1574 req/s p99  62.12 ms | scraped  1538 req/s p99  50.68 ms | 0.98x (rounds 0.93-1.22x),
                  p99 0.82x
                  2/2/2 scrapes in the scraped windows (service's count); Prometheus stored 6 scrapes over the
                  comparison, 6 up, up == 1 at the end
                  scrape_duration_seconds under load: mean 86.7 ms, max 160.9 ms; 88 samples a scrape
      scrape 1s   not  2232 req/s p99  52.22 ms | scraped  2260 req/s p99  57.00 ms | 1.01x (rounds 0.92-1.49x),
                  p99 1.09x
                  10/10/10 scrapes in the scraped windows (service's count); Prometheus stored 31 scrapes over
                  the comparison, 31 up, up == 1 at the end
                  scrape_duration_seconds under load: mean 47.4 ms, max 280.2 ms; 88 samples a scrape
      Prometheus RSS at the end, after scraping one service: 49.6 MiB; TSDB 43 KiB; its CPU over the run 0.7 s
    load average at the end 4.73

(lines wrapped for width). No measurable cost at 5 s, nor at 1 s: the best rounds are within 2% of
each other and the rounds' ratios spread over 0.92-1.49x, so this machine's other load moves the rate
by far more than scraping does. Two earlier runs the same morning, at load 3-11, gave 1.22x and 0.61x
at 5 s and 0.89x and 1.26x at 1 s, with every scrape counted as here: at this load the rates cannot
resolve a cost of a few percent either way. The CPU figure bounds it instead: 3.6 ms of the
service's CPU a scrape (a new connection each, so a little more than Prometheus's kept one) is 0.07%
of one core at 5 s and 0.36% at 1 s. scrape_duration_seconds under load (tens of ms) is the scrape
waiting its turn behind 32 busy connections, not work: idle, a scrape takes 4 ms. Prometheus itself
holds about 50 MiB after scraping one service for two minutes (43 MiB before the first scrape).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from service_bench import Service, fill_store, load_wrk, rss_kb, side_by_side  # noqa: E402

from tests.support.helpers import free_port  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"
JOB = "service"

SCRAPE_CONFIG = """
scrape_configs:
  - job_name: {job}
    scrape_interval: {interval}s
    scrape_timeout: {interval}s
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


class Prometheus:
    """One Prometheus in the foreground scraping nothing until scrape() says an interval."""

    def __init__(self, work: Path, target: str) -> None:
        self.work, self.target = work, target
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = work / "prometheus.yml"
        self.log = work / "prometheus.log"
        self.interval: float | None = None

    def _write(self, interval: float | None) -> None:
        text = "global:\n  scrape_interval: 15s\n"
        if interval is not None:
            text += SCRAPE_CONFIG.format(job=JOB, interval=f"{interval:g}", target=self.target)
        self.config.write_text(text)

    def __enter__(self) -> "Prometheus":
        self._write(None)
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=output,
                stderr=output,
            )
        try:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(f"prometheus exited ({self.process.returncode}): {self.log.read_text()}")
                try:
                    urllib.request.urlopen(self.base + "/-/ready", timeout=1).read()
                    return self
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError("prometheus was not ready")
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        answer = json.loads(urllib.request.urlopen(url, timeout=10).read())
        if answer["status"] != "success":
            raise RuntimeError(f"{url}: {answer}")
        return answer["data"]

    def query(self, expression: str) -> float:
        """The value of a query that yields one series (NaN if none)."""
        result = self.api("query", query=expression)["result"]
        return float(result[0]["value"][1]) if result else float("nan")

    def scrape(self, interval: float | None) -> None:
        """Scrape the service every interval seconds (None: not at all), and wait until the target
        list says so."""
        if interval == self.interval:
            return
        self._write(interval)
        self.process.send_signal(signal.SIGHUP)
        wanted = [] if interval is None else [f"{interval:g}s"]
        for _ in range(200):
            targets = self.api("targets", state="active")["activeTargets"]
            if [target["scrapeInterval"] for target in targets] == wanted:
                self.interval = interval
                return
            time.sleep(0.05)
        raise RuntimeError(f"prometheus did not switch to scraping every {interval} s: {self.log.read_text()}")


def metrics_scrapes(base: str) -> int:
    """The service's count of /metrics requests answered (this one is counted after it is rendered)."""
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("video_api_http_requests_total{") and 'route="/metrics"' in line
    )


def compare(prometheus: Prometheus, service: Service, interval: float, status: list[str], args, work: Path) -> None:
    """Not scraped and scraped every interval seconds in alternation for --rounds rounds; prints the
    best round of each side, the range of the rounds' ratios, and what Prometheus saw."""
    started = time.time()
    for side in (None, interval):
        prometheus.scrape(side)
        load_wrk(service.base, status, args.connections, 1, work)
    rounds, scrapes = [], []
    for _ in range(args.rounds):
        prometheus.scrape(None)
        without = load_wrk(service.base, status, args.connections, args.seconds, work)
        prometheus.scrape(interval)
        before = metrics_scrapes(service.base)
        scraped = load_wrk(service.base, status, args.connections, args.seconds, work)
        scrapes.append(metrics_scrapes(service.base) - before - 1)  # less the read of `before`
        rounds.append((without, scraped))
    up = prometheus.query(f'up{{job="{JOB}"}}')
    prometheus.scrape(None)
    span = f"{int(time.time() - started) + 1}s"
    stored = prometheus.query(f'count_over_time(up{{job="{JOB}"}}[{span}])')
    good = prometheus.query(f'sum_over_time(up{{job="{JOB}"}}[{span}])')
    mean_ms = 1000 * prometheus.query(f'avg_over_time(scrape_duration_seconds{{job="{JOB}"}}[{span}])')
    max_ms = 1000 * prometheus.query(f'max_over_time(scrape_duration_seconds{{job="{JOB}"}}[{span}])')
    samples = prometheus.query(f'last_over_time(scrape_samples_scraped{{job="{JOB}"}}[{span}])')

    print(f"  scrape {interval:g}s   {side_by_side(rounds, ('not', 'scraped'))}")
    print(
        f"              {'/'.join(map(str, scrapes))} scrapes in the scraped windows (service's count);"
        f" Prometheus stored {stored:.0f} scrapes over the comparison, {good:.0f} up, up == {up:.0f} at the end"
    )
    print(
        f"              scrape_duration_seconds under load: mean {mean_ms:.1f} ms, max {max_ms:.1f} ms;"
        f" {samples:.0f} samples a scrape"
    )
    if up != 1 or stored != good or not all(scrapes):
        raise RuntimeError("Prometheus did not scrape the service as configured")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_scrape(service: Service, fetches: int = 100) -> tuple[int, float, float]:
    """The size of a /metrics body, the median time of fetches on the idle service and the service's
    CPU time per fetch (its own figure: other load on the machine stretches the time, not this)."""
    times, size = [], 0
    cpu = cpu_seconds(service.process.pid)
    for _ in range(fetches):
        started = time.perf_counter()
        size = len(urllib.request.urlopen(service.base + "/metrics", timeout=10).read())
        times.append(time.perf_counter() - started)
    cpu_ms = 1000 * (cpu_seconds(service.process.pid) - cpu) / fetches
    return size, 1000 * statistics.median(times), cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per comparison")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--intervals", default="5,1", help="scrape intervals to compare, seconds")
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", PROMETHEUS) if shutil.which(tool) is None]
    if missing:
        sys.exit(f"monitoring_bench: not installed: {' '.join(missing)} (Debian: apt-get install -y wrk prometheus)")
    # A kill of the bench unwinds the with-blocks below, so the service and Prometheus stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="vda-monitoring-bench-") as tmp:
        work = Path(tmp)
        ids = fill_store(work / "data" / "db" / "tasks.sqlite3", args.tasks)
        status = [f"/api/status/{task_id}" for task_id in ids]
        version = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True).stdout.split()[2]
        print(
            f"monitoring_bench: {args.tasks:,} tasks; wrk 1 thread, {args.connections} connections,"
            f" {args.seconds:g} s a measurement, best of {args.rounds} alternating rounds; Prometheus {version};"
            f" load average {os.getloadavg()[0]:.2f}"
        )
        with Service(work / "data") as service, Prometheus(work, service.base.removeprefix("http://")) as prometheus:
            load_wrk(service.base, status, args.connections, 1, work)  # so /metrics has its request families
            size, idle_ms, cpu_ms = idle_scrape(service)
            print(
                f"  /metrics: {size:,} bytes, {idle_ms:.1f} ms a fetch on the idle service (median of 100),"
                f" {cpu_ms:.1f} ms of its CPU a fetch: {cpu_ms / 50:.2f}% of a core at 5 s, {cpu_ms / 10:.2f}% at 1 s"
            )
            print(f"  Prometheus RSS idle, no target yet: {rss_kb(prometheus.process.pid) / 1024:.1f} MiB")
            for interval in (float(text) for text in args.intervals.split(",")):
                compare(prometheus, service, interval, status, args, work)
            print(
                f"  Prometheus RSS at the end, after scraping one service: {rss_kb(prometheus.process.pid) / 1024:.1f}"
                f" MiB; TSDB {sum(f.stat().st_size for f in (work / 'tsdb').rglob('*') if f.is_file()) / 1024:.0f} KiB;"
                f" its CPU over the run {cpu_seconds(prometheus.process.pid):.1f} s"
            )
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
