"""playbooks/upgrade_python.yml against the converged host: refusals, and a run to the built version.

A move to another version cannot be shown here: Debian's archive carries no second CPython
tarball that pyenv 2.5.4 pins and the service accepts.
"""

import os
import subprocess
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))


def upgrade(version):
    result = subprocess.run(
        ["ansible-playbook", "--inventory", str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent),
         str(PROJECT / "playbooks" / "upgrade_python.yml"), "-e", f"python_version={version}"],
        capture_output=True, text=True, check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_a_malformed_version_is_refused_before_any_host_is_touched():
    rc, output = upgrade("3.12")
    assert rc != 0 and "give a CPython release as -e python_version=3.x.y" in output, output[-2000:]


def test_a_version_below_the_minimum_is_refused():
    rc, output = upgrade("3.9.2")
    assert rc != 0 and "python_version=3.9.2 is not usable" in output and "at least 3.11" in output, output[-2000:]


def test_upgrading_to_the_built_version_changes_nothing_and_ends_healthy():
    rc, output = upgrade("3.11.2")
    assert rc == 0, output[-3000:]
    assert "video-download-api is healthy at" in output
    recap = output[output.rindex("PLAY RECAP"):]
    print(f"\n{recap.strip()}")
    assert "changed=0" in recap and "failed=0" in recap, recap
