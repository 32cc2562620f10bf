"""Settings from the environment; a bad value names the setting and stops start-up."""

import ipaddress
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from app.numbers import ascii_decimal, ascii_int

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_TOKEN_LENGTH = 16


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
    # Seconds between retention passes; the storage cap is also enforced as downloads grow.
    retention_interval_s: float = 600.0
    max_storage_mb: int = 10240
    min_free_mb: int = 1024
    max_filesize_mb: int = 2048
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    log_level: str = "INFO"
    # Tries of one download before a transient error (reset, timeout, 5xx) fails the task,
    # the first retry after retry_delay_s, each further one after twice the previous wait.
    download_attempts: int = 3
    retry_delay_s: float = 2.0
    # POST /api/process per client: a token bucket of rate_burst, refilled rate_per_minute a minute
    # (0: no limit). The client is the peer, or X-Forwarded-For's when the peer is a trusted proxy.
    rate_per_minute: float = 60.0
    rate_burst: int = 20
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Browser origins allowed to call the API (CORS); empty: CORS off; "*": any origin.
    cors_origins: tuple[str, ...] = ()
    # Peers allowed to read /metrics.
    metrics_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # Bearer tokens any /api/* request but health must carry; empty: no authentication.
    # Left out of repr() so a logged Settings object never shows them.
    tokens: tuple[str, ...] = field(default=(), repr=False)
    # Shared secret that signs callback POSTs (HMAC-SHA256); empty: callback_url is refused.
    callback_secret: str = field(default="", repr=False)
    callback_attempts: int = 5

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
    value = ascii_int(raw)
    if value is None:
        raise ConfigError(f"{name}={raw!r} is not an integer")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def _number(env, name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = ascii_decimal(raw)
    if value is None:
        raise ConfigError(f"{name}={raw!r} is not a number")
    if value < minimum:
        raise ConfigError(f"{name}={raw} must be a number >= {minimum}")
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


def _origins(env, name: str) -> tuple[str, ...]:
    origins = []
    for item in (part.strip() for part in env.get(name, "").split(",")):
        if not item:
            continue
        if item != "*":
            parts = urllib.parse.urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ConfigError(f"{name}: {item!r} is not an origin like https://app.example.com or *")
            item = item.lower()
        origins.append(item)
    return tuple(origins)


def _check_token(token: str, origin: str) -> str:
    # Messages name where the bad token came from, never the token itself.
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{origin}: a token is shorter than {MIN_TOKEN_LENGTH} characters")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"{origin}: a token contains spaces or characters other than printable ASCII")
    return token


def _tokens(env) -> tuple[str, ...]:
    tokens = [_check_token(t.strip(), "VIDEO_API_TOKENS") for t in env.get("VIDEO_API_TOKENS", "").split(",")
              if t.strip()]  # fmt: skip
    path = env.get("VIDEO_API_TOKENS_FILE", "").strip()
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"VIDEO_API_TOKENS_FILE={path!r} cannot be read: {exc}") from None
        # One token a line; blank lines and lines starting with '#' are skipped.
        file_tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not file_tokens:
            raise ConfigError(f"VIDEO_API_TOKENS_FILE={path!r} holds no token")
        tokens += [_check_token(token, f"VIDEO_API_TOKENS_FILE={path!r}") for token in file_tokens]
    return tuple(dict.fromkeys(tokens))


def _callback_secret(env) -> str:
    origin, secret = "VIDEO_API_CALLBACK_SECRET", env.get("VIDEO_API_CALLBACK_SECRET", "").strip()
    path = env.get("VIDEO_API_CALLBACK_SECRET_FILE", "").strip()
    if path:
        origin = f"VIDEO_API_CALLBACK_SECRET_FILE={path!r}"
        try:
            lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"{origin} cannot be read: {exc}") from None
        if not lines:
            raise ConfigError(f"{origin} holds no secret")
        secret = lines[0]
    if secret and len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{origin}: the secret is shorter than {MIN_TOKEN_LENGTH} characters")
    return secret


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
        retention_interval_s=_number(env, "VIDEO_API_RETENTION_INTERVAL_S", Settings.retention_interval_s, 1.0),
        max_storage_mb=_integer(env, "VIDEO_API_MAX_STORAGE_MB", Settings.max_storage_mb, 1, 2**40),
        min_free_mb=_integer(env, "VIDEO_API_MIN_FREE_MB", Settings.min_free_mb, 0, 2**40),
        max_filesize_mb=_integer(env, "VIDEO_API_MAX_FILESIZE_MB", Settings.max_filesize_mb, 1, 2**30),
        allow_networks=_networks(env, "VIDEO_API_ALLOW_NETWORKS"),
        log_level=log_level,
        download_attempts=_integer(env, "VIDEO_API_DOWNLOAD_ATTEMPTS", Settings.download_attempts, 1, 20),
        retry_delay_s=_number(env, "VIDEO_API_RETRY_DELAY_S", Settings.retry_delay_s, 0.0),
        rate_per_minute=_number(env, "VIDEO_API_RATE_PER_MINUTE", Settings.rate_per_minute, 0.0),
        rate_burst=_integer(env, "VIDEO_API_RATE_BURST", Settings.rate_burst, 1, 1_000_000),
        trusted_proxies=_networks(env, "VIDEO_API_TRUSTED_PROXIES"),
        cors_origins=_origins(env, "VIDEO_API_CORS_ORIGINS"),
        metrics_networks=_networks(env, "VIDEO_API_METRICS_NETWORKS") or Settings.metrics_networks,
        tokens=_tokens(env),
        callback_secret=_callback_secret(env),
        callback_attempts=_integer(env, "VIDEO_API_CALLBACK_ATTEMPTS", Settings.callback_attempts, 1, 20),
    )
