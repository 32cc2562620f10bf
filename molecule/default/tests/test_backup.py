"""The SQLite restore drill on a converged host: tasks A, a backup (the timer's unit and
playbooks/backup.yml), tasks B, the database file lost, playbooks/restore.yml; A is back with its
file, B is 404, and the service takes new work. The role's task files alone: refused while the
service runs, and a dry run changes nothing."""

import re

from conftest import PROJECT, SERVICE, changed_tasks, run_playbook

DB = "/var/lib/video-download-api/db/tasks.sqlite3"
BACKUPS = "/var/lib/video-download-api/backups"
DRILL = str(PROJECT / "molecule" / "default" / "backup_drill.yml")
BACKUP_PLAYBOOK = str(PROJECT / "playbooks" / "backup.yml")
RESTORE_PLAYBOOK = str(PROJECT / "playbooks" / "restore.yml")


def drill(host, *arguments, check=True):
    result, report = run_playbook("--limit", host.backend.host, DRILL, *arguments, check=check)
    return result, report


def outputs(report, task_name):
    """The debug messages (or failure output) of the named task in a JSON report."""
    return [
        outcome
        for play in report["plays"]
        for task in play["tasks"]
        if task["task"]["name"].split(" : ")[-1] == task_name  # "video_api : Show the backup"
        for outcome in task["hosts"].values()
    ]


def test_the_timer_is_scheduled_on_a_sqlite_host(host):
    timer = host.service("video-api-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert "OnCalendar=daily" in host.file("/etc/systemd/system/video-api-backup.timer").content_string
    output = host.check_output("systemd-analyze security --no-pager video-api-backup.service")
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", output).group(1))
    assert exposure <= 2.0, exposure  # no network, no capabilities: tighter than the service's 4


def test_restore_drill(host, api, media):
    try:
        task_a = api.completed({"url": f"{media}?a"})

        host.check_output("systemctl start video-api-backup.service")  # oneshot: returns when done
        assert "backup /var/lib/video-download-api/backups/tasks-" in host.check_output(
            "journalctl -u video-api-backup.service -o cat -n 20"
        )
        _, report = run_playbook("--limit", host.backend.host, BACKUP_PLAYBOOK)
        shown = outputs(report, "Show the backup")[0]["msg"]
        assert re.fullmatch(rf"backup: {BACKUPS}/tasks-[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{6}}Z\.sqlite3", shown[0]), shown
        assert re.fullmatch(r"size: [0-9]+ bytes, [0-9]+ tasks", shown[1]), shown
        task_b = api.completed({"url": f"{media}?b"})

        refused, report = drill(host, "-e", "video_api_drill=restore", check=False)
        assert refused.returncode != 0
        assert "stop it first" in outputs(report, "Restore the task store")[0]["stderr"]

        # The database lost; restore.yml stops the service, restores, starts it behind the health gate.
        host.check_output(f"rm {DB}")
        _, report = run_playbook("--limit", host.backend.host, RESTORE_PLAYBOOK, "-e", "restore_confirm=yes")
        assert outputs(report, "Show the restore")[0]["msg"].startswith(f"restored {BACKUPS}/tasks-")
        assert api.get("/api/health")[0] == 200

        status, restored = api.get(f"/api/status/{task_a['task_id']}")
        assert status == 200 and restored["status"] == "completed" and restored["files"] == task_a["files"]
        assert api.get(task_a["files"]["video"], out="/tmp/molecule-backup-video")[0] == 200
        assert api.get(f"/api/status/{task_b['task_id']}")[0] == 404
        api.completed({"url": f"{media}?c"})
    finally:
        host.run("rm -f /tmp/molecule-backup-video")
        host.run(f"systemctl start {SERVICE}")  # the later tests need it, whatever failed here


def test_a_dry_run_of_the_drill_changes_nothing(host):
    for action in ("backup", "restore"):
        _, report = drill(host, "--check", "-e", f"video_api_drill={action}")
        assert changed_tasks(report) == [], action


def test_the_newest_backup_time_is_a_metric(host):
    host.check_output("systemctl start video-api-backup.service")
    text = host.check_output(
        "python3 -c \"import urllib.request as u; print(u.urlopen('https://127.0.0.1:8000/metrics').read().decode())\""
    )
    assert float(re.search(r"^video_api_backup_last_success_timestamp_seconds (\S+)$", text, re.M)[1]) > 0
