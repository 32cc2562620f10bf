"""TLS on every wire, as a client outside the load balancer and the hosts themselves see it: HTTP only
redirects, TLS 1.2 and 1.3 only, the chain verifies against the fleet CA for the load balancer's
inventory name, HSTS, testssl.sh finds nothing HIGH or CRITICAL; PostgreSQL only over TLS; the API
hosts serve HTTPS only."""

import json
import ssl
import subprocess

import pytest
import requests
from conftest import API_HOSTS, DB, LB, address, docker, fleet_context, handshake

CONFIG_DIR = "/etc/video-download-api"


def test_http_answers_only_a_redirect_to_https(client):
    lb = address(LB)
    for path in ("/api/health", "/api/tasks?limit=1", "/"):
        response = requests.get(f"http://{lb}{path}", allow_redirects=False, timeout=10)
        assert response.status_code == 301, response.text
        assert response.headers["Location"] == f"https://{lb}{path}"
        assert b"status" not in response.content
    assert client.get("/api/health").status_code == 200


def test_only_tls_1_2_and_1_3_are_accepted():
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert handshake(fleet_context(version))[0] == version.name.replace("v1_", "v1.")
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        context = fleet_context(version)
        # This client's OpenSSL would refuse these versions itself; security level 0 lets it offer
        # them, so the refusal seen is the server's (a protocol_version alert).
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError) as refused:
            handshake(context)
        assert "ALERT" in str(refused.value.reason), refused.value


def test_the_chain_verifies_against_the_fleet_ca_for_the_inventory_name():
    version, _ = handshake(fleet_context())
    assert version == "TLSv1.3"
    # The system's CAs do not know the fleet CA, and another name is not the certificate's.
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(fleet_context(), server_hostname="not-the-lb.example.com")


def test_hsts_is_sent(client):
    assert client.get("/api/health").headers["Strict-Transport-Security"] == "max-age=63072000"


def test_testssl_finds_nothing_high_or_critical():
    # Protocols, cipher categories, server preferences and the vulnerabilities; installed by prepare.yml.
    docker(
        LB,
        "rm -f /tmp/testssl.json; testssl --quiet --color 0 --warnings off --severity HIGH"
        " --jsonfile /tmp/testssl.json --protocols --std --server-preference --vulnerable"
        " https://127.0.0.1:443 >/tmp/testssl.log 2>&1 || true",
    )
    # The JSON file lists the findings of severity HIGH and above only.
    assert "Done " in docker(LB, "tail -5 /tmp/testssl.log")
    assert json.loads(docker(LB, "cat /tmp/testssl.json")) == []


def test_every_connection_of_the_service_is_encrypted():
    query = (
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a"
        " JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'video_api'"
    )
    total, encrypted = docker(DB, f'sudo -u postgres psql -Atc "{query}"').split("|")
    assert int(total) > 0 and encrypted == total


@pytest.mark.parametrize("api", API_HOSTS)
def test_postgresql_refuses_a_plain_connection_and_verifies_with_the_ca(api):
    connect = (
        '/opt/video-download-api/venv/bin/python -c "import psycopg, sys;'
        f" url = open('{CONFIG_DIR}/database_url').read().strip();"
        " psycopg.connect(url, sslmode=sys.argv[1], sslrootcert='/etc/ssl/video-api/ca.crt',"
        ' connect_timeout=5).close()"'
    )
    docker(api, f"{connect} verify-full")
    refused = failure_output(api, f"{connect} disable")
    assert "rejects connection" in refused and "no encryption" in refused, refused


def failure_output(container, command):
    """stdout and stderr of a command that must fail."""
    result = subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True)
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


@pytest.mark.parametrize("api", API_HOSTS)
def test_an_api_host_serves_https_only(api):
    # From the load balancer, which the firewall admits (and whose trust store has the fleet CA):
    # HTTPS answers, plain HTTP gets no HTTP answer at all.
    url = f"{address(api)}:8000/api/health"
    fetch = 'python3 -c "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).status)"'
    assert docker(LB, f"{fetch} https://{url}") == "200"
    plain = failure_output(LB, f"{fetch} http://{url}")
    assert "HTTPError" not in plain, plain


# Runs on one API host: a signed request for the other's internal file endpoint, sent twice as is.
REPLAY = r"""
import hashlib, hmac, json, secrets, sys, time, urllib.error, urllib.request
base, path = sys.argv[1:3]
secret = open("/etc/video-download-api/cluster_secret").read().strip()
stamp, nonce = str(int(time.time())), secrets.token_hex(16)
signature = hmac.new(secret.encode(), f"{stamp}\n{nonce}\nGET\n{path}".encode(), hashlib.sha256).hexdigest()
headers = {"X-Video-Api-Node": "replayer", "X-Video-Api-Timestamp": stamp, "X-Video-Api-Nonce": nonce,
           "X-Video-Api-Signature": signature}
codes = []
for _ in range(2):
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=10) as response:
            codes.append(response.status)
    except urllib.error.HTTPError as error:
        codes.append(error.code)
print(json.dumps(codes))
"""


def test_a_replayed_internal_request_is_refused():
    sender, receiver = API_HOSTS
    codes = json.loads(
        docker(sender, f"python3 -c '{REPLAY}' https://{address(receiver)}:8000 /internal/files/no-such-file")
    )
    # The first is accepted (and finds no such file), the same request again is refused.
    assert codes[0] != 403 and codes[1] == 403, codes
