"""One round trip for what the video_api role needs to know about a host.

Each task of the role that would only confirm what this reports is skipped (a module call is a
round trip of 0.3-1 s even when it changes nothing). Reads only; prints one JSON object.
Argument: a JSON object with
  paths          files, directories and links to describe (owner, group, mode, sha1, link)
  listed         directories to describe with their direct children
  user, group    the service account
  release        the release directory and the bundle's files {name: size} it must hold
  releases       the directory of all releases
  venv           the virtualenv directory, and pins ("name==version") it must satisfy
  unit           the systemd unit
"""

import grp
import hashlib
import json
import os
import pwd
import re
import stat
import subprocess
import sys


def describe(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return {"link": os.readlink(path)}
    entry = {
        "owner": owner_name(info.st_uid),
        "group": group_name(info.st_gid),
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
    }
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as handle:
            entry["sha1"] = hashlib.sha1(handle.read()).hexdigest()
    return entry


def described(paths, listed):
    """The given paths, and each listed directory with its direct children."""
    found = {path: describe(path) for path in paths}
    for directory in listed:
        found[directory] = describe(directory)
        if found[directory] and "link" not in found[directory]:
            for name in os.listdir(directory):
                found[os.path.join(directory, name)] = describe(os.path.join(directory, name))
    return found


def owner_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def account(user, group):
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
    try:
        group_exists = grp.getgrnam(group) is not None
    except KeyError:
        group_exists = False
    return {
        "group": group_exists,
        "user": None
        if entry is None
        else {
            "group": group_name(entry.pw_gid),
            "shell": entry.pw_shell,
            "home": entry.pw_dir,
            "comment": entry.pw_gecos,
        },
    }


def release_missing(directory, files):
    """Files of the bundle not (or not wholly) unpacked in the release directory."""
    missing = []
    for name, size in files.items():
        try:
            if os.stat(os.path.join(directory, name)).st_size != size:
                missing.append(name)
        except FileNotFoundError:
            missing.append(name)
    return missing


def releases(directory):
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            found.append({"path": path, "mtime": os.stat(path).st_mtime})
    return found


def unmet_pins(venv, pins):
    """Pins the virtualenv's interpreter does not have installed at exactly that version."""
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        return pins
    listing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
    )
    if listing.returncode != 0:
        return pins
    installed = {normalise(name): version for name, version in json.loads(listing.stdout).items()}
    unmet = []
    for pin in pins:
        name, separator, version = pin.partition("==")
        if not separator or installed.get(normalise(name)) != version.strip():
            unmet.append(pin)
    return unmet


def normalise(name):  # PEP 503
    return re.sub(r"[-_.]+", "-", name).lower()


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def unit_state(unit):
    def ask(verb):
        return subprocess.run(["systemctl", verb, unit], capture_output=True, text=True).stdout.strip()

    return {"enabled": ask("is-enabled"), "active": ask("is-active")}


def main():
    request = json.loads(sys.argv[1])
    venv = request["venv"]
    report = {
        "paths": described(request["paths"], request["listed"]),
        "release_missing": release_missing(request["release"]["dir"], request["release"]["files"]),
        "releases": releases(request["releases"]),
        "pyvenv": read_text(os.path.join(venv["dir"], "pyvenv.cfg")),
        "unmet_pins": unmet_pins(venv["dir"], venv["pins"]),
        "unit": unit_state(request["unit"]),
        **account(request["user"], request["group"]),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
