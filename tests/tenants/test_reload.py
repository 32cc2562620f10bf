"""The running service re-reads the tenants file on SIGHUP and when it changes; a bad file keeps
the users read before. No token reaches a log line or the database."""

import os
import signal
import subprocess
import sys
import time

import psycopg

from app.tenants.tenants_file import Role, Tenant, token_digest, write
from tests.support.helpers import REPO, store_settings

OPS = "ops-admin-token-0123456789abcdef"
ALICE = "alice-user-token-0123456789abcd"
BOB = "bob-user-token-0123456789abcdef"


def users(**roles: Role) -> dict:
    tokens = {"ops": OPS, "alice": ALICE, "bob": BOB}
    return {name: Tenant(name, role, token_digest(tokens[name])) for name, role in roles.items()}


def answers(service, token: str, path: str = "/api/tasks") -> int:
    return service.http.get(service.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


def log_text(service) -> str:
    with open(service.log.name, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def stored_rows(service) -> str:
    """Every row of the service's task store as text: the SQLite files as they are on disk, or a
    dump of the PostgreSQL tables."""
    database_url = store_settings(service.data_dir).get("database_url")
    if database_url is None:
        files = (service.data_dir / "db").iterdir()
        return b"".join(path.read_bytes() for path in files if path.is_file()).decode("latin-1")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT t::text FROM tasks AS t UNION ALL SELECT f::text FROM files AS f").fetchall()
    return "\n".join(row[0] for row in rows)


def test_users_are_added_removed_and_re_roled_without_a_restart(service_factory, tmp_path, media_server):
    path = tmp_path / "tenants.toml"
    write(path, users(ops=Role.ADMIN, alice=Role.USER))
    service = service_factory(VIDEO_API_TENANTS_FILE=str(path), VIDEO_API_LOG_LEVEL="DEBUG")
    submitted = service.http.post(
        service.base + "/api/process",
        json={"url": media_server.url("/media/sample.mp4?reload=1"), "extract_audio": False},
        headers={"Authorization": f"Bearer {OPS}"},
        timeout=10,
    )
    assert submitted.status_code == 202, submitted.text
    ops_task = "/api/status/" + submitted.json()["task_id"]
    assert (answers(service, BOB), answers(service, ALICE, ops_task)) == (401, 404)

    # SIGHUP: bob added, alice made an admin.
    write(path, users(ops=Role.ADMIN, alice=Role.ADMIN, bob=Role.USER))
    os.kill(service.process.pid, signal.SIGHUP)
    eventually(lambda: answers(service, BOB) == 200, timeout=5)
    assert (answers(service, ALICE, ops_task), answers(service, BOB, ops_task)) == (200, 404)

    # Changed on disk, no signal: bob removed, alice a user again.
    write(path, users(ops=Role.ADMIN, alice=Role.USER))
    eventually(lambda: answers(service, BOB) == 401)
    assert answers(service, ALICE, ops_task) == 404

    # A broken file, by signal and by change: the users read before stay, the log says why.
    path.write_text('[users.alice]\nrole = "user"\ntoken_sha256 = "not-a-digest"\n')
    os.kill(service.process.pid, signal.SIGHUP)
    eventually(lambda: "tenants file not reloaded" in log_text(service))
    time.sleep(3)  # the watcher's next look finds nothing new to report
    assert (answers(service, ALICE), answers(service, OPS), answers(service, BOB)) == (200, 200, 401)
    refusals = [line for line in log_text(service).splitlines() if "tenants file not reloaded" in line]
    assert 1 <= len(refusals) <= 2 and all("token_sha256 must be 64 lowercase hex" in line for line in refusals)
    assert all("keeping its 2 users read before" in line for line in refusals)

    service.stop()
    stored, text = stored_rows(service), log_text(service)
    for token in (OPS, ALICE, BOB):
        assert token not in text and token not in stored


def test_a_service_does_not_start_with_a_bad_tenants_file(tmp_path):
    path = tmp_path / "tenants.toml"
    path.write_text(f'[users.alice]\nrole = "owner"\ntoken_sha256 = "{token_digest(ALICE)}"\n')
    env = {**os.environ, "VIDEO_API_TENANTS_FILE": str(path), "VIDEO_API_DATA_DIR": str(tmp_path / "data")}
    started = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert started.returncode == 2
    assert "configuration error" in started.stderr and 'role must be "admin" or "user"' in started.stderr
