#!/usr/bin/python
"""One round trip for what a role needs to know about a host before it changes anything."""

import glob
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: host_probe
short_description: Read what a role's tasks would change, in one round trip
description:
  - Every role calls it once, early, and skips each later task whose result it shows would change
    nothing (a module call is a round trip of 0.3-1 s even when it changes nothing).
  - Only reads; each option asks for one part of the result, which is returned under named fields.
options:
  paths:
    description: Files, directories and links to describe (see RV(paths)).
    type: list
    elements: path
    default: []
  listed:
    description: Directories to describe with their direct children (each child in RV(paths) too).
    type: list
    elements: path
    default: []
  globs:
    description: Shell patterns whose matches to list.
    type: list
    elements: str
    default: []
  free_space:
    description: >-
      A path whose file system's free space to measure (the nearest existing parent if it does not
      exist yet).
    type: path
  packages:
    description: OS packages (dpkg or rpm names) to look up.
    type: list
    elements: str
    default: []
  units:
    description: systemd units whose enabled and active states to read.
    type: list
    elements: str
    default: []
  users:
    description: Accounts to look up.
    type: list
    elements: str
    default: []
  groups:
    description: Groups to look up.
    type: list
    elements: str
    default: []
  bundle:
    description: A directory (C(dir)) that must hold the files of C(files) (relative name to size).
    type: dict
  venv:
    description: A virtualenv (C(dir)) and the pins (C(pins), C(name==version)) it must have installed.
    type: dict
  commands:
    description: Read-only commands to run (name to argv), e.g. a version check.
    type: dict
    default: {}
  firewall:
    description: The firewall backend whose rules to read.
    type: str
    choices: [ufw, firewalld]
"""

RETURN = r"""
paths:
  description: >-
    Path to path, exists, type (file, directory, link, other), owner, group, mode (0644), mtime,
    sha1 (files) and target (links); each field is there, null where it does not apply.
  type: dict
  returned: always
listings:
  description: Each directory of O(listed) to the paths of its children (empty when it is missing).
  type: dict
  returned: always
globs: {description: Each pattern of O(globs) to its matches, type: dict, returned: always}
free_space:
  description: path (where it was measured) and free (bytes).
  type: dict
  returned: when O(free_space) is given
packages: {description: installed and missing, the packages of O(packages) in each, type: dict, returned: always}
units: {description: Each unit to enabled and active (the words systemctl prints), type: dict, returned: always}
users: {description: Each user to exists, group, shell, home and comment, type: dict, returned: always}
groups: {description: Each group to exists, type: dict, returned: always}
bundle:
  description: missing, the files of the bundle not (or not wholly) in its directory.
  type: dict
  returned: when O(bundle) is given
venv:
  description: >-
    pyvenv (the settings of pyvenv.cfg, null without it) and unmet_pins (those not installed at
    exactly that version).
  type: dict
  returned: when O(venv) is given
commands:
  description: Each command to rc, stdout and stderr (rc 127 when it is not installed).
  type: dict
  returned: always
firewall:
  description: >-
    ufw: installed, active, default_incoming and added (the lines of C(ufw show added)); firewalld: running,
    ports and rich_rules of the default zone's permanent configuration.
  type: dict
  returned: when O(firewall) is given
"""


def describe(path):
    """Every field in each entry (null where it does not apply), so tasks compare them directly."""
    entry = {
        "path": path,
        "exists": False,
        **dict.fromkeys(("type", "owner", "group", "mode", "mtime", "sha1", "target")),
    }
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return entry
    entry.update(exists=True, mtime=info.st_mtime)
    if stat.S_ISLNK(info.st_mode):
        entry.update(type="link", target=os.readlink(path))
        return entry
    entry.update(
        type="directory" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other",
        owner=name_of(pwd.getpwuid, info.st_uid),
        group=name_of(grp.getgrgid, info.st_gid),
        mode=f"{stat.S_IMODE(info.st_mode):04o}",
    )
    if entry["type"] == "file":
        with open(path, "rb") as handle:
            entry["sha1"] = hashlib.sha1(handle.read()).hexdigest()
    return entry


def name_of(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: not found"}
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def free_space(path):
    while not os.path.isdir(path):  # before the first run: the nearest existing parent
        path = os.path.dirname(path)
    return {"path": path, "free": shutil.disk_usage(path).free}


def installed_packages(names):
    if not names:
        return []
    if shutil.which("dpkg-query"):
        # Unknown names make dpkg-query exit 1; the known ones are still printed.
        lines = run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Package}\n", *names])["stdout"].splitlines()
        return sorted({line.split()[1] for line in lines if line.startswith("installed ")})
    lines = run(["rpm", "-q", "--qf", "%{NAME}\n", *names])["stdout"].splitlines()
    return sorted(set(lines) & set(names))


def user(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"exists": False}
    return {
        "exists": True,
        "group": name_of(grp.getgrgid, entry.pw_gid),
        "shell": entry.pw_shell,
        "home": entry.pw_dir,
        "comment": entry.pw_gecos,
    }


def group(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True}


def unit(name):
    return {verb[3:]: run(["systemctl", verb, name])["stdout"].strip() for verb in ("is-enabled", "is-active")}


def bundle_missing(directory, files):
    missing = []
    for name, size in files.items():
        try:
            if os.stat(os.path.join(directory, name)).st_size != size:
                missing.append(name)
        except FileNotFoundError:
            missing.append(name)
    return missing


def venv(directory, pins):
    settings = None
    try:
        with open(os.path.join(directory, "pyvenv.cfg")) as handle:
            settings = dict(
                (part.strip() for part in line.split("=", 1)) for line in handle if "=" in line and line.strip()
            )
    except FileNotFoundError:
        pass
    return {"pyvenv": settings, "unmet_pins": unmet_pins(directory, pins)}


def unmet_pins(directory, pins):
    """Pins the virtualenv's interpreter does not have installed at exactly that version."""
    python = os.path.join(directory, "bin", "python")
    if not os.access(python, os.X_OK):
        return list(pins)
    listing = run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ]
    )
    if listing["rc"] != 0:
        return list(pins)
    installed = {normalise(name): version for name, version in json.loads(listing["stdout"]).items()}
    unmet = []
    for pin in pins:
        name, separator, version = pin.partition("==")
        if not separator or installed.get(normalise(name)) != version.strip():
            unmet.append(pin)
    return unmet


def normalise(name):  # PEP 503
    return re.sub(r"[-_.]+", "-", name).lower()


def firewall(backend):
    if backend == "ufw":
        status = run(["ufw", "status", "verbose"])
        if status["rc"] == 127:
            return {"installed": False, "active": False, "default_incoming": "", "added": []}
        default = re.search(r"^Default: (\w+) \(incoming\)", status["stdout"], re.MULTILINE)
        return {
            "installed": True,
            "active": "Status: active" in status["stdout"],
            "default_incoming": default.group(1) if default else "",
            "added": [line for line in run(["ufw", "show", "added"])["stdout"].splitlines() if line.startswith("ufw ")],
        }
    ports = run(["firewall-cmd", "--permanent", "--list-ports"])
    return {
        "running": ports["rc"] == 0,
        "ports": ports["stdout"].split(),
        "rich_rules": run(["firewall-cmd", "--permanent", "--list-rich-rules"])["stdout"].splitlines(),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "default": []},
            "listed": {"type": "list", "elements": "path", "default": []},
            "globs": {"type": "list", "elements": "str", "default": []},
            "free_space": {"type": "path"},
            "packages": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "bundle": {"type": "dict"},
            "venv": {"type": "dict"},
            "commands": {"type": "dict", "default": {}},
            "firewall": {"type": "str", "choices": ["ufw", "firewalld"]},
        },
        supports_check_mode=True,
    )
    params = module.params
    paths = {path: describe(path) for path in params["paths"]}
    listings = {}
    for directory in params["listed"]:
        paths[directory] = describe(directory)
        listings[directory] = []
        if paths[directory].get("type") == "directory":
            for name in sorted(os.listdir(directory)):
                child = os.path.join(directory, name)
                paths[child] = describe(child)
                listings[directory].append(child)
    installed = installed_packages(params["packages"])
    result = {
        "changed": False,
        "paths": paths,
        "listings": listings,
        "globs": {pattern: sorted(glob.glob(pattern)) for pattern in params["globs"]},
        "packages": {"installed": installed, "missing": [name for name in params["packages"] if name not in installed]},
        "units": {name: unit(name) for name in params["units"]},
        "users": {name: user(name) for name in params["users"]},
        "groups": {name: group(name) for name in params["groups"]},
        "commands": {name: run([str(part) for part in argv]) for name, argv in params["commands"].items()},
    }
    if params["free_space"]:
        result["free_space"] = free_space(params["free_space"])
    if params["bundle"]:
        result["bundle"] = {"missing": bundle_missing(params["bundle"]["dir"], params["bundle"]["files"])}
    if params["venv"]:
        result["venv"] = venv(params["venv"]["dir"], params["venv"]["pins"])
    if params["firewall"]:
        result["firewall"] = firewall(params["firewall"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
