"""Helpers of the service's tests: settings and the store under test, the real service as a
process, submitting and waiting, and looking at processes. Fixtures are in conftest.py."""

import asyncio
import atexit
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from app.settings import Settings
from tests.support.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
# The only network the service may reach in tests; 127.0.0.2 stands for every blocked address.
TEST_ALLOW = "127.0.0.1/32"
FINAL = ("completed", "failed", "cancelled")
# VIDEO_API_TEST_STORE=postgresql runs the suite on the PostgreSQL task store (`make pytest` does
# both): every data folder under test gets its own database on one throwaway server.
ON_POSTGRES = os.environ.get("VIDEO_API_TEST_STORE") == "postgresql"
CLUSTER_SECRET = "cluster-secret-for-tests-0123456789"
_databases: dict[Path, str] = {}


def store_settings(data_dir: Path) -> dict:
    """Settings fields of the store under test for a service keeping its data in data_dir."""
    if not ON_POSTGRES:
        return {}
    if not _databases:
        server = PostgresServer().start()
        atexit.register(server.stop)
        _databases[Path()] = server  # the server itself, kept with the databases it holds
    server = _databases[Path()]
    if data_dir not in _databases:
        _databases[data_dir] = server.url(server.create_database())
    return {"database_url": _databases[data_dir], "cluster_secret": CLUSTER_SECRET}


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "data_dir": tmp_path / "data",
        "allow_networks": (ipaddress.ip_network(TEST_ALLOW),),
        "min_free_mb": 1,
        **overrides,
    }
    return Settings(**store_settings(values["data_dir"]), **values)


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
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-show_chapters", "-of", "json", str(path)],
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


def host_pids(service_pid: int) -> list[int]:
    """The service's download hosts (app/tasks/host.py): children of the service running app.tasks.host."""
    pids = []
    for child in children_of(service_pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"app.tasks.host" in cmdline:
            pids.append(child)
    return pids


def _open_files(pid: int) -> list[str]:
    try:
        return [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return []


def task_worker(service_pid: int, task_dir: Path) -> int | None:
    """The process that has a file of task_dir open (the download host, writing its .part file), if any."""
    for pid in host_pids(service_pid):
        if any(target.startswith(str(task_dir) + "/") for target in _open_files(pid)):
            return pid
    return None


def leftovers(service_pid: int, folder: Path) -> list[str]:
    """What the service's download hosts still run or hold of folder: its files open, child processes (FFmpeg)."""
    found = []
    for pid in host_pids(service_pid):
        found += [f"host {pid} has {target} open" for target in _open_files(pid) if target.startswith(f"{folder}/")]
        found += [f"host {pid} runs {child}" for child in children_of(pid)]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trusting(ca: Path) -> requests.Session:
    """A client that verifies servers against ca only (REQUESTS_CA_BUNDLE and the like ignored)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca)
    return session


class ServiceProcess:
    """The real service, `python -m app`, as a subprocess (for restart, SIGTERM and kill -9)."""

    def __init__(self, data_dir: Path, *args: str, trust: Path | None = None, **env):
        """trust: the CA file this test client verifies the service's certificate with (HTTPS)."""
        self.args = args
        self.port = int(env.get("PORT") or free_port())  # PORT=: a restart on the same address
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "VIDEO_API_DATA_DIR": str(data_dir),
            "VIDEO_API_ALLOW_NETWORKS": TEST_ALLOW,
            "VIDEO_API_MIN_FREE_MB": "1",
            **{f"VIDEO_API_{name.upper()}": value for name, value in store_settings(data_dir).items()},
            **env,
        }
        self.process = None
        scheme = "https" if self.env.get("VIDEO_API_TLS_CERT_FILE") else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.http = requests.Session() if trust is None else trusting(trust)
        self.command = [sys.executable, "-m", "app", *args]  # a test may wrap it (e.g. in unshare)

    def start(self) -> "ServiceProcess":
        self.log = open(self.data_dir.parent / f"service-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        # A session of its own: kill() then reaches a wrapper's child too (faketime forks the service).
        self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.http.get(self.base + "/api/health", timeout=2)
                return self
            # A loaded machine may keep the first answer past the timeout: that is not a failed start.
            except (requests.ConnectionError, requests.Timeout):
                if self.process.poll() is not None:
                    self.kill()
                    raise AssertionError("service exited at start-up") from None
                time.sleep(0.1)
        self.kill()
        raise AssertionError("service did not start")

    def kill(self) -> None:
        """SIGKILL to the service and whatever it runs under (its session's process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 5  # the wrapper's child dies a moment after its SIGKILL
        while process_group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def get(self, path: str) -> dict:
        return self.http.get(self.base + path, timeout=10).json()

    def submit(self, url: str, **options) -> str:
        response = self.http.post(self.base + "/api/process", json={"url": url, **options}, timeout=10)
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
