"""Every playbook against every inventory under inventories/: ansible-playbook --syntax-check, which
also resolves each role, module (library/ too) and import. No host is contacted: `make lint` runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INVENTORIES = sorted(p.parent for p in ROOT.glob("inventories/*/hosts.yml"))
PLAYBOOKS = sorted(ROOT.glob("playbooks/*.yml"))
BIN = Path(sys.executable).parent
# The groups the roles and playbooks look for: API hosts, the database host, the load balancers, the
# backup repository.
CLUSTER_GROUPS = {"video_api", "video_api_db", "video_api_lb", "video_api_backup"}


def ansible(command, *arguments):
    return subprocess.run(
        [str(BIN / command), *arguments],
        cwd=ROOT,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.name)
def test_every_playbook_passes_syntax_check(inventory):
    # One run per inventory: the error names the playbook that fails.
    result = ansible("ansible-playbook", "--syntax-check", "-i", str(inventory), *map(str, PLAYBOOKS))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_cluster_example_has_every_group_with_hosts():
    result = ansible("ansible-inventory", "-i", str(ROOT / "inventories/cluster"), "--list")
    assert result.returncode == 0, result.stderr
    groups = {name: group.get("hosts", []) for name, group in json.loads(result.stdout).items()}
    assert all(groups.get(name) for name in CLUSTER_GROUPS), groups


def test_generated_credentials_in_an_inventory_directory_are_no_hosts(tmp_path):
    # The roles generate secrets into <inventory_dir>/credentials/ (a bare word a file, which Ansible's
    # ini plugin would take for a host of the inventory directory that holds it).
    inventory = tmp_path / "inventory"
    (inventory / "credentials" / "tls").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    api1:\n")
    (inventory / "credentials" / "cookie_secret").write_text("Q2xlYXJseU5vdEFIb3N0TmFtZQ\n")
    (inventory / "credentials" / "tls" / "ca_passphrase").write_text("AnotherGeneratedSecret0123\n")
    result = ansible("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)["_meta"]["hostvars"].keys() | set(json.loads(result.stdout)["ungrouped"]["hosts"])
    assert hosts == {"api1"}
