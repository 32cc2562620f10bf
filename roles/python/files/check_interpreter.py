"""Checks a freshly built interpreter: the stdlib modules that need system libraries, pip, venv.

Run by the python role with the interpreter under test; prints what it checked as JSON and
exits non-zero naming what is missing.
"""

import importlib
import json
import platform
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

# CPython's build silently leaves each of these out when its -dev package is missing.
MODULES = ("ssl", "sqlite3", "lzma", "bz2", "zlib", "ctypes", "readline")


def pip_version(python):
    result = subprocess.run([str(python), "-m", "pip", "--version"], check=False, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{python} -m pip fails: {result.stderr.strip()}")
    return result.stdout.split()[1]


def main():
    loaded, missing = {}, []
    for name in MODULES:
        try:
            loaded[name] = importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        sys.exit(f"{sys.executable}: cannot import {', '.join(missing)}")

    pip = pip_version(sys.executable)
    with tempfile.TemporaryDirectory() as scratch:
        env_dir = Path(scratch) / "venv"
        venv.create(env_dir, with_pip=True)
        pip_version(env_dir / "bin" / "python")

    print(
        json.dumps(
            {
                "version": platform.python_version(),
                "modules": list(MODULES),
                "pip": pip,
                "openssl": loaded["ssl"].OPENSSL_VERSION,
                "venv": "created with pip",
            }
        )
    )


if __name__ == "__main__":
    main()
