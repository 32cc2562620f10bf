"""Settings from the environment; a bad value names the setting and stops start-up."""

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """One invalid setting; str() is the one-line message printed at start-up."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./var")
    max_concurrent: int = 2
    queue_limit: int = 100
    retention_hours: float = 24.0
    max_storage_mb: int = 10240
    min_free_mb: int = 1024
    max_filesize_mb: int = 2048
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    log_level: str = "INFO"

    @property
    def db_path(self) -> Path:
        # Outside media_dir, so no download route or retention pass can ever reach it.
        return self.data_dir / "db" / "tasks.sqlite3"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def max_filesize_bytes(self) -> int:
        return self.max_filesize_mb * 1024 * 1024


def _integer(env, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def _number(env, name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name}={raw} must be a finite number >= {minimum}")
    return value


def _networks(env, name: str) -> tuple:
    raw = env.get(name, "")
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a CIDR network") from None
    return tuple(networks)


def load_settings(env=None) -> Settings:
    """Read every setting from env (default os.environ); raise ConfigError on the first bad one."""
    env = os.environ if env is None else env
    host = env.get("HOST", "").strip() or Settings.host
    data_dir = env.get("VIDEO_API_DATA_DIR", "").strip() or str(Settings.data_dir)
    log_level = (env.get("VIDEO_API_LOG_LEVEL", "").strip() or Settings.log_level).upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"VIDEO_API_LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)}")
    return Settings(
        host=host,
        port=_integer(env, "PORT", Settings.port, 1, 65535),
        data_dir=Path(data_dir),
        max_concurrent=_integer(env, "VIDEO_API_MAX_CONCURRENT", Settings.max_concurrent, 1, 64),
        queue_limit=_integer(env, "VIDEO_API_QUEUE_LIMIT", Settings.queue_limit, 0, 1_000_000),
        retention_hours=_number(env, "VIDEO_API_RETENTION_HOURS", Settings.retention_hours, 0.0),
        max_storage_mb=_integer(env, "VIDEO_API_MAX_STORAGE_MB", Settings.max_storage_mb, 1, 2**40),
        min_free_mb=_integer(env, "VIDEO_API_MIN_FREE_MB", Settings.min_free_mb, 0, 2**40),
        max_filesize_mb=_integer(env, "VIDEO_API_MAX_FILESIZE_MB", Settings.max_filesize_mb, 1, 2**30),
        allow_networks=_networks(env, "VIDEO_API_ALLOW_NETWORKS"),
        log_level=log_level,
    )
