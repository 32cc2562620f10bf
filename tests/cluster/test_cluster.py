"""Several hosts, one API: service processes on one real PostgreSQL (different ports and node
ids, loopback). Submit on one, status, events, downloads and cancels on another; a host killed
mid-download: its task finishes elsewhere once the lease expires."""

import hashlib
import hmac
import http.server
import json
import re
import secrets
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from app.api.view_cache import MAX_AGE_S
from app.tenants.tenants_file import Role, Tenant, token_digest, write
from tests.support.certificates import TestCA
from tests.support.helpers import ServiceProcess, ffprobe, free_port, leftovers, task_worker
from tests.support.postgres import PostgresServer

SECRET = "cluster-secret-for-tests-0123456789"
LEASE_S = 3
SLOW = "/slow/noise.mp4?rate=150000"


@pytest.fixture
def hosts(tmp_path, postgres_url, service_factory):
    """start(name) -> a service host on the shared database."""

    def start(name: str, **env) -> ServiceProcess:
        port = free_port()
        data_dir = tmp_path / name / "data"
        data_dir.mkdir(parents=True)
        service = service_factory(
            data_dir=data_dir,
            PORT=str(port),
            VIDEO_API_DATABASE_URL=postgres_url,
            VIDEO_API_CLUSTER_SECRET=SECRET,
            VIDEO_API_NODE_ID=name,
            VIDEO_API_NODE_URL=f"{'https' if 'VIDEO_API_TLS_CERT_FILE' in env else 'http'}://127.0.0.1:{port}",
            VIDEO_API_LEASE_S=str(LEASE_S),
            VIDEO_API_RATE_PER_MINUTE="0",
            **env,
        )
        service.name = name
        return service

    return start


def owner_of(task_id: str, *services: ServiceProcess) -> ServiceProcess:
    """The host whose media folder holds the task: the one whose worker runs (or ran) it."""
    owners = [s for s in services if (s.data_dir / "media" / task_id).exists()]
    assert len(owners) == 1, [s.name for s in owners]
    return owners[0]


def read_events(base: str, task_id: str, timeout: float = 60) -> list[dict]:
    events, current = [], {}
    with requests.get(f"{base}/api/tasks/{task_id}/events", stream=True, timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines(decode_unicode=True):
            if not line:
                if "data" in current:
                    events.append({**current, "data": json.loads(current["data"])})
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def test_a_task_submitted_on_one_host_is_followed_and_fetched_on_another(hosts, media_server):
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&across=1"))
    seen_by = {requests.get(f"{host.base}/api/status/{task_id}", timeout=10).headers["X-Served-By"] for host in (a, b)}
    assert seen_by == {"a", "b"}
    events = read_events(b.base, task_id)
    assert events[-1]["data"]["status"] == "completed", events[-1]
    progress = [event["data"]["progress"] for event in events if event["event"] == "progress"]
    assert len([p for p in progress if 0 < p < 100]) >= 2, progress
    done = b.get(f"/api/status/{task_id}")
    owner = owner_of(task_id, a, b)
    other = b if owner is a else a
    # The other host streams the file from the owner, Range included.
    response = requests.get(other.base + done["files"]["video"], timeout=30)
    assert response.status_code == 200 and response.headers["X-Served-By"] == other.name
    on_disk = next((owner.data_dir / "media" / task_id).glob("video.*")).read_bytes()
    assert response.content == on_disk
    ranged = requests.get(other.base + done["files"]["video"], headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == on_disk[10:20]
    health = requests.get(other.base + "/api/health", timeout=10).json()
    assert health["cluster"]["nodes"] == ["a", "b"] and health["checks"]["database"]["latency_ms"] >= 0
    listing = requests.get(other.base + "/api/tasks", timeout=10).json()
    assert listing["counts"]["completed"] == 1 and listing["tasks"][0]["task_id"] == task_id


def test_a_cancel_on_another_host_stops_the_owners_download(hosts, media_server):
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&cancel=1"), extract_audio=False)
    a.wait(task_id, lambda s: s["status"] == "downloading" and s["progress"] > 0)
    owner = owner_of(task_id, a, b)
    other = b if owner is a else a
    task_dir = owner.data_dir / "media" / task_id
    assert task_worker(owner.process.pid, task_dir)
    started = time.monotonic()
    response = requests.delete(f"{other.base}/api/tasks/{task_id}", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    while leftovers(owner.process.pid, task_dir) and time.monotonic() - started < 5:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    print(f"cancel on {other.name} -> download on {owner.name} stopped in {elapsed:.2f} s")
    assert leftovers(owner.process.pid, task_dir) == []
    assert elapsed < 2.0
    assert owner.get(f"/api/status/{task_id}")["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while (owner.data_dir / "media" / task_id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (owner.data_dir / "media" / task_id).exists()


def test_a_host_killed_mid_download_leaves_its_task_to_another(hosts, media_server, tmp_path):
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&die=1"))
    a.wait(task_id, lambda s: s["status"] == "downloading" and s["progress"] > 5)
    owner = owner_of(task_id, a, b)
    survivor = b if owner is a else a
    owner.stop(signal.SIGKILL)
    done = survivor.wait(task_id, lambda s: s["status"] in ("completed", "failed"), timeout=90)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    saved = tmp_path / "fetched.mp4"
    saved.write_bytes(requests.get(survivor.base + done["files"]["video"], timeout=30).content)
    assert {stream["codec_type"] for stream in ffprobe(saved)["streams"]} == {"video", "audio"}


def _signed(secret: str, stamp: str, nonce: str, path: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{stamp}\n{nonce}\nGET\n{path}".encode(), hashlib.sha256).hexdigest()
    return {"X-Video-Api-Timestamp": stamp, "X-Video-Api-Nonce": nonce, "X-Video-Api-Signature": digest}


FORGERIES = ["unsigned", "wrong-secret", "stale", "future", "other-path", "no-nonce", "replayed"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_the_internal_endpoint_refuses_forged_stale_future_or_replayed_signatures(hosts, forgery):
    (a,) = (hosts("a"),)
    path = "/internal/files/0123456789abcdef0123456789abcdef"
    stamp = str(int(time.time()) + {"stale": -120, "future": 25}.get(forgery, 0))
    secret = "another-secret-0123456789abcdef" if forgery == "wrong-secret" else SECRET
    signed = "/internal/files/ffffffffffffffffffffffffffffffff" if forgery == "other-path" else path
    nonce = "" if forgery == "no-nonce" else secrets.token_hex(16)
    headers = {} if forgery == "unsigned" else _signed(secret, stamp, nonce, signed)
    if forgery == "replayed":  # seen on the wire once, answered, then sent again
        assert requests.get(a.base + path, headers=headers, timeout=10).status_code == 404
    response = requests.get(a.base + path, headers=headers, timeout=10)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    headers = _signed(SECRET, str(int(time.time())), secrets.token_hex(16), path)
    assert requests.get(a.base + path, headers=headers, timeout=10).status_code == 404  # signed: gets in


def test_files_cross_hosts_over_https_verified_against_the_fleet_ca(hosts, media_server, tmp_path):
    ca = TestCA.create(tmp_path / "ca")
    tls = {}
    for name in ("a", "b"):
        cert, key, _ = ca.issue(tmp_path / name / "tls")
        tls[name] = {"VIDEO_API_TLS_CERT_FILE": str(cert), "VIDEO_API_TLS_KEY_FILE": str(key)}
    a = hosts("a", trust=ca.path, VIDEO_API_TLS_CA_FILE=str(ca.path), **tls["a"])
    # b trusts another CA only: it must refuse a's certificate rather than fetch from it.
    stranger = TestCA.create(tmp_path / "stranger-ca", name="a stranger CA")
    b = hosts("b", trust=ca.path, VIDEO_API_TLS_CA_FILE=str(stranger.path), **tls["b"])
    # Whichever host runs a task, the other answers its download: submit until each has been the other.
    answers = {}
    for attempt in range(8):
        submitter = (a, b)[attempt % 2]
        task_id = submitter.submit(media_server.url(f"/media/sample.mp4?tls={attempt}"))
        done = submitter.wait(task_id, lambda s: s["status"] in ("completed", "failed"))
        assert done["status"] == "completed", done
        owner = owner_of(task_id, a, b)
        other = b if owner is a else a
        answer = other.http.get(other.base + done["files"]["video"], timeout=30)
        expected = owner.http.get(owner.base + done["files"]["video"], timeout=30).content
        answers[other.name] = (answer.status_code, answer.content == expected, answer.headers["Content-Type"])
        if len(answers) == 2:
            break
    assert answers["a"][:2] == (200, True)  # a trusts the fleet CA: the file arrives through it, verified
    assert answers["b"] == (503, False, "application/json")  # b refuses a certificate it cannot verify


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/process", {"url": "http://127.0.0.2/x.mp4"}, 422),
        ("POST", "/api/process", {"url": "http://127.0.0.1/x", "audio_bitrate": "²"}, 422),
        ("GET", "/api/tasks?limit=①", None, 422),
        ("GET", "/api/status/nope", None, 404),
    ],
)
def test_bad_input_is_as_strict_on_every_host(hosts, method, path, body, status):
    for host in (hosts("a"), hosts("b")):
        response = requests.request(method, host.base + path, json=body, timeout=10)
        assert response.status_code == status and set(response.json()) == {"error"}


def test_a_database_url_without_a_cluster_secret_stops_start_up(tmp_path, postgres_url):
    import subprocess
    import sys

    from tests.support.helpers import REPO

    env = {"PATH": "/usr/bin:/bin", "VIDEO_API_DATABASE_URL": postgres_url, "VIDEO_API_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "VIDEO_API_CLUSTER_SECRET" in result.stderr
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in result.stderr
    assert Path(tmp_path).exists()


def test_three_hosts_share_one_queue_and_see_each_other(hosts, media_server):
    a, b, c = hosts("a"), hosts("b"), hosts("c")
    ids = [
        host.submit(media_server.url(f"/media/sample.webm?three={n}"), extract_audio=False)
        for n, host in enumerate((a, b, c, a, b, c))
    ]
    finals = [c.wait(task_id, lambda s: s["status"] in ("completed", "failed")) for task_id in ids]
    assert [final["status"] for final in finals] == ["completed"] * 6
    owners = {owner_of(task_id, a, b, c).name for task_id in ids}
    print(f"6 tasks ran on hosts {sorted(owners)}")
    for host in (a, b, c):
        listing = requests.get(host.base + "/api/tasks", timeout=10).json()
        assert listing["counts"]["completed"] == 6 and listing["total"] == 6
        health = requests.get(host.base + "/api/health", timeout=10).json()
        assert health["cluster"] == {"node": host.name, "nodes": ["a", "b", "c"]}
        for final in finals:  # every file from every host
            assert requests.get(host.base + final["files"]["video"], timeout=30).status_code == 200


def test_each_final_status_is_called_back_once_across_hosts(hosts, media_server):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    a, b = (hosts(name, VIDEO_API_CALLBACK_SECRET=SECRET) for name in ("a", "b"))
    completed = a.submit(media_server.url("/media/sample.webm?hook=1"), extract_audio=False, callback_url=hook)
    cancelled = a.submit(media_server.url(SLOW + "&hook=2"), extract_audio=False, callback_url=hook)
    a.wait(cancelled, lambda s: s["status"] == "downloading")
    requests.delete(f"{b.base}/api/tasks/{cancelled}", timeout=10)
    b.wait(completed, lambda s: s["status"] == "completed")
    time.sleep(2 * LEASE_S / 3)  # time for a second, wrong delivery to show up
    receiver.shutdown()
    assert sorted((post["task_id"], post["status"]) for post in received) == sorted(
        [(completed, "completed"), (cancelled, "cancelled")]
    )


def test_a_host_whose_database_is_gone_answers_503(tmp_path):
    server = PostgresServer().start()  # its own server, so stopping it touches no other test
    url = server.url(server.create_database())
    (tmp_path / "data").mkdir()
    host = ServiceProcess(tmp_path / "data", VIDEO_API_DATABASE_URL=url, VIDEO_API_CLUSTER_SECRET=SECRET).start()
    try:
        assert requests.get(host.base + "/api/health", timeout=10).status_code == 200
        server.stop()
        deadline = time.monotonic() + 30
        while (health := requests.get(host.base + "/api/health", timeout=20)).status_code != 503:
            assert time.monotonic() < deadline, health.text
            time.sleep(0.5)
        assert health.json()["failing"] == ["database"]
        assert url.split(":")[2].split("@")[0] not in health.text  # no password in what it says
    finally:
        host.stop()
        server.stop()


def _item_ids(service: ServiceProcess, parent_id: str) -> list[str]:
    return [task["task_id"] for task in service.get(f"/api/tasks?parent_id={parent_id}&limit=500")["tasks"]]


def test_a_playlists_items_run_on_every_host_and_sum_up_on_each(hosts, media_server):
    a, b = hosts("a", VIDEO_API_MAX_CONCURRENT="1"), hosts("b", VIDEO_API_MAX_CONCURRENT="1")
    parent_id = a.submit(media_server.url("/playlist/4.html?src=/slow/sample.mp4"), extract_audio=False)
    events = read_events(b.base, parent_id)
    final = events[-1]["data"]
    assert final["status"] == "completed" and final["playlist"]["counts"]["completed"] == 4, final
    assert {event["data"]["task_id"] for event in events if event["event"] == "item"} == set(_item_ids(b, parent_id))
    items = _item_ids(a, parent_id)
    owners = {owner_of(item, a, b).name for item in items}
    assert owners == {"a", "b"}, owners
    assert a.get(f"/api/status/{parent_id}")["playlist"] == b.get(f"/api/status/{parent_id}")["playlist"]


def test_a_playlist_cancelled_on_one_host_stops_its_items_on_every_host(hosts, media_server):
    a, b = hosts("a", VIDEO_API_MAX_CONCURRENT="1"), hosts("b", VIDEO_API_MAX_CONCURRENT="1")
    parent_id = a.submit(media_server.url("/playlist/4.html?src=/slow/noise.mp4"), extract_audio=False)
    deadline = time.monotonic() + 30
    while True:
        running = [t for t in a.get(f"/api/tasks?parent_id={parent_id}")["tasks"] if t["status"] == "downloading"]
        if len(running) == 2 and all(t["downloaded_bytes"] for t in running):
            break
        assert time.monotonic() < deadline, running
        time.sleep(0.05)
    downloads = [
        (owner.process.pid, owner.data_dir / "media" / t["task_id"])
        for t in running
        for owner in [owner_of(t["task_id"], a, b)]
    ]
    assert all(task_worker(*download) for download in downloads)
    response = requests.delete(f"{b.base}/api/tasks/{parent_id}", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while any(leftovers(*download) for download in downloads) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(leftovers(*download) for download in downloads)
    assert {t["status"] for t in b.get(f"/api/tasks?parent_id={parent_id}")["tasks"]} == {"cancelled"}
    left = [(s.name, i) for s in (a, b) for i in _item_ids(a, parent_id)]
    while left := [(s, i) for s, i in left if ({"a": a, "b": b}[s].data_dir / "media" / i).exists()]:
        assert time.monotonic() < deadline + 5, (
            left,
            [
                (t["task_id"], t["attempts"], t["started_at"])
                for t in a.get(f"/api/tasks?parent_id={parent_id}")["tasks"]
            ],
            [r["task_id"] for r in running],
        )
        time.sleep(0.05)


def test_users_are_kept_apart_and_held_to_their_limits_across_hosts(hosts, media_server, tmp_path):
    tokens = {
        "ops": "ops-admin-token-0123456789abcdef",
        "alice": "alice-token-0123456789abcdef",
        "bob": "bob-token-0123456789abcdef01",
    }
    path = tmp_path / "tenants.toml"
    write(
        path,
        {
            "ops": Tenant("ops", Role.ADMIN, token_digest(tokens["ops"])),
            "alice": Tenant("alice", Role.USER, token_digest(tokens["alice"]), max_active_tasks=1),
            "bob": Tenant("bob", Role.USER, token_digest(tokens["bob"])),
        },
    )
    a, b = hosts("a", VIDEO_API_TENANTS_FILE=str(path)), hosts("b", VIDEO_API_TENANTS_FILE=str(path))

    def as_user(user, method, host, path, **kwargs):
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        return requests.request(method, host.base + path, headers=headers, timeout=30, **kwargs)

    alices = as_user("alice", "POST", a, "/api/process", json={"url": media_server.url(SLOW + "&user=alice")})
    assert alices.status_code == 202, alices.text
    alice_id = alices.json()["task_id"]
    # Her limit holds on the other host too: it is counted in the shared database.
    second = as_user("alice", "POST", b, "/api/process", json={"url": media_server.url("/media/sample.mp4?user=a2")})
    assert second.status_code == 429 and "max_active_tasks = 1" in second.json()["error"]["message"]
    bobs = as_user("bob", "POST", b, "/api/process", json={"url": media_server.url(SLOW + "&user=bob")})
    assert bobs.status_code == 202, bobs.text
    for host in (a, b):
        for method, route in (("GET", "/api/status/{}"), ("GET", "/api/tasks/{}/events"), ("DELETE", "/api/tasks/{}")):
            assert as_user("bob", method, host, route.format(alice_id)).status_code == 404, (host.name, route)
        listing = as_user("bob", "GET", host, "/api/tasks").json()
        assert [t["task_id"] for t in listing["tasks"]] == [bobs.json()["task_id"]] and listing["total"] == 1
        every = as_user("ops", "GET", host, "/api/tasks").json()
        assert {t["owner"] for t in every["tasks"]} == {"alice", "bob"}
    deadline = time.monotonic() + 90
    while (task := as_user("alice", "GET", b, f"/api/status/{alice_id}").json())["status"] != "completed":
        assert time.monotonic() < deadline and task["status"] not in ("failed", "cancelled"), task
        time.sleep(0.2)
    # Her file through either host (one of them fetches it from the other): hers, never bob's.
    for host in (a, b):
        assert as_user("alice", "GET", host, task["files"]["video"]).status_code == 200
        assert as_user("bob", "GET", host, task["files"]["video"]).status_code == 404


class _Reader(threading.Thread):
    """Reads a task's status on a host in a loop: (sent, answered, status) of every answer."""

    def __init__(self, host: ServiceProcess, task_id: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.done = f"{host.base}/api/status/{task_id}", [], threading.Event()

    def run(self):
        with requests.Session() as session:
            while not self.done.is_set():
                sent = time.monotonic()
                status = session.get(self.url, timeout=10).json()["status"]
                self.answers.append((sent, time.monotonic(), status))

    def after(self, moment: float) -> list[str]:
        """The statuses of the answers to requests sent after moment."""
        return [status for sent, _, status in self.answers if sent >= moment]


def _cached_on(host: ServiceProcess, task_id: str) -> int:
    """Reads the task on host until its view is answered from memory; returns the host's hits."""
    for _ in range(50):
        host.get(f"/api/status/{task_id}")
        text = requests.get(f"{host.base}/metrics", timeout=10).text
        hits = int(float(re.search(r"^video_api_view_cache_hits_total (\S+)$", text, re.M)[1]))
        if hits:
            return hits
        time.sleep(0.1)
    raise AssertionError(f"{task_id} never answered from memory on {host.name}")


def _cancel_and_read(writer: ServiceProcess, reader_host: ServiceProcess, task_id: str) -> tuple[float, list[str]]:
    """Cancels the task on writer while reader_host's status is read in a loop; returns the seconds
    from the cancel's answer to the first answer saying so on reader_host, and the statuses read
    after the cancel returned."""
    reader = _Reader(reader_host, task_id)
    reader.start()
    while not reader.answers:
        time.sleep(0.01)
    response = requests.delete(f"{writer.base}/api/tasks/{task_id}", timeout=10)
    returned = time.monotonic()
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    deadline = returned + 10
    while "cancelled" not in reader.after(returned) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # and a while more: it must stay so
    reader.done.set()
    reader.join()
    seen = [answered for sent, answered, status in reader.answers if sent >= returned and status == "cancelled"]
    assert seen, f"{reader_host.name} still answers {reader.after(returned)[-1]!r} 10 s after the cancel"
    return seen[0] - returned, reader.after(returned)


def test_a_change_on_one_host_is_never_answered_stale_by_another(hosts, media_server):
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&stale=1"), extract_audio=False)
    a.wait(task_id, lambda s: s["status"] == "downloading")
    _cached_on(b, task_id)
    delay, statuses = _cancel_and_read(a, b, task_id)
    print(f"cancel on a -> b answers it {delay * 1000:.1f} ms after a's answer; {len(statuses)} reads on b since")
    # Once b says cancelled it never says otherwise: no view from before the change comes back.
    first = statuses.index("cancelled")
    assert set(statuses[first:]) == {"cancelled"}, statuses
    # What b answered meanwhile came from a notification on its way, not from an old row kept.
    assert delay < 2.0, delay


def test_views_are_dropped_while_the_listener_is_cut_and_its_announcements_lost(hosts, media_server, postgres_url):
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&cut=1"), extract_audio=False)
    a.wait(task_id, lambda s: s["status"] == "downloading")
    hits = _cached_on(b, task_id)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (cut,) = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            ("video-api listener b",),
        ).fetchone()
    assert cut == 1
    # The cancel's announcement is sent while b is not listening (it reconnects a second later).
    delay, statuses = _cancel_and_read(a, b, task_id)
    assert set(statuses[statuses.index("cancelled") :]) == {"cancelled"}, statuses
    log = Path(b.log.name)
    deadline = time.monotonic() + 10
    while b"task announcements from other hosts resumed" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"task announcements from other hosts interrupted" in log.read_bytes()
    assert b.get(f"/api/status/{task_id}")["status"] == "cancelled"
    assert _cached_on(b, task_id) > hits  # answered from memory again once announcements are heard
    print(f"listener cut: b answered the missed cancel {delay * 1000:.1f} ms after a's answer")


def test_a_change_nobody_announced_reaches_other_hosts_views_within_their_age_limit(hosts, media_server, postgres_url):
    """A host killed between its write's commit and its announcement: the write stands, nobody hears
    of it. Written here straight into the database, no NOTIFY."""
    a, b = hosts("a"), hosts("b")
    task_id = a.submit(media_server.url(SLOW + "&untold=1"), extract_audio=False)
    a.wait(task_id, lambda s: s["status"] == "downloading")
    assert requests.delete(f"{a.base}/api/tasks/{task_id}", timeout=10).status_code == 200  # final: no more writes
    b.wait(task_id, lambda s: s["status"] == "cancelled")
    _cached_on(b, task_id)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET message = 'written, never announced' WHERE id = %s", (task_id,))
    written = time.monotonic()
    deadline = written + MAX_AGE_S + 5
    while b.get(f"/api/status/{task_id}")["message"] != "written, never announced":
        assert time.monotonic() < deadline, "b kept its view past its age limit"
        time.sleep(0.1)
    print(f"an unannounced change answered by b {time.monotonic() - written:.1f} s after its write")
