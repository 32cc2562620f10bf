"""The cluster as a client sees it, through the load balancer: both API hosts answer, a download goes
straight to the host holding the file (a client reaching the other host directly gets it proxied), and a
task survives the death of its host."""

import json

import pytest
from conftest import API_HOSTS, LB, MEDIA_DIR, SERVICE, TERMINAL, address, docker, host_of, wait_for

from app.store.file_ids import node_tag


def test_both_api_hosts_answer(client):
    served_by = set()
    for _ in range(20):
        response = client.get("/api/tasks?limit=1")
        assert response.status_code == 200, response.text
        served_by.add(response.headers.get("X-Served-By"))
    assert served_by == set(API_HOSTS), served_by


# The owner's count of the GET /internal/files/ requests it answered, from its /metrics on its loopback: every
# download proxied by the other host is one (the service logs no requests, and the proxy logs only failures).
INTERNAL_FETCHES = (
    "python3 -c \"import urllib.request as u; print(u.urlopen('https://127.0.0.1:8000/metrics').read().decode())\""
    " | sed -n 's|^video_api_http_requests_total{.*route=\"/internal/files/{file_id}\".*} ||p'"
)
# From the load balancer (the API hosts' firewalls admit it, its trust store has the fleet CA): one download
# straight from an API host, its status, X-Served-By and length.
DIRECT_DOWNLOAD = r"""
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(request, timeout=60) as response:
    print(json.dumps([response.status, response.headers["X-Served-By"], len(response.read())]))
"""


def internal_fetches(host):
    return sum(float(count) for count in docker(host, INTERNAL_FETCHES).split())


@pytest.fixture(scope="module")
def downloaded(client, media):
    """A video downloaded by one host: its task, the file's link, the host holding it, its size."""
    task_id = client.submit(f"{media}/clip.mp4")
    task = client.wait_until(task_id, TERMINAL, 120)
    assert task and task["status"] == "completed", task
    (owner,) = host_of(task_id)
    size = int(docker(owner, f"stat -c %s {MEDIA_DIR}/{task_id}/*.mp4"))
    return task["files"]["video"], owner, size


def test_a_download_goes_straight_to_the_host_holding_the_file(client, downloaded):
    link, owner, size = downloaded
    # The id starts with its host's tag, which the load balancer's use-server rule for that host matches.
    assert link.rsplit("/", 1)[1].startswith(node_tag(owner)), (link, owner)
    before = internal_fetches(owner)
    answers = []
    for _ in range(20):
        response = client.get(link, timeout=60)
        assert response.status_code == 200, response.text
        answers.append((response.headers.get("X-Served-By"), len(response.content)))
    assert answers == [(owner, size)] * 20, answers
    # Not one of them went through the other host.
    assert internal_fetches(owner) == before


def test_a_download_from_the_other_host_directly_is_proxied(client, downloaded):
    link, owner, size = downloaded
    other = next(host for host in API_HOSTS if host != owner)
    token = client.session.headers["Authorization"].removeprefix("Bearer ")
    before = internal_fetches(owner)
    status, served_by, length = json.loads(
        docker(LB, f"python3 -c '{DIRECT_DOWNLOAD}' https://{address(other)}:8000{link} {token}")
    )
    assert (status, served_by, length) == (200, other, size)
    assert internal_fetches(owner) == before + 1


def test_a_task_completes_on_the_other_host_when_its_host_dies(client, media):
    task_id = client.submit(f"{media}/slow/clip.mp4?kill")
    assert client.wait_until(task_id, ("downloading",), 60), client.status(task_id)
    running = wait_for(lambda: host_of(task_id), 30)
    assert running and len(running) == 1, running
    (victim,) = running
    try:
        # SIGKILL (no clean stop), then keep it down so only the other host can finish the task.
        docker(victim, f"systemctl kill --signal=KILL {SERVICE} && systemctl stop {SERVICE}")
        task = client.wait_until(task_id, TERMINAL, 240)
        assert task and task["status"] == "completed", task
        survivor = next(host for host in API_HOSTS if host != victim)
        assert host_of(task_id) == [survivor] or survivor in host_of(task_id)
    finally:
        docker(victim, f"systemctl start {SERVICE}")
        assert wait_for(lambda: client.get("/api/tasks?limit=1").headers.get("X-Served-By") == victim, 60, 0.2)
