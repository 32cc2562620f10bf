"""Who a token is: the users of the tenants file, and the simple tokens (VIDEO_API_TOKENS), each
an admin. The file is re-read on SIGHUP and when it changes; a bad new file keeps the users read
before and says why in one log line."""

import asyncio
import logging
import os
from pathlib import Path

from app.settings import Settings
from app.tenants.tenants_file import Role, Tenant, TenantsFileError, read, token_digest

# Owner of the tasks from before users existed, of the simple tokens' tasks and of every task of a
# service without tokens: one admin.
ADMIN = Tenant("admin", Role.ADMIN)
WATCH_INTERVAL_S = 2.0
log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class Directory:
    def __init__(self, settings: Settings) -> None:
        """Raises TenantsFileError when the tenants file cannot be used: the service does not start."""
        self.path = Path(settings.tenants_file) if settings.tenants_file else None
        self._simple = {token_digest(token): ADMIN for token in settings.tokens}
        self._stamp = None if self.path is None else _stamp(self.path)
        self._by_name = {} if self.path is None else read(self.path)
        self._by_digest = self._index()

    @property
    def required(self) -> bool:
        """Whether requests must carry a token at all."""
        return bool(self._simple) or self.path is not None

    def _index(self) -> dict[str, Tenant]:
        # A dict lookup by digest: what an attacker could learn from its timing is about the SHA-256
        # of a token, which tells nothing about any token; and it costs the same for 1 or 1,000 users.
        return self._simple | {tenant.token_sha256: tenant for tenant in self._by_name.values()}

    def authenticate(self, token: str) -> Tenant | None:
        return self._by_digest.get(token_digest(token)) if token else None

    def names(self) -> list[str]:
        """Every name a task may be owned by now (the labels of per-user metrics)."""
        return sorted({ADMIN.name, *self._by_name})

    def get(self, name: str) -> Tenant | None:
        return self._by_name.get(name) or (ADMIN if name == ADMIN.name else None)

    def storage_limits(self) -> dict[str, int]:
        """Users' storage limits in bytes, by name (only those who have one)."""
        return {name: limit for name, tenant in self._by_name.items() if (limit := tenant.max_storage_bytes)}

    def reload(self, why: str) -> bool:
        """Read the file again; keeps the users read before when it cannot be used."""
        if self.path is None:
            return False
        self._stamp = _stamp(self.path)
        try:
            users = read(self.path)
        except TenantsFileError as exc:
            log.error(
                "tenants file not reloaded (%s), keeping its %d users read before: %s", why, len(self._by_name), exc
            )
            return False
        self._by_name = users
        self._by_digest = self._index()
        log.info("tenants file reloaded (%s): %d users", why, len(users))
        return True

    async def watch(self) -> None:
        """Re-read the file whenever it changes (an edit, a rename over it, the role's template)."""
        assert self.path is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            stamp = await asyncio.to_thread(_stamp, self.path)
            if stamp != self._stamp:
                self.reload("the file changed")
