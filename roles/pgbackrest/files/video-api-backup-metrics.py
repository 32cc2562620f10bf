#!/usr/bin/python3
"""Backup and WAL archive metrics for node exporter's textfile collector, written atomically:
video-api-backup-metrics <stanza> <output file>. Runs as root (a systemd timer, every minute);
pgBackRest and psql run as postgres."""

import json
import os
import subprocess
import sys
import tempfile
import time


def as_postgres(*command):
    return subprocess.run(
        command,
        user="postgres",
        group="postgres",
        extra_groups=["ssl-cert"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd="/",
    )


LAST_SUCCESS = "video_api_backup_last_success_timestamp_seconds"


def previous_last_success(output):
    """The last success lines of the file written before, to carry over while the repository is down:
    the backups' age keeps growing (an alert on it still fires) instead of the series vanishing."""
    try:
        with open(output) as file:
            return [line.rstrip("\n") for line in file if line.startswith(LAST_SUCCESS + "{")]
    except FileNotFoundError:
        return []


def backup_metrics(stanza, output):
    """The end time of the newest good backup of each type, and whether the repository answered."""
    # A short I/O timeout: a repository that is down must not hold up the rest of the file.
    try:
        info = as_postgres("pgbackrest", f"--stanza={stanza}", "--io-timeout=10", "--output=json", "info")
        stanzas = json.loads(info.stdout) if info.returncode == 0 else []
    except (subprocess.TimeoutExpired, ValueError):
        stanzas = []
    # 0: ok, 2: no backup yet; anything else (99: repository unreachable, 4: wrong cipher, ...) is down.
    up = bool(stanzas) and all(s["status"]["code"] in (0, 2) for s in stanzas)
    newest = {}
    for backup in (b for s in stanzas for b in s.get("backup", []) if not b.get("error")):
        newest[backup["type"]] = max(newest.get(backup["type"], 0), backup["timestamp"]["stop"])
    lines = [
        "# HELP video_api_backup_repository_up 1 if pgbackrest info read the stanza from its repository.",
        "# TYPE video_api_backup_repository_up gauge",
        f"video_api_backup_repository_up {int(up)}",
        f"# HELP {LAST_SUCCESS} End of the newest good backup of each type.",
        f"# TYPE {LAST_SUCCESS} gauge",
    ]
    if up:
        lines += [f'{LAST_SUCCESS}{{type="{t}"}} {s}' for t, s in sorted(newest.items())]
    else:
        lines += previous_last_success(output)
    return lines


def archive_metrics():
    """PostgreSQL's own view of archive_command: the last success, the failures."""
    query = (
        "select coalesce(extract(epoch from last_archived_time), 0)::bigint, failed_count,"
        " coalesce(extract(epoch from last_failed_time), 0)::bigint from pg_stat_archiver"
    )
    result = as_postgres("psql", "-XAtq", "-F", " ", "-d", "postgres", "-c", query)
    if result.returncode != 0:
        return ["video_api_postgresql_up 0"]
    archived, failed, failed_at = result.stdout.split()
    return [
        "video_api_postgresql_up 1",
        "# HELP video_api_wal_last_archived_timestamp_seconds When archive_command last succeeded (0: never).",
        "# TYPE video_api_wal_last_archived_timestamp_seconds gauge",
        f"video_api_wal_last_archived_timestamp_seconds {archived}",
        "# HELP video_api_wal_archive_failures_total Failed archive_command runs since the statistics reset.",
        "# TYPE video_api_wal_archive_failures_total counter",
        f"video_api_wal_archive_failures_total {failed}",
        "# HELP video_api_wal_last_failed_timestamp_seconds When archive_command last failed (0: never).",
        "# TYPE video_api_wal_last_failed_timestamp_seconds gauge",
        f"video_api_wal_last_failed_timestamp_seconds {failed_at}",
    ]


def main():
    stanza, output = sys.argv[1], sys.argv[2]
    lines = backup_metrics(stanza, output) + archive_metrics()
    lines.append(f"video_api_backup_metrics_timestamp_seconds {int(time.time())}")
    # Written beside the target and renamed: node exporter never reads half a file.
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(output), prefix=".video_api_backup.")
    with os.fdopen(handle, "w") as file:
        file.write("\n".join(lines) + "\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, output)


if __name__ == "__main__":
    main()
