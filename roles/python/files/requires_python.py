#!/usr/bin/env python3
"""Print the lowest Python version that every pin of a requirements file accepts.

Runs on the controller. Each pin's Requires-Python comes from pip's resolver report
(`pip install --dry-run --report`), so the answer follows the pins instead of a number
written by hand. The result is cached per requirements-file content because asking the
index takes seconds and the answer only changes with the pins.
"""

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

LOWER_BOUND_OPERATORS = {">=", ">", "~=", "=="}


def pin_requirements(requirements: Path) -> dict[str, str]:
    """Return {package: requires_python} for every pin, as pip resolves them."""
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--no-deps",
            "--ignore-requires-python",
            "--report",
            "-",
            "-r",
            str(requirements),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return {
        item["metadata"]["name"]: item["metadata"].get("requires_python") or ""
        for item in json.loads(report.stdout)["install"]
    }


def minimum(requires: dict[str, str]) -> tuple[Version, list[str]]:
    """Highest lower bound over all pins, and the pins that impose it."""
    best, owners = Version("3.0"), []
    for name, spec in requires.items():
        for clause in SpecifierSet(spec):
            if clause.operator not in LOWER_BOUND_OPERATORS:
                continue
            bound = Version(clause.version.rstrip(".*"))
            if bound > best:
                best, owners = bound, [name]
            elif bound == best:
                owners.append(name)
    return best, owners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--cache-dir", type=Path, required=True)
    args = parser.parse_args()

    digest = hashlib.sha256(args.requirements.read_bytes()).hexdigest()[:16]
    cache = args.cache_dir / f"requires-python-{digest}.json"
    if cache.exists():
        requires = json.loads(cache.read_text())
    else:
        try:
            requires = pin_requirements(args.requirements)
        except subprocess.CalledProcessError as error:
            print(
                f"pip could not resolve {args.requirements} on the controller: {error.stderr.strip()[-500:]}\n"
                "Set python_min_version to skip the lookup.",
                file=sys.stderr,
            )
            return 1
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(requires, indent=1, sort_keys=True))
    version, owners = minimum(requires)
    print(json.dumps({"version": str(version), "required_by": {name: requires[name] for name in sorted(owners)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
