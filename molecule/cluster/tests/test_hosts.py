"""Each converged host: PostgreSQL open to the API hosts only, HAProxy's backend, the API hosts'
shared credentials, their release layout and their firewall."""

import re

from conftest import API_HOSTS, DB, INSTALL_DIR, LB, address, current_release, docker

CONFIG_DIR = "/etc/video-download-api"


def test_postgresql_listens_on_its_address_and_admits_only_the_api_hosts(host):
    if host.backend.host != DB:
        return
    assert host.socket(f"tcp://{address(DB)}:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening
    hba = host.file("/etc/postgresql/15/main/pg_hba.conf").content_string
    remote = sorted(
        line.split()[3]
        for line in hba.splitlines()
        if line.startswith("host ") and "127.0.0.1" not in line and "::1" not in line
    )
    assert remote == sorted(f"{address(api)}/32" for api in API_HOSTS), hba
    assert all(line.split()[-1] == "scram-sha-256" for line in hba.splitlines() if line.startswith("host "))
    ufw = host.check_output("ufw status")
    assert sorted(re.findall(r"5432/tcp +ALLOW +(\S+)", ufw)) == sorted(address(api) for api in API_HOSTS), ufw


def test_haproxy_balances_the_api_hosts_with_health_checks(host):
    if host.backend.host != LB:
        return
    config = host.file("/etc/haproxy/haproxy.cfg").content_string
    for api in API_HOSTS:
        assert f"server {api} {address(api)}:8000" in config
    assert "option httpchk GET /api/health" in config and "option forwardfor" in config
    assert host.socket("tcp://0.0.0.0:8000").is_listening
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
    assert f"VIDEO_API_NODE_URL=http://{address(host.backend.host)}:8000\n" in env
    assert f"VIDEO_API_TRUSTED_PROXIES={address(LB)}/32\n" in env
    for name in ("database_url", "cluster_secret", "tokens"):
        secret = host.file(f"{CONFIG_DIR}/{name}")
        assert (secret.user, secret.group, secret.mode) == ("root", "video-api", 0o640), name
        assert secret.content_string == docker(API_HOSTS[0], f"cat {CONFIG_DIR}/{name}") + "\n", name
    assert host.file(f"{CONFIG_DIR}/database_url").content_string.startswith("postgresql://video_api:")
    assert f"@{address(DB)}:5432/video_api" in host.file(f"{CONFIG_DIR}/database_url").content_string


def test_the_unit_runs_the_current_release(host):
    if host.backend.host not in API_HOSTS:
        return
    assert re.fullmatch(r"releases/[0-9a-f]{12}", current_release(host.backend.host))
    assert host.file(f"{INSTALL_DIR}/current/app/__main__.py").user == "root"
    unit = host.file("/etc/systemd/system/video-download-api.service").content_string
    assert f"WorkingDirectory={INSTALL_DIR}/current\n" in unit


def test_the_api_port_is_open_to_the_lb_and_the_other_api_host_only(host):
    if host.backend.host not in API_HOSTS:
        return
    ufw = host.check_output("ufw status")
    sources = sorted(re.findall(r"8000/tcp +ALLOW +(\S+)", ufw))
    assert sources == sorted(address(name) for name in (LB, *API_HOSTS)), ufw
