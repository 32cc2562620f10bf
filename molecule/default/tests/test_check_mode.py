"""A --check run of site.yml against the converged hosts must report no changes."""

import json
import os
import subprocess
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))


def test_check_mode_run_reports_no_changes():
    environment = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    environment.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # profile_tasks would write into the JSON
    result = subprocess.run(
        [
            "ansible-playbook",
            "--check",
            "--inventory",
            str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent),
            str(PROJECT / "playbooks" / "site.yml"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    changed = [
        f"{host}: {task['task']['name']}"
        for play in report["plays"]
        for task in play["tasks"]
        for host, outcome in task["hosts"].items()
        if outcome.get("changed")
    ]
    print("\n--check recap:", {host: stats["changed"] for host, stats in report["stats"].items()})
    assert not changed, changed
    assert all(stats["changed"] == 0 for stats in report["stats"].values())
