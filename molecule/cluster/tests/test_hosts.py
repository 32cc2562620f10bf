"""Each converged host: PostgreSQL open to the API hosts only, HAProxy's backend, the API hosts'
shared credentials, their release layout and their firewall."""

import re
from urllib.parse import unquote

from conftest import API_HOSTS, BACKUP, DB, INSTALL_DIR, LB, MONITOR, address, current_release, docker

CONFIG_DIR = "/etc/video-download-api"


def test_postgresql_listens_on_its_address_and_admits_only_the_api_hosts(host):
    if host.backend.host != DB:
        return
    assert host.socket(f"tcp://{address(DB)}:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening
    hba = [line.split() for line in host.file("/etc/postgresql/15/main/pg_hba.conf").content_string.splitlines()]
    api_addresses = sorted(f"{address(api)}/32" for api in API_HOSTS)
    # The API hosts: only over TLS, by password; without TLS rejected; no plain "host" line for them.
    assert sorted(line[3] for line in hba if line[:1] == ["hostssl"] and line[-1] == "scram-sha-256") == api_addresses
    assert sorted(line[3] for line in hba if line[:1] == ["hostnossl"] and line[-1] == "reject") == api_addresses
    assert [line[3] for line in hba if line[:1] == ["host"]] == ["127.0.0.1/32", "::1/128"], hba
    settings = host.check_output(
        "sudo -u postgres psql -Atc 'SHOW ssl; SHOW ssl_min_protocol_version; SHOW ssl_cert_file'"
    )
    assert settings.split() == ["on", "TLSv1.2", "/etc/ssl/video-api/host.crt"], settings
    ufw = host.check_output("ufw status")
    assert sorted(re.findall(r"5432/tcp +ALLOW +(\S+)", ufw)) == sorted(address(api) for api in API_HOSTS), ufw


def test_haproxy_balances_the_api_hosts_with_health_checks(host):
    if host.backend.host != LB:
        return
    config = host.file("/etc/haproxy/haproxy.cfg").content_string
    for api in API_HOSTS:
        # HTTPS to each API host, health checks too, verified for its inventory name.
        assert (
            f"server {api} {address(api)}:8000 ssl verify required ca-file /etc/ssl/video-api/ca.crt"
            f" sni str({api}) verifyhost {api} check-ssl check-sni {api}\n"
        ) in config
    assert "option httpchk GET /api/health" in config and "option forwardfor" in config
    assert host.socket("tcp://0.0.0.0:443").is_listening and host.socket("tcp://0.0.0.0:80").is_listening
    ufw = host.check_output("ufw status")
    assert re.search(r"^443/tcp +ALLOW +Anywhere", ufw, re.M) and re.search(r"^80/tcp +ALLOW +Anywhere", ufw, re.M), ufw
    stat = host.check_output(
        "echo 'show stat' | python3 -c \"import socket,sys; s=socket.socket(socket.AF_UNIX);"
        " s.connect('/run/haproxy/admin.sock'); s.sendall(sys.stdin.buffer.read());"
        ' print(s.makefile().read())"'
    )
    states = {
        line.split(",")[1]: line.split(",")[17] for line in stat.splitlines() if line.startswith("video_api,cluster")
    }
    assert states == {api: "UP" for api in API_HOSTS}, stat


def test_api_hosts_share_token_and_secret_and_know_the_database(host):
    if host.backend.host not in API_HOSTS:
        return
    env = host.file(f"{CONFIG_DIR}/env").content_string
    assert f"VIDEO_API_DATABASE_URL_FILE={CONFIG_DIR}/database_url" in env
    assert f"VIDEO_API_CLUSTER_SECRET_FILE={CONFIG_DIR}/cluster_secret" in env
    assert f"VIDEO_API_NODE_ID={host.backend.host}\n" in env
    assert f"VIDEO_API_NODE_URL=https://{address(host.backend.host)}:8000\n" in env
    for name, path in (("CERT", "host.crt"), ("KEY", "host.key"), ("CA", "ca.crt")):
        assert f"VIDEO_API_TLS_{name}_FILE=/etc/ssl/video-api/{path}\n" in env
    assert f"VIDEO_API_TRUSTED_PROXIES={address(LB)}/32\n" in env
    for name in ("database_url", "cluster_secret", "tokens"):
        secret = host.file(f"{CONFIG_DIR}/{name}")
        assert (secret.user, secret.group, secret.mode) == ("root", "video-api", 0o640), name
        assert secret.content_string == docker(API_HOSTS[0], f"cat {CONFIG_DIR}/{name}") + "\n", name
    assert host.file(f"{CONFIG_DIR}/database_url").content_string.startswith("postgresql://video_api:")
    url = host.file(f"{CONFIG_DIR}/database_url").content_string
    assert f"@{address(DB)}:5432/video_api?sslmode=verify-full&sslrootcert=" in url
    assert unquote(url.strip().rpartition("sslrootcert=")[2]) == "/etc/ssl/video-api/ca.crt", url


def test_the_unit_runs_the_current_release(host):
    if host.backend.host not in API_HOSTS:
        return
    assert re.fullmatch(r"releases/[0-9a-f]{12}", current_release(host.backend.host))
    assert host.file(f"{INSTALL_DIR}/current/app/__main__.py").user == "root"
    unit = host.file("/etc/systemd/system/video-download-api.service").content_string
    assert f"WorkingDirectory={INSTALL_DIR}/current\n" in unit


def test_the_api_port_is_open_to_the_lb_the_api_hosts_and_the_monitoring_host_only(host):
    if host.backend.host not in API_HOSTS:
        return
    ufw = host.check_output("ufw status")
    sources = sorted(re.findall(r"8000/tcp +ALLOW +(\S+)", ufw))
    assert sources == sorted(address(name) for name in (LB, *API_HOSTS, MONITOR)), ufw


def test_node_exporter_is_open_to_the_monitoring_host_only(host):
    if host.backend.host not in (DB, BACKUP, LB, *API_HOSTS, MONITOR):
        return
    ufw = host.check_output("ufw status")
    assert re.findall(r"9100/tcp +ALLOW +(\S+)", ufw) == [address(MONITOR)], ufw
