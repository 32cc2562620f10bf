"""The host's certificate from the tls_certificate role (own_ca): files and modes, the chain, the
trust store, the daily check; the service on HTTPS only."""

import json
import shlex

TLS_DIR = "/etc/ssl/video-api"


def test_key_certificate_and_ca_are_in_place(host):
    expected = {
        "host.key": ("root", "ssl-cert", 0o640),
        "host.crt": ("root", "root", 0o644),
        "ca.crt": ("root", "root", 0o644),
    }
    for name, owner in expected.items():
        found = host.file(f"{TLS_DIR}/{name}")
        assert (found.user, found.group, found.mode) == owner, name
    assert host.check_output(f"openssl verify -CAfile {TLS_DIR}/ca.crt {TLS_DIR}/host.crt") == f"{TLS_DIR}/host.crt: OK"
    names = host.check_output(f"openssl x509 -in {TLS_DIR}/host.crt -noout -ext subjectAltName")
    for name in (f"DNS:{host.backend.hostname}", "DNS:localhost", "IP Address:127.0.0.1"):
        assert name in names, names
    # ::1, as OpenSSL 3.0 (Debian 12) or later ones print it.
    assert "IP Address:0:0:0:0:0:0:0:1" in names or "IP Address:::1" in names, names
    # The key is ECDSA P-256, and the certificate lasts 90 days.
    assert "prime256v1" in host.check_output(f"openssl pkey -in {TLS_DIR}/host.key -noout -text")
    assert host.run(f"openssl x509 -in {TLS_DIR}/host.crt -noout -checkend {89 * 86400}").rc == 0
    assert host.run(f"openssl x509 -in {TLS_DIR}/host.crt -noout -checkend {91 * 86400}").rc == 1


def test_the_fleet_ca_is_in_the_system_trust_store(host):
    trusted = host.file("/usr/local/share/ca-certificates/video-api-fleet-ca.crt")
    assert trusted.content_string == host.file(f"{TLS_DIR}/ca.crt").content_string
    assert host.file("/etc/ssl/certs/video-api-fleet-ca.pem").is_symlink
    bundle = host.run(f"openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt {TLS_DIR}/host.crt")
    assert bundle.rc == 0, bundle.stderr


def test_the_daily_check_runs_and_passes(host):
    timer = host.service("video-api-tls-check.timer")
    assert timer.is_enabled and timer.is_running
    assert host.run("systemctl start video-api-tls-check.service").rc == 0
    # Inside the renewal window it warns and fails: a window longer than the certificate's life.
    script = host.file("/usr/local/sbin/video-api-tls-check").content_string
    longer = script.replace(f"-checkend {30 * 86400}", f"-checkend {365 * 86400}")
    result = host.run(f"sh -c {shlex.quote(longer)}")
    assert result.rc == 1 and "expires" in result.stdout, result.stdout


def test_the_service_answers_https_only(api, host):
    assert api.get("/api/health")[0] == 200
    # Plain HTTP to the same port gets no HTTP answer.
    plain = host.run(
        "python3 -c \"import json, urllib.request as u; print(json.dumps(u.urlopen('http://127.0.0.1:8000/api/health',"
        ' timeout=5).status))"'
    )
    assert plain.rc != 0 and "HTTPError" not in plain.stderr, plain.stdout
    assert json.loads(plain.stdout or "null") is None
