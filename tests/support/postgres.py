"""A throwaway PostgreSQL server from Debian's `postgresql` package, for tests and benchmarks.

initdb refuses root, so the server is created and run as the `postgres` user (runuser), in a temp
dir of its own, listening on a free loopback port (password, scram-sha-256) and on a unix socket
in that dir (trust). Fixtures: postgres_server (one per session) and postgres_url (a new database
per test).
"""

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

MISSING = "PostgreSQL is not installed: tests of the PostgreSQL store need Debian's package `postgresql`"
# Durability off for tests: a crash of a test server loses nothing anybody needs.
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(MISSING)
    return found[-1].parent


def _as_postgres(*command) -> None:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


class PostgresServer:
    def __init__(self, durable: bool = False, tls: tuple[Path, Path] | None = None):
        """tls: (certificate, key) files: TCP clients then connect only with TLS (hostssl), as the
        postgresql role sets a fleet's server up."""
        self.options = () if durable else FAST
        self.password = secrets.token_urlsafe(18)
        self.tls = tls

    def start(self) -> "PostgresServer":
        bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="video-api-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data, self.socket_dir, self.log = self.dir / "data", self.dir / "sock", self.dir / "server.log"
        self.socket_dir.mkdir()
        shutil.chown(self.socket_dir, "postgres", "postgres")
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        _as_postgres(
            bindir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile",
            pwfile,
        )
        pwfile.unlink()
        from tests.support.helpers import free_port  # here: helpers imports this module

        self.port = free_port()
        tls_options = self._enable_tls() if self.tls else ()
        options = " ".join(
            (
                *("-p", str(self.port), "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1"),
                *self.options,
                *tls_options,
            )
        )
        self._pg_ctl = bindir / "pg_ctl"
        self._server_options = options
        self.resume()
        return self

    def _enable_tls(self) -> tuple[str, ...]:
        """Server options for TLS, with copies of the files the server accepts (its own, key 0600)
        and a pg_hba.conf that admits TCP clients with TLS only."""
        assert self.tls is not None
        copies = []
        for source, name in zip(self.tls, ("server.crt", "server.key"), strict=True):
            copy = self.dir / name
            shutil.copyfile(source, copy)
            copy.chmod(0o600)
            shutil.chown(copy, "postgres", "postgres")
            copies.append(copy)
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n"
        )
        cert, key = copies
        return ("-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}")

    def resume(self) -> None:
        """Start the server (again, after halt())."""
        try:
            _as_postgres(
                self._pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", self._server_options, "start"
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log.read_text()[-2000:] if self.log.exists() else ''}") from None

    def halt(self) -> None:
        """Stop the server, keeping its data (an outage; resume() ends it)."""
        _as_postgres(self._pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """What a minor-version upgrade or a failover does to clients: every connection ends, the server is back."""
        _as_postgres(
            self._pg_ctl, "-D", self.data, "-l", self.log, "-m", "fast", "-w", "-o", self._server_options, "restart"
        )

    def terminate_backends(self, dbname: str) -> int:
        """pg_terminate_backend() of every connection to dbname; returns how many."""
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return len(rows)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def socket_url(self, dbname: str) -> str:
        """The same database through the unix socket (libpq's host= parameter), no password."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            _as_postgres(self._pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """URL (loopback, password) of a new, empty database."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
