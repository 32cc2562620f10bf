"""Helpers both scenarios' testinfra tests use: playbook runs against Molecule's inventory and
polling. Imported by each scenario's conftest.py (which puts this directory on sys.path)."""

import json
import os
import subprocess
import time
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[1]))


def run_playbook(*arguments, check=True):
    """ansible-playbook against Molecule's inventory; the finished process and its JSON report."""
    environment = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    environment.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # profile_tasks would write into the JSON
    inventory = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
    result = subprocess.run(
        ["ansible-playbook", "--inventory", inventory, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(result.stdout)


def changed_tasks(report, host=None):
    """'host: role : task' for each task of the JSON report that changed something (on host, if given)."""
    return [
        f"{name}: {task['task']['name']}"
        for play in report["plays"]
        for task in play["tasks"]
        for name, outcome in task["hosts"].items()
        if outcome.get("changed") and host in (None, name)
    ]


def wait_for(predicate, timeout, interval=1.0):
    """predicate() once it is true, or its last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
