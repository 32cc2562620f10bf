"""The database wire encrypted and verified: a real PostgreSQL server that admits TCP clients with
TLS only (as the postgresql role writes pg_hba.conf), the service connecting with
sslmode=verify-full against the fleet CA."""

import os
import subprocess
import sys

import psycopg
import pytest

from tests.support.certificates import TestCA
from tests.support.helpers import REPO
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pg-tls")
    ca = TestCA.create(directory / "ca")
    cert, key, _ = ca.issue(directory / "server", names=("127.0.0.1",))
    server = PostgresServer(tls=(cert, key)).start()
    server.ca = ca
    yield server
    server.stop()


def test_the_service_reaches_the_database_only_over_verified_tls(tls_postgres, service_factory):
    name = tls_postgres.create_database()
    url = f"{tls_postgres.url(name)}?sslmode=verify-full&sslrootcert={tls_postgres.ca.path}"
    service = service_factory(VIDEO_API_DATABASE_URL=url, VIDEO_API_CLUSTER_SECRET="cluster-secret-0123456789abcdef")
    assert service.get("/api/health")["status"] == "healthy"
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = %s",
            (name,),
        ).fetchall()
    assert len(rows) >= 2 and all(ssl and version in ("TLSv1.2", "TLSv1.3") for ssl, version in rows), rows
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(tls_postgres.url(name) + "?sslmode=disable").close()


def test_a_database_certificate_the_fleet_ca_did_not_sign_stops_start_up(tls_postgres, tmp_path):
    stranger = TestCA.create(tmp_path / "stranger", name="a stranger CA")
    url = f"{tls_postgres.url(tls_postgres.create_database())}?sslmode=verify-full&sslrootcert={stranger.path}"
    env = {
        **os.environ,
        "VIDEO_API_DATA_DIR": str(tmp_path / "data"),
        "VIDEO_API_DATABASE_URL": url,
        "VIDEO_API_CLUSTER_SECRET": "cluster-secret-0123456789abcdef",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "certificate verify failed" in result.stderr and tls_postgres.password not in result.stderr
