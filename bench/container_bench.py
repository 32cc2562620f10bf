"""The container image's figures: size by layer, build time cold and warm, start to healthy, idle RSS.

    .venv/bin/python bench/container_bench.py

Builds video-download-api:bench from the local Debian 12 base (BENCH_BASE_IMAGE, default
$MOLECULE_IMAGE_DEBIAN12 or video-api-molecule/debian:12), runs it hardened as the tests do, and
compares its idle memory with the service started directly on this host (`python -m app`).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.helpers import free_port  # noqa: E402

BASE = os.environ.get("BENCH_BASE_IMAGE", os.environ.get("MOLECULE_IMAGE_DEBIAN12", "video-api-molecule/debian:12"))
IMAGE = "video-download-api:bench"
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
STARTS = 5
IDLE_S = 5


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def build(*extra: str) -> float:
    started = time.monotonic()
    env = {**os.environ, "BASE_IMAGE": BASE, "IMAGE": IMAGE, "DOCKER_BUILD_ARGS": " ".join(extra)}
    subprocess.run(["bash", "molecule/build-service-image.sh"], cwd=REPO, check=True, capture_output=True, env=env)
    return time.monotonic() - started


def wait_health(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{url} not healthy in time")


def start_container(name: str) -> tuple[float, float]:
    """Seconds from `docker run` to the first 200 on /api/health, and to Docker's `healthy`."""
    port = free_port()
    started = time.monotonic()
    docker(
        "run",
        "-d",
        "--name",
        name,
        *HARDENED,
        "--health-interval",
        "100ms",
        "-p",
        f"127.0.0.1:{port}:8000",
        "-e",
        "VIDEO_API_MIN_FREE_MB=1",
        IMAGE,
    )
    wait_health(f"http://127.0.0.1:{port}/api/health", started + 30)
    answered = time.monotonic() - started
    while docker("inspect", "-f", "{{.State.Health.Status}}", name) != "healthy":
        time.sleep(0.02)
    return answered, time.monotonic() - started


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (the service and its download host)."""
    table = [
        line.split()
        for line in subprocess.run(
            ["ps", "-eo", "pid=,ppid=,rss="], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    ]
    tree, total, grew = {pid}, 0, True
    while grew:
        grew = False
        for child, parent, _ in table:
            if int(parent) in tree and int(child) not in tree:
                tree.add(int(child))
                grew = True
    for child, _, rss in table:
        if int(child) in tree:
            total += int(rss)
    return total


def main() -> None:
    cold = build("--no-cache")
    warm = build()
    print(f"build: cold (--no-cache, apt from the Debian mirror) {cold:.1f} s, warm (all cached) {warm:.1f} s")

    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE))
    base = int(docker("image", "inspect", "-f", "{{.Size}}", BASE))
    print(f"image: {size / 1e6:.0f} MB, of which base {BASE} {base / 1e6:.0f} MB, added {(size - base) / 1e6:.0f} MB")
    for line in docker("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE).splitlines():
        layer, _, command = line.partition("\t")
        if layer != "0B":
            print(f"  {layer:>8}  {' '.join(command.replace('/bin/sh -c ', '').split())[:100] or '(base image)'}")

    answered, healthy = [], []
    for index in range(STARTS):
        name = f"video-api-bench-{os.getpid()}-{index}"
        try:
            first, docker_healthy = start_container(name)
            answered.append(first)
            healthy.append(docker_healthy)
            if index == 0:
                time.sleep(IDLE_S)
                processes = docker("top", name, "-o", "pid,rss").splitlines()[1:]
                container_rss = sum(int(line.split()[1]) for line in processes)
                cgroup = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name)
        finally:
            subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)
    print(
        f"start to first 200 on /api/health: median {statistics.median(answered):.2f} s "
        f"(min {min(answered):.2f}, max {max(answered):.2f}, {STARTS} starts)"
    )
    print(f"start to Docker's 'healthy' (health interval 100 ms): median {statistics.median(healthy):.2f} s")

    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "VIDEO_API_DATA_DIR": data, "VIDEO_API_MIN_FREE_MB": "1"}
        service = subprocess.Popen(
            [str(REPO / ".venv/bin/python"), "-m", "app"], cwd=REPO, env=env, stderr=subprocess.DEVNULL
        )
        try:
            wait_health(f"http://127.0.0.1:{port}/api/health", time.monotonic() + 30)
            time.sleep(IDLE_S)
            host_rss = tree_rss_kib(service.pid)
        finally:
            service.terminate()
            service.wait(10)
    print(
        f"idle RSS after {IDLE_S} s: container {container_rss / 1024:.1f} MiB (all its processes, tini included; "
        f"cgroup {cgroup}), host `python -m app` {host_rss / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
