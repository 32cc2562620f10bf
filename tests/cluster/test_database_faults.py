"""A cluster that rides out its database: two hosts on a PostgreSQL server of their own, which each
test stops for 45 s, restarts, or whose connections it terminates while downloads run. Every answer
is 503 quickly or 200, never 500; no download fails; the schedulers resume; leases go by the
database's clock, so a host whose clock is off takes nothing from a host that renews."""

import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.helpers import ServiceProcess, free_port
from tests.support.postgres import PostgresServer

SECRET = "cluster-secret-for-tests-0123456789"
LEASE_S = 6
# About 12 s a download (noise.mp4 at 150 kB/s), so the faults land while both run.
SLOW = "/slow/noise.mp4?rate=150000"
FINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def database():
    server = PostgresServer().start()  # its own server: stopping it touches no other test
    server.dbname = server.create_database()
    yield server
    server.stop()


@pytest.fixture
def hosts(tmp_path, database, service_factory):
    """start(name, wrap=(), **env) -> a service host on the test's own database."""

    def start(name: str, wrap: tuple[str, ...] = (), **env) -> ServiceProcess:
        port = free_port()
        data_dir = tmp_path / name / "data"
        data_dir.mkdir(parents=True)
        settings = {
            "PORT": str(port),
            "VIDEO_API_DATABASE_URL": database.url(database.dbname),
            "VIDEO_API_CLUSTER_SECRET": SECRET,
            "VIDEO_API_NODE_ID": name,
            "VIDEO_API_NODE_URL": f"http://127.0.0.1:{port}",
            "VIDEO_API_LEASE_S": str(LEASE_S),
            "VIDEO_API_RATE_PER_MINUTE": "0",
            **env,
        }
        service = service_factory(data_dir=data_dir, wrap=wrap, **settings)
        service.name = name
        return service

    return start


class Poller:
    """Clients calling the hosts all along: every answer's status and time, until stopped."""

    def __init__(self, hosts: list[ServiceProcess], task_ids: list[str]):
        self.answers: list[tuple[str, int, float]] = []  # (path, status, seconds)
        self._stop = threading.Event()
        self._paths = [(host, f"/api/status/{task_id}") for host in hosts for task_id in task_ids]
        self._paths += [(host, "/api/tasks?limit=5") for host in hosts]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for host, path in self._paths:
                started = time.monotonic()
                try:
                    status = requests.get(host.base + path, timeout=10).status_code
                except requests.RequestException:
                    status = 0  # no answer at all
                self.answers.append((path, status, time.monotonic() - started))
            self._stop.wait(0.2)

    def bad(self) -> list[tuple[str, int, float]]:
        """Answers other than 200, or 503 within 2 s."""
        return [a for a in self.answers if not (a[1] == 200 or (a[1] == 503 and a[2] < 2.0))]


def logs(*services: ServiceProcess) -> str:
    return "".join(Path(service.log.name).read_text(errors="replace") for service in services)


def start_two_downloads(a: ServiceProcess, b: ServiceProcess, media_server, tag: str) -> list[str]:
    ids = [a.submit(media_server.url(f"{SLOW}&{tag}={n}"), extract_audio=False) for n in range(2)]
    for task_id in ids:
        a.wait(task_id, lambda s: s["status"] == "downloading" and s["progress"] > 0, timeout=30)
    return ids


def wait_final(host: ServiceProcess, task_id: str, timeout: float = 90) -> dict:
    return host.wait(task_id, lambda s: s["status"] in FINAL, timeout=timeout)


def health_back_within(hosts: list[ServiceProcess], seconds: float) -> float:
    """Seconds until every host answers health 200 (fails past `seconds`)."""
    started = time.monotonic()
    for host in hosts:
        while requests.get(host.base + "/api/health", timeout=10).status_code != 200:
            assert time.monotonic() - started < seconds, "health did not come back"
            time.sleep(0.1)
    return time.monotonic() - started


def test_a_45_s_outage_answers_503_fast_and_loses_no_download(hosts, database, media_server):
    a, b = hosts("a"), hosts("b")
    ids = start_two_downloads(a, b, media_server, "outage")
    with Poller([a, b], ids) as poller:
        database.halt()
        time.sleep(45)
        database.resume()
        back = health_back_within([a, b], 10)
    print(f"outage: {len(poller.answers)} answers, health back {back:.1f} s after the database")
    assert poller.bad() == [], poller.bad()[:10]
    assert any(status == 503 for _, status, _ in poller.answers)  # it did notice
    for task_id in ids:
        done = wait_final(a, task_id)
        assert (done["status"], done["attempts"]) == ("completed", 1), done
    # The schedulers resumed: a task submitted after the return completes on each host.
    time.sleep(10)
    for host in (a, b):
        task_id = host.submit(media_server.url(f"/media/sample.webm?after={host.name}"), extract_audio=False)
        assert wait_final(host, task_id, timeout=30)["status"] == "completed"
    text = logs(a, b)
    assert "Traceback" not in text, text[-3000:]
    assert text.count("database is unreachable") == 2 and text.count("database is reachable again") == 2, text[-3000:]


@pytest.mark.parametrize("polling", [True, False], ids=["clients-polling", "no-clients"])
@pytest.mark.parametrize("fault", ["restart", "terminate"])
def test_a_database_restart_or_killed_connections_fail_nothing(hosts, database, media_server, fault, polling):
    a, b = hosts("a"), hosts("b")
    ids = start_two_downloads(a, b, media_server, f"{fault}-{polling}")
    poller = Poller([a, b], ids if polling else [])
    with poller if polling else threading.Lock():
        if fault == "restart":
            database.restart()
        else:
            assert database.terminate_backends(database.dbname) > 0
        if not polling:
            time.sleep(5)  # nobody calls: the hosts' own loops meet the broken connections first
        back = health_back_within([a, b], 2)
        time.sleep(1)
    print(f"{fault}: health back in {back:.2f} s, {len(poller.answers)} answers")
    if fault == "terminate":  # the server stayed up: a fresh connection answers every call
        assert [a for a in poller.answers if a[1] != 200] == []
    else:  # the server is down for a moment during its restart: 503 then, quickly, never 500
        assert poller.bad() == [], poller.bad()[:10]
    for task_id in ids:
        done = wait_final(a, task_id)
        assert (done["status"], done["attempts"]) == ("completed", 1), done
    assert "Traceback" not in logs(a, b)


@pytest.mark.parametrize("offset", ["+120s", "-120s"])
def test_a_host_with_its_clock_off_takes_over_nothing(hosts, media_server, offset):
    normal = hosts("normal")
    skewed = hosts("skewed", wrap=("faketime", "-f", offset))
    ids = [normal.submit(media_server.url(f"{SLOW}&clock={offset}{n}"), extract_audio=False) for n in range(2)]
    finals = [wait_final(skewed, task_id) for task_id in ids]
    assert [(f["status"], f["attempts"]) for f in finals] == [("completed", 1)] * 2, finals
    # Files held by either host come through the other (the signature's clock is the database's).
    for final in finals:
        for host in (normal, skewed):
            assert requests.get(host.base + final["files"]["video"], timeout=30).status_code == 200


def test_a_task_queued_on_a_full_host_is_claimed_by_an_idle_one(hosts, media_server):
    full = hosts("full", VIDEO_API_MAX_CONCURRENT="1")
    busy = full.submit(media_server.url(f"{SLOW}&busy=1"), extract_audio=False)
    full.wait(busy, lambda s: s["status"] == "downloading")  # the only host yet: it is full now
    idle = hosts("idle")
    # Let the idle host's scheduler go quiet first: only a wake-up from elsewhere can start the task.
    time.sleep(2)
    submitted = time.monotonic()
    waiting = full.submit(media_server.url(f"{SLOW}&waiting=1"), extract_audio=False)
    status = full.wait(waiting, lambda s: s["status"] != "queued", timeout=10)
    claimed_after = time.monotonic() - submitted
    print(f"claimed by the idle host {claimed_after:.2f} s after the submit")
    assert status["status"] in ("downloading", "processing", "completed") and claimed_after < 2.0
    # Its worker, started a moment after the claim, writes on the idle host.
    deadline = time.monotonic() + 10
    while not (idle.data_dir / "media" / waiting).exists():
        assert time.monotonic() < deadline and not (full.data_dir / "media" / waiting).exists()
        time.sleep(0.05)
