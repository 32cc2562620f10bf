"""Renewal: site.yml's certificate tasks with a renewal window longer than the certificates' life sign
new certificates for every host, and HAProxy, PostgreSQL and the service load them by reloading,
while a client keeps requesting through the load balancer over HTTPS without a single failure.
Then an ACME order against pebble (prepare.yml runs it on the load balancer), answered through
HAProxy's port 80, installs pebble's certificate; the fleet CA's comes back after."""

import ssl
import time

from conftest import API_HOSTS, DB, LB, PROJECT, Load, docker, fleet_context, handshake, run_playbook

SITE = str(PROJECT / "playbooks" / "site.yml")
PEBBLE = (
    *("-e", "tls_certificate_source=acme"),
    *("-e", "tls_certificate_acme_directory=https://localhost:14000/dir"),
    *("-e", "tls_certificate_acme_ca_file=/etc/pebble/cert.pem"),
    *("-e", '{"tls_certificate_extra_names": ["cluster-lb"]}'),
)
# pebble's root of this run (it makes a new one at each start), read on the load balancer.
PEBBLE_ROOT = (
    'python3 -c "import ssl, urllib.request as u;'
    " print(u.urlopen('https://localhost:15000/roots/0', context=ssl.create_default_context("
    "cafile='/etc/pebble/cert.pem')).read().decode())\""
)


def served_serial(container, port, starttls=""):
    """The serial of the certificate a server on the container's loopback presents now."""
    return docker(
        container,
        f"openssl s_client -connect 127.0.0.1:{port} {starttls} </dev/null 2>/dev/null | openssl x509 -noout -serial",
    )


def serials():
    return {
        "lb": handshake(fleet_context())[1].serial_number,
        **{api: served_serial(api, 8000) for api in API_HOSTS},
        "db": served_serial(DB, 5432, "-starttls postgres"),
    }


def test_renewal_under_load_serves_new_certificates_and_fails_no_request(client):
    before = serials()
    task_id = client.submit("http://127.0.0.1:9/nothing-listens?renewal")
    with Load(client, task_id) as load:
        started = time.monotonic()
        _, report = run_playbook(SITE, "--tags", "tls_certificate", "-e", "tls_certificate_renew_days=365")
        duration = time.monotonic() - started
        # Requests after the reloads too.
        time.sleep(3)
    after = serials()
    print(f"\nrenewal of every certificate: {duration:.1f} s; {load.requests} requests, {len(load.failures)} failed")
    assert all(after[name] != before[name] for name in before), (before, after)
    assert load.failures == []
    assert {host: stats["failures"] for host, stats in report["stats"].items()} == dict.fromkeys(report["stats"], 0)


def test_an_acme_order_through_haproxy_installs_the_acme_certificate(client, tmp_path):
    # Every host (the load balancer's play needs the others' facts); only the load balancer orders.
    try:
        run_playbook(SITE, "--tags", "tls_certificate", *PEBBLE)
        root = tmp_path / "pebble-root.pem"
        root.write_text(docker(LB, PEBBLE_ROOT))
        _, certificate = handshake(ssl.create_default_context(cafile=str(root)))
        assert "Pebble" in certificate.issuer.rfc4514_string(), certificate.issuer
    finally:
        run_playbook(SITE, "--tags", "tls_certificate")
    assert handshake(fleet_context())[1].issuer != certificate.issuer
    assert client.get("/api/health").status_code == 200
