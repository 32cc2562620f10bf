"""Each role's meta/argument_specs.yml (which its README is generated from) against what it documents.

- defaults/main.yml: the spec (all its entry points) gives every default and nothing else (Ansible does not
  apply a spec's default, so one that differs from defaults/ is a lie in the docs);
- meta/main.yml: the platforms are those the Molecule scenarios converge the role on.

No Docker, no Ansible run: `make lint` runs it.
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
# Debian major version of a scenario's image -> the release name meta/main.yml uses.
DEBIAN_RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def spec_options(role: Path) -> dict:
    """The options of every entry point (main, and tasks_from ones such as rollback)."""
    options = {}
    for entry_point in load(role / "meta/argument_specs.yml")["argument_specs"].values():
        options.update(entry_point.get("options", {}))
    return options


def public_defaults(role: Path) -> dict:
    """defaults/main.yml, or every file of a defaults/main/ directory (the monitoring role's alerts apart)."""
    folder = role / "defaults/main"
    files = sorted(folder.glob("*.yml")) if folder.is_dir() else [role / "defaults/main.yml"]
    defaults = {name: value for path in files for name, value in (load(path) or {}).items()}
    return {name: value for name, value in defaults.items() if not name.startswith("__")}


def check_defaults(role: Path) -> list[str]:
    """What differs between the spec and defaults/main.yml, one line each (empty: they agree)."""
    options, defaults = spec_options(role), public_defaults(role)
    problems = [f"{name}: in defaults/main.yml, not in the spec" for name in defaults.keys() - options.keys()]
    for name, option in options.items():
        if name in defaults and option.get("default") != defaults[name]:
            problems.append(f"{name}: spec default {option.get('default')!r} != defaults/main.yml {defaults[name]!r}")
        elif name not in defaults and "default" in option:
            problems.append(f"{name}: spec default {option['default']!r} but not in defaults/main.yml")
    return problems


def platforms_under_test() -> dict[str, set[str]]:
    """Role name -> Debian releases some scenario converges it on (a play's hosts: groups joined by ":")."""
    tested: dict[str, set[str]] = {}
    for molecule_yml in ROOT.glob("molecule/*/molecule.yml"):
        scenario = load(molecule_yml)
        playbook = (molecule_yml.parent / scenario["provisioner"]["playbooks"]["converge"]).resolve()
        for platform in scenario["platforms"]:
            # ${MOLECULE_IMAGE_DEBIAN12:-video-api-molecule/debian:12} -> 12
            release = DEBIAN_RELEASES[re.search(r"debian:(\d+)\}?$", platform["image"]).group(1)]
            for role, groups in roles_by_groups(load(playbook)):
                if groups & set(platform.get("groups", [])):
                    tested.setdefault(role, set()).add(release)
    return tested


def roles_by_groups(plays: list[dict]):
    """(role, groups whose hosts run it) for each role a play lists or includes; an include's
    `when` on `groups['...']` narrows it to those groups."""
    for play in plays:
        hosts = set(play.get("hosts", "").split(":"))
        for role in play.get("roles", []):
            yield (role if isinstance(role, str) else role["role"]), hosts
        for task in play.get("tasks", []):
            include = task.get("ansible.builtin.include_role")
            if include:
                named = set(re.findall(r"groups\['(\w+)'\]", str(task.get("when", ""))))
                yield include["name"], named or hosts


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_and_defaults_agree(role):
    assert check_defaults(role) == []


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_option_is_described(role):
    assert [name for name, option in spec_options(role).items() if not option.get("description")] == []


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_meta_lists_the_platforms_the_scenarios_run(role):
    platforms = load(role / "meta/main.yml")["galaxy_info"]["platforms"]
    claimed = {(p["name"], version) for p in platforms for version in p["versions"]}
    assert claimed == {("Debian", release) for release in platforms_under_test().get(role.name, set())}


def test_drift_is_caught(tmp_path):
    """The check itself: a copy of a role whose defaults/ drifted from its spec fails it."""
    role = tmp_path / "python"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta/argument_specs.yml").write_text((ROOT / "roles/python/meta/argument_specs.yml").read_text())
    defaults = public_defaults(ROOT / "roles/python")
    assert check_defaults(ROOT / "roles/python") == []
    defaults["python_build_jobs"] = "{{ ansible_facts['processor_nproc'] }}"
    defaults["python_undocumented"] = 1
    del defaults["python_version"]
    (role / "defaults/main.yml").write_text(yaml.safe_dump(defaults))
    assert sorted(check_defaults(role)) == [
        "python_build_jobs: spec default \"{{ ansible_facts['processor_nproc'] | default(1) }}\""
        " != defaults/main.yml \"{{ ansible_facts['processor_nproc'] }}\"",
        "python_undocumented: in defaults/main.yml, not in the spec",
        "python_version: spec default '3.13.2' but not in defaults/main.yml",
    ]
