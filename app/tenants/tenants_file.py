"""The tenants file: TOML, one table per user, tokens only as SHA-256 digests.

    [users.alice]
    role = "user"                # "admin": every task, storage cleanup; "user": its own tasks only
    token_sha256 = "9f86d0..."   # hashlib.sha256(token).hexdigest(); the token itself is never stored
    max_active_tasks = 5         # optional limits, each a positive integer
    max_storage_mb = 2048
    submissions_per_minute = 10

Read with the standard library's tomllib; written (by the tenants command) from the same
declarations, so what is written is always what is read.
"""

import enum
import hashlib
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import MIB
from app.store.base import Limits

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# A user's optional limits: the key in the file, and what it means (the README's table is generated from these).
LIMITS = {
    "max_active_tasks": "Tasks queued or running at once (a playlist counts once); beyond it 429.",
    "max_storage_mb": "MiB its finished files may hold; beyond it its own oldest files are removed first.",
    "submissions_per_minute": "New tasks in any 60 s, across every host; beyond it 429 with `Retry-After`.",
}
LIMIT_HIGH = 1_000_000_000
NEW_TOKEN_BYTES = 32


class Role(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"


class TenantsFileError(ValueError):
    """The file cannot be used; the message names the file and the problem, never a token."""


@dataclass(frozen=True)
class Tenant:
    name: str
    role: Role
    token_sha256: str = ""
    max_active_tasks: int | None = None
    max_storage_mb: int | None = None
    submissions_per_minute: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def max_storage_bytes(self) -> int | None:
        return None if self.max_storage_mb is None else self.max_storage_mb * MIB

    def limits(self) -> Limits:
        """What the task store enforces when this user asks for a task."""
        return Limits(self.name, self.max_active_tasks, self.submissions_per_minute)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(NEW_TOKEN_BYTES)


def read(path: Path) -> dict[str, Tenant]:
    """The users of the file by name; raises TenantsFileError naming what is wrong."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise TenantsFileError(f"{path} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TenantsFileError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"users"}
    if unknown:
        raise TenantsFileError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (only [users.<name>] tables)")
    users = document.get("users", {})
    if not isinstance(users, dict):
        raise TenantsFileError(f"{path}: users must be tables, [users.<name>]")
    tenants = {name: _tenant(path, name, table) for name, table in users.items()}
    digests = [tenant.token_sha256 for tenant in tenants.values()]
    if len(set(digests)) != len(digests):
        raise TenantsFileError(f"{path}: two users have the same token")
    return tenants


def _tenant(path: Path, name: str, table: Any) -> Tenant:
    where = f"{path}: user {name!r}"
    if not NAME.fullmatch(name):
        raise TenantsFileError(f"{where}: a name is 1-32 of a-z, 0-9, '_', '-', starting with a letter or digit")
    if not isinstance(table, dict):
        raise TenantsFileError(f"{where} must be a table")
    unknown = set(table) - {"role", "token_sha256", *LIMITS}
    if unknown:
        raise TenantsFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    role = table.get("role")
    if role not in tuple(Role):
        raise TenantsFileError(f'{where}: role must be "admin" or "user"')
    digest = table.get("token_sha256")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise TenantsFileError(f"{where}: token_sha256 must be 64 lowercase hex digits (a SHA-256 digest)")
    limits = {}
    for key in LIMITS:
        value = table.get(key)
        if value is not None and (type(value) is not int or not 1 <= value <= LIMIT_HIGH):
            raise TenantsFileError(f"{where}: {key} must be a whole number from 1 to {LIMIT_HIGH}")
        limits[key] = value
    return Tenant(name, Role(role), digest, **limits)


def render(tenants: dict[str, Tenant]) -> str:
    """The file's text for these users (read() gives them back)."""
    lines = ["# video-download-api users: tokens are SHA-256 digests (python -m app tenants --help)."]
    for tenant in sorted(tenants.values(), key=lambda tenant: tenant.name):
        lines += ["", f"[users.{tenant.name}]", f'role = "{tenant.role}"', f'token_sha256 = "{tenant.token_sha256}"']
        lines += [f"{key} = {value}" for key in LIMITS if (value := getattr(tenant, key)) is not None]
    return "\n".join(lines) + "\n"


def write(path: Path, tenants: dict[str, Tenant]) -> None:
    """Replace the file at once (a service re-reading it never sees half a file), keeping its mode
    and owner; a new file is 0640: it names users, and the service's group reads it."""
    try:
        stat = os.stat(path)
        mode, owner = stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid)
    except FileNotFoundError:
        mode, owner = 0o640, None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(render(tenants))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
