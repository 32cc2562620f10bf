"""Fixtures: a local media server with ffmpeg-generated files, and the service under test."""

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.config import Settings
from app.tests.mediaserver import MediaServer, generate_media
from app.web import create_app

REPO = Path(__file__).resolve().parents[2]
# The only network the service may reach in tests; 127.0.0.2 stands for every blocked address.
TEST_ALLOW = "127.0.0.1/32"
FINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="session")
def media_server(tmp_path_factory):
    server = MediaServer(generate_media(tmp_path_factory.mktemp("media"))).start()
    yield server
    server.stop()


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "data_dir": tmp_path / "data",
        "allow_networks": (ipaddress.ip_network(TEST_ALLOW),),
        "min_free_mb": 1,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
async def make_client(aiohttp_client, tmp_path):
    """Start the service in-process with Settings overrides; returns its test client."""

    async def start(**overrides):
        client = await aiohttp_client(create_app(make_settings(tmp_path, **overrides)))
        client.settings = make_settings(tmp_path, **overrides)
        return client

    return start


@pytest.fixture
async def client(make_client):
    return await make_client()


async def submit(client, url: str, **options) -> str:
    response = await client.post("/api/process", json={"url": url, **options})
    body = await response.json()
    assert response.status == 202, body
    return body["task_id"]


async def wait_status(client, task_id: str, statuses=FINAL, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/status/{task_id}")
        body = await response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {body['status']} after {timeout}s: {body}")
        await asyncio.sleep(0.05)


def ffprobe(path: Path) -> dict:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return json.loads(out)


def _live_processes():
    """(pid, ppid, pgrp) of every process that is not a zombie."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if state != "Z":
                yield int(entry.name), int(ppid), int(pgrp)


def process_group_members(pgid: int) -> list[int]:
    return [pid for pid, _, pgrp in _live_processes() if pgrp == pgid]


def children_of(parent: int) -> list[int]:
    return [pid for pid, ppid, _ in _live_processes() if ppid == parent]


def worker_pids(service_pid: int) -> list[int]:
    """Worker processes: children of the service's fork server (a child of the service)."""
    pids = []
    for child in children_of(service_pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline:
            pids.extend(children_of(child))
    return pids


def task_worker(service_pid: int, task_dir: Path) -> int | None:
    """The worker process that has a file of task_dir open (its .part file), if any."""
    for pid in worker_pids(service_pid):
        try:
            targets = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(target.startswith(str(task_dir) + "/") for target in targets):
            return pid
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """The real service, `python -m app`, as a subprocess (for restart, SIGTERM and kill -9)."""

    def __init__(self, data_dir: Path, *args: str, **env):
        self.args = args
        self.port = int(env.get("PORT") or free_port())  # PORT=: a restart on the same address
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "VIDEO_API_DATA_DIR": str(data_dir),
            "VIDEO_API_ALLOW_NETWORKS": TEST_ALLOW,
            "VIDEO_API_MIN_FREE_MB": "1",
            **env,
        }
        self.process = None
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "app", *args]  # a test may wrap it (e.g. in unshare)

    def start(self) -> "ServiceProcess":
        self.log = open(self.data_dir.parent / f"service-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.base + "/api/health", timeout=2)
                return self
            except requests.ConnectionError:
                assert self.process.poll() is None, "service exited at start-up"
                time.sleep(0.1)
        raise AssertionError("service did not start")

    def get(self, path: str) -> dict:
        return requests.get(self.base + path, timeout=10).json()

    def submit(self, url: str, **options) -> str:
        response = requests.post(self.base + "/api/process", json={"url": url, **options}, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()["task_id"]

    def wait(self, task_id: str, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(f"/api/status/{task_id}")
            if predicate(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last status {body}")
            time.sleep(0.05)

    def stop(self, signum=signal.SIGTERM, timeout: float = 30.0) -> float:
        """Send signum and wait for the exit; returns the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout)
        self.log.close()
        return time.monotonic() - started


@pytest.fixture
def service_factory(tmp_path):
    services = []

    def start(*args: str, **env) -> ServiceProcess:
        service = ServiceProcess(tmp_path / "data", *args, **env).start()
        services.append(service)
        return service

    yield start
    for service in services:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()
