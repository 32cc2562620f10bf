"""playbooks/upgrade_python.yml against the converged host: refusals, and a run to the built version.

A move to another version cannot be shown here: Debian's archive carries no second CPython
tarball that pyenv 2.5.4 pins and the service accepts.
"""

import json
import os
import subprocess
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))


def upgrade(version):
    environment = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    environment.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # profile_tasks would write into the JSON
    result = subprocess.run(
        [
            "ansible-playbook",
            "--inventory",
            str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent),
            str(PROJECT / "playbooks" / "upgrade_python.yml"),
            "-e",
            f"python_version={version}",
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def outcomes(report):
    return [
        (task["task"]["name"], outcome)
        for play in report["plays"]
        for task in play["tasks"]
        for outcome in task["hosts"].values()
    ]


def failure_message(report):
    return " ".join(str(outcome.get("msg", "")) for _, outcome in outcomes(report) if outcome.get("failed"))


def test_a_malformed_version_is_refused_before_any_host_is_touched():
    rc, report = upgrade("3.12")
    assert rc != 0
    assert "give a CPython release as -e python_version=3.x.y" in failure_message(report)
    assert [name for name, _ in outcomes(report)] == ["Check the requested version"]


def test_a_version_below_the_minimum_is_refused():
    rc, report = upgrade("3.9.2")
    message = failure_message(report)
    assert rc != 0 and "python_version=3.9.2 is not usable" in message and "at least 3.11" in message, message


def test_upgrading_to_the_built_version_rebuilds_nothing_and_ends_healthy():
    rc, report = upgrade("3.11.2")
    assert rc == 0, failure_message(report)
    changed = [name for name, outcome in outcomes(report) if outcome.get("changed")]
    print(f"\nupgrade_python.yml -e python_version=3.11.2: changed tasks {changed}")
    assert not [name for name in changed if name.startswith("python :")], changed
    messages = [outcome.get("msg") for name, outcome in outcomes(report) if "how to manage it" in name]
    assert any("is healthy at" in line for msg in messages for line in msg or []), messages
