"""The service's own HTTPS (app/tls.py): a real process with a certificate from a throwaway CA,
real TLS clients of each protocol version, a renewal loaded on SIGHUP under load."""

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from app.tls import INTERMEDIATE_CIPHERS
from tests.support.certificates import TestCA, served_serial
from tests.support.helpers import REPO, free_port, trusting


@pytest.fixture
def tls_service(tmp_path, service_factory):
    ca = TestCA.create(tmp_path / "ca")
    cert, key, serial = ca.issue(tmp_path / "tls")
    service = service_factory(trust=ca.path, VIDEO_API_TLS_CERT_FILE=str(cert), VIDEO_API_TLS_KEY_FILE=str(key))
    service.ca, service.serial = ca, serial
    return service


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def test_a_host_with_a_certificate_serves_verified_https(tls_service):
    response = tls_service.http.get(tls_service.base + "/api/health", timeout=10)
    assert response.status_code == 200, response.text
    assert served_serial(tls_service.port, tls_service.ca.path) == tls_service.serial
    # Another CA's client does not trust it: verification is real.
    other = TestCA.create(tls_service.data_dir.parent / "other-ca")
    with pytest.raises(requests.exceptions.SSLError):
        trusting(other.path).get(tls_service.base + "/api/health", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer_and_nothing_is_logged(tls_service):
    marker = "plain-secret-marker-0123456789"
    with socket.create_connection(("127.0.0.1", tls_service.port), timeout=10) as plain:
        plain.sendall(f"GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {marker}\r\n\r\n".encode())
        received = b""
        while chunk := plain.recv(4096):
            received += chunk
    assert b"HTTP/" not in received and b"health" not in received, received
    assert tls_service.http.get(tls_service.base + "/api/health", timeout=10).status_code == 200
    assert marker not in Path(tls_service.log.name).read_text(errors="replace")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_2_and_1_3_are_accepted_and_older_versions_refused(tls_service):
    accepted = []
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(tls_service.ca.path))
        context.minimum_version = context.maximum_version = version
        accepted.append(_handshake(tls_service.port, context))
    assert accepted == ["TLSv1.2", "TLSv1.3"]
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # The client offers only the old version, at security level 0, so the refusal is the server's.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(tls_service.ca.path))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
        with pytest.raises(ssl.SSLError):  # the server closes at the ClientHello
            _handshake(tls_service.port, context)


def test_sighup_serves_a_renewed_certificate_with_no_failed_request(tls_service, tmp_path):
    failures, done, stop = [], [0], threading.Event()

    def client(session: requests.Session) -> None:
        while not stop.is_set():
            try:
                status = session.get(tls_service.base + "/api/tasks?limit=1", timeout=10).status_code
                if status != 200:
                    failures.append(status)
            except requests.RequestException as exc:
                failures.append(repr(exc))
            done[0] += 1

    kept_alive = trusting(tls_service.ca.path)
    fresh = trusting(tls_service.ca.path)  # a new connection for every request: a handshake each time
    fresh.headers["Connection"] = "close"
    clients = [threading.Thread(target=client, args=(session,)) for session in (kept_alive, fresh)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        _, _, renewed = tls_service.ca.issue(tmp_path / "tls")  # the same files, new content
        tls_service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while served_serial(tls_service.port, tls_service.ca.path) != renewed:
            assert time.monotonic() < deadline, "the renewed certificate is not served"
            time.sleep(0.1)
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert failures == [] and done[0] > 20, (failures, done)
    assert tls_service.process.poll() is None
    assert "certificate reloaded" in Path(tls_service.log.name).read_text()


def test_a_broken_renewal_keeps_the_certificate_in_use(tls_service, tmp_path):
    (tmp_path / "tls" / "host.crt").write_text("not a certificate\n")
    tls_service.process.send_signal(signal.SIGHUP)
    log = Path(tls_service.log.name)
    deadline = time.monotonic() + 10
    while "certificate not reloaded" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert served_serial(tls_service.port, tls_service.ca.path) == tls_service.serial
    assert "not a certificate" not in log.read_text()


def _start(tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "VIDEO_API_DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=30
    )


def test_a_certificate_without_its_key_stops_start_up(tmp_path):
    result = _start(tmp_path, VIDEO_API_TLS_CERT_FILE=str(tmp_path / "host.crt"))
    assert result.returncode == 2
    assert "VIDEO_API_TLS_CERT_FILE and VIDEO_API_TLS_KEY_FILE" in result.stderr


def test_an_unreadable_certificate_stops_start_up_naming_the_files(tmp_path):
    ca = TestCA.create(tmp_path / "ca")
    cert, _, _ = ca.issue(tmp_path / "tls")
    _, other_key, _ = ca.issue(tmp_path / "other")  # a key that does not match the certificate
    for key in (tmp_path / "missing.key", other_key):
        result = _start(tmp_path, VIDEO_API_TLS_CERT_FILE=str(cert), VIDEO_API_TLS_KEY_FILE=str(key))
        assert result.returncode == 1, result.stderr
        assert f"VIDEO_API_TLS_KEY_FILE={str(key)!r} cannot be loaded" in result.stderr
        assert "PRIVATE KEY" not in result.stderr


def _healthcheck(port: int, cert: Path, key: Path) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command (app/healthcheck.py), run here against the service's port."""
    env = {**os.environ, "PORT": str(port), "VIDEO_API_TLS_CERT_FILE": str(cert), "VIDEO_API_TLS_KEY_FILE": str(key)}
    return subprocess.run(
        [sys.executable, "-m", "app.healthcheck"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )


def test_the_health_probe_trusts_exactly_the_configured_certificate(tls_service, tmp_path):
    tls = tmp_path / "tls"
    passed = _healthcheck(tls_service.port, tls / "host.crt", tls / "host.key")
    assert passed.returncode == 0, passed.stderr
    # Another certificate of the same CA, for the same names: not the pinned one, so not trusted.
    other_cert, other_key, _ = tls_service.ca.issue(tmp_path / "other")
    failed = _healthcheck(tls_service.port, other_cert, other_key)
    assert failed.returncode == 1 and "certificate verify failed" in failed.stderr, failed.stderr


def test_the_load_balancers_offer_the_services_cipher_list():
    # One list, declared in app/tls.py: the haproxy role and the compose file's HAProxy carry copies.
    role_vars = yaml.safe_load((REPO / "roles" / "haproxy" / "vars" / "main.yml").read_text())
    assert ":".join(role_vars["__haproxy_ciphers"]) == INTERMEDIATE_CIPHERS
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    haproxy_config = compose["services"]["haproxy"]["environment"]["HAPROXY_CONFIG"]
    assert f"ssl-default-bind-ciphers {INTERMEDIATE_CIPHERS}\n" in haproxy_config
