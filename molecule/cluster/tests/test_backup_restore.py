"""Backups of the fleet's PostgreSQL (docs/backups.md) on the converged cluster: restore.yml refuses
without confirmation, a repository that is down fails the role's check by name, and the restore drill
(a point in time, then the end of the timeline it left) through the load balancer."""

import json
import time

from conftest import API_HOSTS, BACKUP, DB, PROJECT, SERVICE, TERMINAL, docker, run_playbook

STANZA = "video_api"
PG_DATA = "/var/lib/postgresql/15/main"
RESTORE = str(PROJECT / "playbooks" / "restore.yml")


def postgres(command):
    return docker(DB, f"runuser -u postgres -- {command}")


def completed_tasks(client, media, count):
    task_ids = [client.submit(f"{media}/clip.mp4") for _ in range(count)]
    for task_id in task_ids:
        task = client.wait_until(task_id, TERMINAL, 120)
        assert task and task["status"] == "completed", task
    return task_ids


def test_restore_refuses_without_confirmation():
    result, report = run_playbook(RESTORE, check=False)
    assert result.returncode != 0
    assert "restore_confirm=yes" in result.stdout
    # The refusal is the first play's only task; no host was contacted, let alone changed.
    assert [play["play"]["name"] for play in report["plays"]] == ["Refuse to restore without confirmation"]
    for host in API_HOSTS:
        assert docker(host, f"systemctl is-active {SERVICE}") == "active"
    assert docker(DB, "systemctl is-active postgresql@15-main") == "active"


def test_a_repository_that_is_down_fails_the_check_by_name():
    docker(BACKUP, "systemctl stop pgbackrest-server")
    try:
        result, _ = run_playbook(
            str(PROJECT / "playbooks" / "site.yml"), "--tags=pgbackrest_stanza", f"--limit={DB},{BACKUP}", check=False
        )
        assert result.returncode != 0
        assert f"the repository on {BACKUP}" in result.stdout, result.stdout[-3000:]
        # The metrics say so too: the repository is down, the last backup (carried over) only ages.
        docker(DB, "systemctl start video-api-backup-metrics.service")
        metrics = docker(DB, "cat /var/lib/prometheus/node-exporter/video_api_backup.prom")
        assert "video_api_backup_repository_up 0" in metrics, metrics
        assert 'video_api_backup_last_success_timestamp_seconds{type="full"}' in metrics, metrics
    finally:
        docker(BACKUP, "systemctl start pgbackrest-server")
    docker(DB, "systemctl start video-api-backup-metrics.service")
    metrics = docker(DB, "cat /var/lib/prometheus/node-exporter/video_api_backup.prom")
    assert "video_api_backup_repository_up 1" in metrics, metrics
    assert 'video_api_backup_last_success_timestamp_seconds{type="full"}' in metrics, metrics


def test_the_restore_drill(client, media):
    tasks_a = completed_tasks(client, media, 2)
    run_playbook(str(PROJECT / "playbooks" / "backup.yml"), "-e", "backup_type=full")
    full = json.loads(postgres(f"pgbackrest --stanza={STANZA} --output=json info"))[0]["backup"][-1]
    assert full["type"] == "full", full
    tasks_b = completed_tasks(client, media, 2)

    time.sleep(1)
    now = "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS+00')"
    target = postgres(f'psql -XAtq -d postgres -c "{now}"')
    time.sleep(1)
    (task_c,) = completed_tasks(client, media, 1)
    # The WAL of C in the repository, as by a disk lost just after archiving (check switches and waits).
    postgres(f"pgbackrest --stanza={STANZA} check")

    docker(DB, f"systemctl stop postgresql@15-main && rm -rf {PG_DATA}")
    run_playbook(RESTORE, "-e", "restore_confirm=yes", "-e", f"restore_target_time='{target}'")

    for task_id in tasks_a + tasks_b:
        task = client.status(task_id)
        assert task["status"] == "completed", task
        # The files are on their API host (200), or the restored record says honestly they are gone (410).
        for url in (item["url"] for item in task["files"]["items"]):
            assert client.get(url).status_code in (200, 410), url
    assert client.get(f"/api/status/{task_c}").status_code == 404
    assert docker(DB, f"ls {PG_DATA}/recovery.signal {PG_DATA}/standby.signal 2>/dev/null || true") == ""
    (task_d,) = completed_tasks(client, media, 1)

    # The end of the timeline the point-in-time restore left: C is back (D, after it, is not).
    run_playbook(
        RESTORE,
        "-e",
        "restore_confirm=yes",
        "-e",
        f"restore_set={full['label']}",
        "-e",
        "restore_target_timeline=current",
    )
    assert client.status(task_c)["status"] == "completed"
    assert client.get(f"/api/status/{task_d}").status_code == 404
    assert all(client.status(task_id)["status"] == "completed" for task_id in tasks_a + tasks_b)
