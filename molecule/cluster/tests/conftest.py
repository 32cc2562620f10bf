"""Helpers of the cluster scenario: the containers by role, a client that talks to the load
balancer only (from the controller, over the scenario's Docker network, HTTPS verified against the
fleet CA), playbook runs."""

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509

sys.path.insert(0, str(Path(__file__).parents[2]))
from scenario_tools import PROJECT, changed_tasks, run_playbook, wait_for

# Re-exported: the tests import their helpers from conftest.
__all__ = ["PROJECT", "changed_tasks", "run_playbook", "wait_for"]

API_HOSTS = ("cluster-api1", "cluster-api2")
LB, DB = "cluster-lb", "cluster-db"
BACKUP, MONITOR = "cluster-backup", "cluster-monitor"
SERVICE = "video-download-api"
INSTALL_DIR = "/opt/video-download-api"
MEDIA_DIR = "/var/lib/video-download-api/media"
MEDIA_PORT = 8765
TERMINAL = ("completed", "failed", "cancelled")
# The fleet CA the tls_certificate role made on the controller, beside Molecule's inventory.
FLEET_CA = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / "credentials" / "tls" / "ca.crt")


def docker(container, command, check=True):
    result = subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{container}: {command}\n{result.stdout}{result.stderr}"
    return result.stdout.strip()


def address(container):
    return subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def fleet_context(version=None):
    """A client context that trusts the fleet CA only (and one TLS version, if given)."""
    context = ssl.create_default_context(cafile=FLEET_CA)
    if version:
        context.minimum_version = context.maximum_version = version
    return context


def handshake(context, server_hostname=LB, port=443):
    """A TLS handshake with the load balancer: the negotiated version and its certificate."""
    with (
        socket.create_connection((address(LB), port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        return tls.version(), x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def current_release(container):
    return docker(container, f"readlink {INSTALL_DIR}/current")


class Client:
    """The API through the load balancer over HTTPS (its certificate names its address too), with the
    cluster's one token."""

    def __init__(self):
        self.base = f"https://{address(LB)}"
        token = docker(API_HOSTS[0], "sed -n '/^[^#]/{p;q}' /etc/video-download-api/tokens")
        self.session = requests.Session()
        self.session.verify = FLEET_CA
        # Else REQUESTS_CA_BUNDLE in the environment would replace the fleet CA.
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path, **kwargs):
        return self.session.get(self.base + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path, payload):
        return self.session.post(self.base + path, json=payload, timeout=10)

    def submit(self, url):
        response = self.post("/api/process", {"url": url, "extract_audio": False, "keep_video": True})
        assert response.status_code == 202, response.text
        return response.json()["task_id"]

    def status(self, task_id):
        return self.get(f"/api/status/{task_id}").json()

    def wait_until(self, task_id, statuses, timeout):
        return wait_for(lambda: (task := self.status(task_id))["status"] in statuses and task, timeout)


class Load:
    """Status and list requests to the load balancer in a loop, and an SSE follower of one task
    that reconnects (Last-Event-ID) when a stream ends, as a browser's EventSource does."""

    def __init__(self, client, task_id):
        self.client, self.task_id = client, task_id
        self.requests, self.failures, self.served_by = 0, [], set()
        self.sse_last_status, self.sse_streams = None, 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.poll, daemon=True) for _ in range(2)]
        self.threads.append(threading.Thread(target=self.follow, daemon=True))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def record(self, what, response=None, error=None):
        self.requests += 1
        if error is not None or response.status_code != 200:
            self.failures.append(f"{what}: {error or response.status_code}")
        else:
            self.served_by.add(response.headers.get("X-Served-By"))

    def poll(self):
        paths = (f"/api/status/{self.task_id}", "/api/tasks?limit=5")
        while not self.stopping.is_set():
            for path in paths:
                try:
                    self.record(path, self.client.get(path))
                except requests.RequestException as error:
                    self.record(path, error=error)
            time.sleep(0.1)

    def follow(self):
        last_id = None
        while not self.stopping.is_set() and self.sse_last_status not in TERMINAL:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.client.get(
                    f"/api/tasks/{self.task_id}/events", headers=headers, stream=True, timeout=30
                ) as response:
                    self.record("events", response)
                    self.sse_streams += 1
                    for line in response.iter_lines(decode_unicode=True):
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line.startswith("data: "):
                            self.sse_last_status = json.loads(line[6:])["status"]
            except requests.RequestException:
                # A stream cut by a stopping host: reconnect, like EventSource.
                pass
            time.sleep(0.5)


@pytest.fixture(scope="session")
def client():
    return Client()


@pytest.fixture(scope="session")
def media():
    """A clip served on each API host's loopback (the task may run on either)."""
    source = Path(__file__).with_name("media_server.py")
    for host in API_HOSTS:
        subprocess.run(["docker", "cp", str(source), f"{host}:/usr/local/bin/molecule-media-server.py"], check=True)
        docker(
            host,
            "mkdir -p /srv/molecule-media && cd /srv/molecule-media && [ -s clip.mp4 ] ||"
            " ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=duration=30:size=640x360:rate=25"
            " -c:v libx264 -b:v 400k -pix_fmt yuv420p clip.mp4",
        )
        docker(
            host,
            f"setsid python3 /usr/local/bin/molecule-media-server.py {MEDIA_PORT} /srv/molecule-media"
            " >/tmp/molecule-media.log 2>&1 </dev/null & echo $! >/tmp/molecule-media.pid",
        )
        probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {MEDIA_PORT}))' && echo up"
        assert wait_for(lambda h=host, p=probe: docker(h, p, check=False) == "up", 10)
    yield f"http://127.0.0.1:{MEDIA_PORT}"
    for host in API_HOSTS:
        docker(host, "kill $(cat /tmp/molecule-media.pid)", check=False)


def host_of(task_id):
    """The API host whose media folder holds the task's files."""
    return [host for host in API_HOSTS if docker(host, f"test -d {MEDIA_DIR}/{task_id} && echo yes", check=False)]
