#!/usr/bin/env python3
"""Controller-side builds for the video_api role.

bundle:     a reproducible tar of a source tree (bytecode and tool caches left out). The tar only
            changes when a file's content, name or mode changes, so shipping it is idempotent.
wheelhouse: the pinned requirements as binary wheels for one target (CPython X.Y, glibc,
            machine), downloaded once into a cache directory and reused for every host of
            that target.
Each prints one JSON line for Ansible.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}
# A fixed mtime keeps the tar a function of content alone; the unpacked files carry it too.
FIXED_MTIME = 315532800  # 1980-01-01
# Legacy aliases of manylinux_2_<minor> tags (PEP 600).
LEGACY_MANYLINUX = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}


def bundle(source: Path, output: Path) -> dict:
    buffer, members = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
            for name in sorted(files):
                path = Path(root, name)
                if path.suffix in EXCLUDED_SUFFIXES:
                    continue
                info = tarfile.TarInfo(str(path.relative_to(source)))
                info.size, info.mtime = path.stat().st_size, FIXED_MTIME
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                info.uname = info.gname = "root"
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
                members[info.name] = info.size
    data = buffer.getvalue()
    changed = not output.exists() or output.read_bytes() != data
    if changed:
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(output)
    return {"path": str(output), "sha256": hashlib.sha256(data).hexdigest(), "changed": changed, "files": members}


def platform_tags(glibc: str, machine: str) -> list[str]:
    """Every manylinux tag a host with this glibc can load, newest first."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise SystemExit(f"unexpected glibc version {glibc}")
    tags = []
    for glibc_minor in range(minor, 4, -1):
        tags.append(f"manylinux_2_{glibc_minor}_{machine}")
        if glibc_minor in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[glibc_minor]}_{machine}")
    return tags


def wheelhouse(requirements: Path, python_version: str, glibc: str, machine: str, cache: Path) -> dict:
    short = python_version.replace(".", "")
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    target = cache / f"cp{short}-glibc{glibc}-{machine}-{digest}"
    downloaded = not (target / ".complete").exists()
    if downloaded:
        download(requirements, python_version, glibc, machine, target)
    archive = bundle(target, target.parent / f"{target.name}.tar")
    return {"dir": str(target), "tar": archive["path"], "downloaded": downloaded}


def download(requirements: Path, python_version: str, glibc: str, machine: str, target: Path) -> None:
    """pip download into a staging directory, renamed into place only when complete."""
    short = python_version.replace(".", "")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--abi",
        f"cp{short}",
        "-r",
        str(requirements),
        "-d",
        str(staging),
    ]
    for tag in platform_tags(glibc, machine):
        command += ["--platform", tag]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging)
        raise SystemExit(f"pip download failed for cp{short}/{machine}/glibc {glibc}:\n{result.stderr[-2000:]}")
    (staging / ".complete").write_text(" ".join(command) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bundle_parser = commands.add_parser("bundle")
    bundle_parser.add_argument("source", type=Path)
    bundle_parser.add_argument("output", type=Path)
    wheel_parser = commands.add_parser("wheelhouse")
    wheel_parser.add_argument("--requirements", type=Path, required=True)
    wheel_parser.add_argument("--python-version", required=True, help="X.Y")
    wheel_parser.add_argument("--glibc", required=True)
    wheel_parser.add_argument("--machine", required=True)
    wheel_parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "bundle":
        result = bundle(args.source, args.output)
    else:
        result = wheelhouse(args.requirements, args.python_version, args.glibc, args.machine, args.cache)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
