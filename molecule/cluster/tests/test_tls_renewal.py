"""Renewal: site.yml's certificate tasks with a renewal window longer than the certificates' life sign
new certificates for every host, and HAProxy, PostgreSQL and the service load them by reloading,
while a client keeps requesting through the load balancer over HTTPS without a single failure."""

import time

from conftest import API_HOSTS, DB, PROJECT, Load, docker, fleet_context, handshake, run_playbook


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
        _, report = run_playbook(
            str(PROJECT / "playbooks" / "site.yml"), "--tags", "tls_certificate", "-e", "tls_certificate_renew_days=365"
        )
        duration = time.monotonic() - started
        # Requests after the reloads too.
        time.sleep(3)
    after = serials()
    print(f"\nrenewal of every certificate: {duration:.1f} s; {load.requests} requests, {len(load.failures)} failed")
    assert all(after[name] != before[name] for name in before), (before, after)
    assert load.failures == []
    assert {host: stats["failures"] for host, stats in report["stats"].items()} == dict.fromkeys(report["stats"], 0)
