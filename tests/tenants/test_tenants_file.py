"""The tenants file: what it accepts, what it refuses (naming the problem, never a token), and the
`python -m app tenants` command that edits it."""

import os
import subprocess
import sys

import pytest

from app.tenants.tenants_file import LIMITS, Role, Tenant, TenantsFileError, read, render, token_digest
from tests.support.helpers import REPO

DIGEST = token_digest("a-token-for-the-file-tests-0123")


def test_a_file_written_is_read_back_the_same(tmp_path):
    users = {
        "alice": Tenant("alice", Role.USER, DIGEST, max_active_tasks=2, max_storage_mb=10, submissions_per_minute=5),
        "ops_team-1": Tenant("ops_team-1", Role.ADMIN, token_digest("another-token-0123456789")),
    }
    path = tmp_path / "tenants.toml"
    path.write_text(render(users))
    assert read(path) == users


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[users.alice\n", "is not valid TOML"),
        ('[groups.a]\nrole = "user"\n', "unknown top-level key 'groups'"),
        ('[users.Alice]\nrole = "user"\n', "a name is 1-32 of a-z"),
        (f'[users.alice]\nrole = "root"\ntoken_sha256 = "{DIGEST}"\n', 'role must be "admin" or "user"'),
        ('[users.alice]\nrole = "user"\ntoken_sha256 = "a-token-for-the-file-tests-0123"\n', "64 lowercase hex"),
        (f'[users.alice]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\nmax_active = 2\n', "unknown key 'max_active'"),
        (f'[users.alice]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\nmax_active_tasks = 0\n', "from 1 to"),
        (f'[users.alice]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\nmax_storage_mb = 1.5\n', "whole number"),
        (f'[users.alice]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\nmax_storage_mb = true\n', "whole number"),
        (f'[users.alice]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\nmax_storage_mb = "5"\n', "whole number"),
        (
            f'[users.a]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\n'
            f'[users.b]\nrole = "user"\ntoken_sha256 = "{DIGEST}"\n',
            "two users have the same token",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem_and_never_a_token(tmp_path, content, problem):
    path = tmp_path / "tenants.toml"
    path.write_text(content)
    with pytest.raises(TenantsFileError, match=problem) as refused:
        read(path)
    assert str(path) in str(refused.value) and "a-token-for-the-file-tests" not in str(refused.value)


def tenants(*args: str, file=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIDEO_API_TENANTS_FILE"}
    if file is not None:
        env["VIDEO_API_TENANTS_FILE"] = str(file)
    return subprocess.run(
        [sys.executable, "-m", "app", "tenants", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )


def test_the_tenants_command_adds_prints_the_token_once_lists_and_removes(tmp_path):
    path = tmp_path / "tenants.toml"
    added = tenants("add", "alice", "--role", "user", "--max-active-tasks", "3", "--file", str(path))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 40 and "\n" not in token and token not in added.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert token not in path.read_text() and token_digest(token) in path.read_text()
    assert read(path)["alice"] == Tenant("alice", Role.USER, token_digest(token), max_active_tasks=3)
    # The file from the environment; a second add of a name gives it a new token, role and limits.
    assert tenants("add", "ops", "--role", "admin", file=path).returncode == 0
    again = tenants("add", "alice", "--role", "admin", file=path)
    assert again.stdout.strip() != token and read(path)["alice"].role == Role.ADMIN
    listed = tenants("list", file=path)
    assert listed.stdout.splitlines() == ["alice admin", "ops admin"]
    assert token_digest(again.stdout.strip()) not in listed.stdout
    assert tenants("remove", "ops", file=path).returncode == 0 and set(read(path)) == {"alice"}
    missing = tenants("remove", "ops", file=path)
    assert missing.returncode == 1 and "no user 'ops'" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("add", "Alice", "--role", "user"),
        ("add", "alice", "--role", "root"),
        ("add", "alice", "--role", "user", "--max-storage-mb", "\u0661\u0660"),  # Arabic-Indic 10
        ("add", "ops.team", "--role", "user"),  # a dot would make a TOML dotted key
        ("add", "alice", "--role", "user", "--submissions-per-minute", "0"),
        ("add", "alice", "--role", "user", "--max-active-tasks", "2.5"),
    ],
)
def test_the_tenants_command_refuses_bad_arguments_and_writes_nothing(tmp_path, args):
    path = tmp_path / "tenants.toml"
    refused = tenants(*args, "--file", str(path))
    assert refused.returncode == 2 and "error" in refused.stderr
    assert not path.exists()


def test_the_tenants_command_does_not_overwrite_a_file_it_cannot_read(tmp_path):
    path = tmp_path / "tenants.toml"
    path.write_text("[users.alice\n")
    refused = tenants("add", "bob", "--role", "user", "--file", str(path))
    assert refused.returncode == 1 and "is not valid TOML" in refused.stderr
    assert path.read_text() == "[users.alice\n"


def test_the_readme_lists_every_limit_as_declared():
    readme = (REPO / "README.md").read_text()
    for key, meaning in LIMITS.items():
        assert f"| `{key}` | {meaning} |" in readme
