"""Settings from the environment, each declared once on its field: variable, default, bounds and
meaning. load_settings() parses from these declarations; the README tables, the Ansible role
(defaults, argument_specs, env template) and compose.yaml are checked against them by tests.
A bad value names the setting and stops start-up.
"""

import dataclasses
import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from app.ascii_numbers import ascii_decimal, ascii_int

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_TOKEN_LENGTH = 16
# The most items a playlist may become: the bound of VIDEO_API_PLAYLIST_MAX_ITEMS and of a request's max_items.
PLAYLIST_ITEMS_LIMIT = 10_000
# The settings in MB are MiB: VIDEO_API_MAX_STORAGE_MB=1 is 1024 * 1024 bytes.
MIB = 1024 * 1024
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
_T = TypeVar("_T")


class ConfigError(ValueError):
    """One invalid setting; str() is the one-line message printed at start-up."""


def setting(
    env: str,
    default: _T,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    secret: bool = False,
    file: bool = False,
) -> _T:
    """A field read from the environment variable env. low/high bound numbers; a secret is left
    out of repr(); file: a `<env>_FILE` variable may name a file holding the value."""
    metadata = {"env": env, "doc": doc, "low": low, "high": high, "file": file}
    return field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class Settings:
    host: str = setting("HOST", "127.0.0.1", "Address to listen on.")
    port: int = setting("PORT", 8000, "TCP port.", low=1, high=65535)
    data_dir: Path = setting(
        "VIDEO_API_DATA_DIR",
        Path("./var"),
        "Data folder: SQLite database in `db/`, downloaded files in `media/`. The database is outside the served and"
        " cleaned media folder.",
    )
    max_concurrent: int = setting(
        "VIDEO_API_MAX_CONCURRENT",
        2,
        "Downloads running at once, each in a thread of the download host process (one process for all: memory).",
        low=1,
        high=64,
    )
    queue_limit: int = setting(
        "VIDEO_API_QUEUE_LIMIT",
        100,
        "Tasks that may wait; beyond it `POST /api/process` answers 429 with `Retry-After`.",
        low=0,
        high=1_000_000,
    )
    playlist_max_items: int = setting(
        "VIDEO_API_PLAYLIST_MAX_ITEMS",
        100,
        "Most items a playlist or channel becomes, each a task of its own (a request's `max_items` may ask for"
        " fewer). A playlist whose items do not fit into the queue's free room fails and says how many would.",
        low=1,
        high=PLAYLIST_ITEMS_LIMIT,
    )
    retention_hours: float = setting(
        "VIDEO_API_RETENTION_HOURS",
        24.0,
        "Files older than this are deleted by the retention pass (every"
        " `VIDEO_API_RETENTION_INTERVAL_S` and on `POST /api/storage/cleanup`). Fractions allowed.",
        low=0.0,
    )
    retention_interval_s: float = setting(
        "VIDEO_API_RETENTION_INTERVAL_S", 600.0, "Seconds between retention passes.", low=1.0
    )
    max_storage_mb: int = setting(
        "VIDEO_API_MAX_STORAGE_MB",
        10240,
        "Size cap of the media folder, held while downloads run: before a download"
        " starts (its likely size: the mean finished file) and whenever its known size grows, the oldest finished"
        " files are deleted to make room; a download that does not fit waits for a running one to end. The newest"
        " finished download is never deleted for size, so the folder stays within one file of the cap.",
        low=1,
        high=2**40,
    )
    min_free_mb: int = setting(
        "VIDEO_API_MIN_FREE_MB",
        1024,
        "Free-disk floor: retention deletes oldest files while free space is below it; health reports 503 below it.",
        low=0,
        high=2**40,
    )
    max_filesize_mb: int = setting(
        "VIDEO_API_MAX_FILESIZE_MB",
        2048,
        "Largest single download; a bigger one fails with a clear error and leaves no file.",
        low=1,
        high=2**30,
    )
    allow_networks: Networks = setting(
        "VIDEO_API_ALLOW_NETWORKS",
        (),
        "Comma-separated CIDRs the downloader may reach although they are"
        " private/loopback/reserved, e.g. `10.20.0.0/16,fd00::/8`.",
    )
    log_level: str = setting("VIDEO_API_LOG_LEVEL", "INFO", f"One of {', '.join(LOG_LEVELS)}.")
    download_attempts: int = setting(
        "VIDEO_API_DOWNLOAD_ATTEMPTS",
        3,
        "Tries of one download when it fails with a transient error (1 = no retry).",
        low=1,
        high=20,
    )
    retry_delay_s: float = setting(
        "VIDEO_API_RETRY_DELAY_S",
        2.0,
        "Seconds before the first retry; each further wait doubles, at most 60 s.",
        low=0.0,
    )
    rate_per_minute: float = setting(
        "VIDEO_API_RATE_PER_MINUTE",
        60.0,
        "`POST /api/process` per client: refill rate of its token bucket (a minute;"
        " fractions allowed). `0` turns the limit off.",
        low=0.0,
    )
    rate_burst: int = setting(
        "VIDEO_API_RATE_BURST", 20, "Bucket size: requests a client may make at once.", low=1, high=1_000_000
    )
    trusted_proxies: Networks = setting(
        "VIDEO_API_TRUSTED_PROXIES",
        (),
        "CIDRs of reverse proxies. Only when the peer is one of them is the client"
        " taken from `X-Forwarded-For` (the right-most entry that is not a trusted proxy).",
    )
    cors_origins: tuple[str, ...] = setting(
        "VIDEO_API_CORS_ORIGINS",
        (),
        "Comma-separated browser origins (`https://app.example.com`), or `*`; empty: CORS off.",
    )
    metrics_networks: Networks = setting(
        "VIDEO_API_METRICS_NETWORKS",
        (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        "Peers (CIDRs) that may read `/metrics`; others get 403.",
    )
    tokens: tuple[str, ...] = setting(
        "VIDEO_API_TOKENS",
        (),
        "Comma-separated bearer tokens, each at least 16 printable ASCII characters; with"
        " `VIDEO_API_TOKENS_FILE` a file of them, one a line (`#` lines skipped). Both add up. Empty: no"
        " authentication.",
        secret=True,
        file=True,
    )
    tenants_file: str = setting(
        "VIDEO_API_TENANTS_FILE",
        "",
        "TOML file of named users, each with a role (`admin` or `user`), the SHA-256 digest of its token and"
        " optional limits (see Users and quotas); re-read on SIGHUP and when it changes. The tokens above are"
        " admins beside them. Empty: those tokens only.",
    )
    callback_secret: str = setting(
        "VIDEO_API_CALLBACK_SECRET",
        "",
        "Shared secret (at least 16 characters) that signs callback POSTs; or"
        " `VIDEO_API_CALLBACK_SECRET_FILE`. Empty: a `callback_url` is refused.",
        secret=True,
        file=True,
    )
    cookie_secret: str = setting(
        "VIDEO_API_COOKIE_SECRET",
        "",
        "Secret (at least 16 characters, the same on every host) from which the key that encrypts the `cookies` of"
        " tasks at rest is derived; or `VIDEO_API_COOKIE_SECRET_FILE`. Empty: a request with `cookies` is refused.",
        secret=True,
        file=True,
    )
    callback_attempts: int = setting(
        "VIDEO_API_CALLBACK_ATTEMPTS", 5, "Deliveries tried per callback before giving up.", low=1, high=20
    )
    database_url: str = setting(
        "VIDEO_API_DATABASE_URL",
        "",
        "Empty: SQLite under the data folder (one host). `postgresql://user:pass@host:port/db` (also `?sslmode=`, or"
        " `?host=/run/postgresql` for a socket): the PostgreSQL task store that several hosts share. Its password"
        " never appears in logs or errors.",
        secret=True,
        file=True,
    )
    node_id: str = setting("VIDEO_API_NODE_ID", "", "This host's name in the cluster. Empty: the host name.")
    node_url: str = setting(
        "VIDEO_API_NODE_URL",
        "",
        "How the other hosts reach this one's internal file endpoint. Empty: `http://<HOST, or the host name when"
        " HOST is a wildcard>:<PORT>` (`https://` with a certificate).",
    )
    cluster_secret: str = setting(
        "VIDEO_API_CLUSTER_SECRET",
        "",
        "Shared secret (at least 16 characters, the same on every host) that signs host-to-host requests; required"
        " with a PostgreSQL `VIDEO_API_DATABASE_URL`.",
        secret=True,
        file=True,
    )
    tls_cert_file: str = setting(
        "VIDEO_API_TLS_CERT_FILE",
        "",
        "PEM file: this host's certificate followed by its chain. With `VIDEO_API_TLS_KEY_FILE` the port serves"
        " HTTPS only (Mozilla's intermediate profile); SIGHUP loads renewed files without a restart. Empty: plain"
        " HTTP (behind a proxy that terminates TLS, or on loopback).",
    )
    tls_key_file: str = setting(
        "VIDEO_API_TLS_KEY_FILE", "", "PEM file: the private key of `VIDEO_API_TLS_CERT_FILE`; set both or neither."
    )
    tls_ca_file: str = setting(
        "VIDEO_API_TLS_CA_FILE",
        "",
        "PEM file of the CA(s) that other hosts' certificates are verified against when this host fetches a file"
        " from them over HTTPS (the fleet's own CA). Empty: the system's trust store.",
    )
    backup_dir: str = setting(
        "VIDEO_API_BACKUP_DIR",
        "",
        "Folder of the SQLite task store's backups (`python -m app backup`, `restore`). Empty:"
        " `<VIDEO_API_DATA_DIR>/backups`. Unused with PostgreSQL, whose backups are pgBackRest's.",
    )
    backup_keep_days: int = setting(
        "VIDEO_API_BACKUP_KEEP_DAYS",
        7,
        "Days a SQLite backup is kept; each backup prunes older ones, but never the newest.",
        low=1,
        high=3650,
    )
    lease_s: float = setting(
        "VIDEO_API_LEASE_S",
        30.0,
        "Seconds a host's claim on a running task lasts unless renewed (renewed every second): after a host dies,"
        " another one requeues its tasks this long after its last renewal.",
        low=3.0,
    )

    view_cache_mb: int = setting(
        "VIDEO_API_VIEW_CACHE_MB",
        32,
        "Megabytes of task views (as `GET /api/status` and the list answer them) kept in memory, least recently"
        " used out first; about 1 KB a task. Several hosts: a change on another host drops its view here as its"
        " announcement arrives. 0: every answer reads the task store.",
        low=0,
        high=65536,
    )

    @property
    def node_name(self) -> str:
        return self.node_id or socket.gethostname()

    @property
    def node_base_url(self) -> str:
        if self.node_url:
            return self.node_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls_cert_file else 'http'}://{host}:{self.port}"

    @property
    def db_path(self) -> Path:
        # Outside media_dir, so no download route or retention pass can ever reach it.
        return self.data_dir / "db" / "tasks.sqlite3"

    @property
    def backups_dir(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else self.data_dir / "backups"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def max_filesize_bytes(self) -> int:
        return self.max_filesize_mb * MIB

    @property
    def max_storage_bytes(self) -> int:
        return self.max_storage_mb * MIB

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * MIB


DECLARED = tuple(dataclasses.fields(Settings))


def _integer(name: str, raw: str, spec: dataclasses.Field[Any]) -> int:
    value = ascii_int(raw)
    if value is None:
        raise ConfigError(f"{name}={raw!r} is not an integer")
    if not spec.metadata["low"] <= value <= spec.metadata["high"]:
        raise ConfigError(f"{name}={value} must be between {spec.metadata['low']} and {spec.metadata['high']}")
    return value


def _number(name: str, raw: str, spec: dataclasses.Field[Any]) -> float:
    value = ascii_decimal(raw)
    if value is None:
        raise ConfigError(f"{name}={raw!r} is not a number")
    if value < spec.metadata["low"]:
        raise ConfigError(f"{name}={raw} must be a number >= {spec.metadata['low']}")
    return value


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _networks(name: str, raw: str, spec: dataclasses.Field[Any]) -> Networks:
    networks = []
    for item in _items(raw):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a CIDR network") from None
    return tuple(networks) or cast(Networks, spec.default)


def _origins(name: str, raw: str, spec: dataclasses.Field[Any]) -> tuple[str, ...]:
    origins = []
    for item in _items(raw):
        if item != "*":
            parts = urllib.parse.urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ConfigError(f"{name}: {item!r} is not an origin like https://app.example.com or *")
            item = item.lower()
        origins.append(item)
    return tuple(origins)


def _log_level(name: str, raw: str, spec: dataclasses.Field[Any]) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}={level!r} must be one of {', '.join(LOG_LEVELS)}")
    return level


def _check_token(token: str, origin: str) -> str:
    # Messages name where the bad token came from, never the token itself.
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{origin}: a token is shorter than {MIN_TOKEN_LENGTH} characters")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"{origin}: a token contains spaces or characters other than printable ASCII")
    return token


def _file_lines(origin: str, path: str, what: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{origin} cannot be read: {exc}") from None
    # Blank lines and lines starting with '#' are skipped.
    lines = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{origin} holds no {what}")
    return lines


def _database_url(name: str, raw: str, spec: dataclasses.Field[Any]) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        # Named without the value: it may hold a password.
        raise ConfigError(f"{name} must be a postgresql://user:password@host:port/database URL")
    return raw


def _tokens(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    tokens = [_check_token(token, name) for token in _items(env.get(name, ""))]
    path = env.get(f"{name}_FILE", "").strip()
    if path:
        origin = f"{name}_FILE={path!r}"
        tokens += [_check_token(token, origin) for token in _file_lines(origin, path, "token")]
    return tuple(dict.fromkeys(tokens))


def _secret(env: Mapping[str, str], name: str) -> str:
    origin, secret = name, env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if path:
        origin = f"{name}_FILE={path!r}"
        secret = _file_lines(origin, path, "secret")[0]
    if secret and len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{origin}: the secret is shorter than {MIN_TOKEN_LENGTH} characters")
    return secret


# How a raw value becomes a field's value, by the field's type (names where the type is shared).
Parser = Callable[[str, str, dataclasses.Field[Any]], Any]
_PARSERS: dict[object, Parser] = {
    int: _integer,
    float: _number,
    str: lambda name, raw, spec: raw,
    Path: lambda name, raw, spec: Path(raw),
    Networks: _networks,
    "cors_origins": _origins,
    "log_level": _log_level,
    "database_url": _database_url,
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from env (default os.environ); raise ConfigError on the first bad one."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for spec in DECLARED:
        name = spec.metadata["env"]
        if spec.name == "tokens":
            values[spec.name] = _tokens(env, name)
        elif spec.name in ("callback_secret", "cluster_secret", "cookie_secret"):
            values[spec.name] = _secret(env, name)
        elif raw := _value(env, spec):
            values[spec.name] = (_PARSERS.get(spec.name) or _PARSERS[spec.type])(name, raw, spec)
    settings = Settings(**values)
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError("VIDEO_API_TLS_CERT_FILE and VIDEO_API_TLS_KEY_FILE are set together or not at all")
    if settings.database_url and not settings.cluster_secret:
        raise ConfigError("VIDEO_API_CLUSTER_SECRET (or _FILE) is required with a PostgreSQL VIDEO_API_DATABASE_URL")
    return settings


def raw_setting(name: str) -> str:
    """One setting's raw value from the environment, as load_settings() reads it: for a command
    that needs only that one (the others may not even be set where it runs)."""
    return _value(os.environ, next(spec for spec in DECLARED if spec.name == name))


def _value(env: Mapping[str, str], spec: dataclasses.Field[Any]) -> str:
    """The raw value: the variable, or for a file setting the first line of the file its _FILE names."""
    name = spec.metadata["env"]
    path = env.get(f"{name}_FILE", "").strip() if spec.metadata["file"] else ""
    if path:
        return _file_lines(f"{name}_FILE={path!r}", path, "value")[0]
    return env.get(name, "").strip()
