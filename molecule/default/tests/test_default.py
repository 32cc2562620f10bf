"""The converged host: user, files, the hardened unit, the firewall, and a real download."""

import re

import pytest
from conftest import SERVICE, wait_for

INSTALL_DIR = "/opt/video-download-api"
DATA_DIR = "/var/lib/video-download-api"


def test_service_user_is_a_system_user_without_login(host):
    user = host.user("video-api")
    assert user.exists
    assert user.uid < 1000
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert host.group("video-api").exists


def test_code_belongs_to_root_and_data_to_the_service_user(host):
    # The unit runs the release the `current` symlink points at.
    release = host.file(f"{INSTALL_DIR}/current").linked_to
    assert re.fullmatch(rf"{INSTALL_DIR}/releases/[0-9a-f]{{12}}", release), release
    for path in (INSTALL_DIR, f"{INSTALL_DIR}/releases", release, f"{release}/app", f"{INSTALL_DIR}/venv"):
        directory = host.file(path)
        assert directory.user == "root", path
        assert not directory.mode & 0o022, f"{path} is group/world writable"
    assert host.file(f"{release}/app/__main__.py").user == "root"
    data = host.file(DATA_DIR)
    assert data.is_directory and data.user == "video-api"


def test_settings_file_is_readable_only_by_root_and_the_service_group(host):
    settings = host.file("/etc/video-download-api/env")
    assert (settings.user, settings.group, settings.mode) == ("root", "video-api", 0o640)
    assert "VIDEO_API_ALLOW_NETWORKS=127.0.0.1/32" in settings.content_string


def test_a_new_enough_system_python_is_used_without_pyenv(host):
    if host.run("/usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'").rc:
        pytest.skip("the system Python is below the minimum: the python_build scenario covers this host")
    assert not host.file("/opt/pyenv").exists
    assert "home = /usr/bin" in host.file(f"{INSTALL_DIR}/venv/pyvenv.cfg").content_string


def test_unit_is_enabled_active_and_runs_as_the_service_user(host):
    service = host.service(SERVICE)
    assert service.is_enabled and service.is_running
    pid = host.check_output(f"systemctl show -P MainPID {SERVICE}")
    assert host.check_output(f"ps -o user= -p {pid}") == "video-api"
    environment = host.check_output(f"systemctl show -P Environment {SERVICE}")
    assert ":/usr/bin:" in environment, "ffmpeg in /usr/bin must be on the unit's PATH"


def test_unit_exposure_is_at_most_4(host):
    output = host.check_output(f"systemd-analyze security --no-pager {SERVICE}")
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", output).group(1))
    print(f"\n{host.backend.hostname}: systemd-analyze security exposure {exposure}")
    assert exposure <= 4.0


def test_listens_on_the_configured_address_and_port(host):
    assert host.socket("tcp://127.0.0.1:8000").is_listening


def test_ufw_is_active_with_ssh_before_the_api_rules(host):
    status = host.check_output("ufw status numbered")
    assert "Status: active" in status
    rules = [line for line in status.splitlines() if "ALLOW IN" in line]
    assert re.search(r"\b22/tcp\b", rules[0]), status
    api_sources = sorted(
        line.split("ALLOW IN")[1].split("#")[0].strip() for line in rules if re.search(r"\b8000/tcp\b", line)
    )
    # group_vars open the API to any source; host_vars narrow it to two CIDRs on debian13.
    if host.backend.hostname == "video-api-debian13":
        assert api_sources == ["127.0.0.0/8", "192.0.2.0/24"], status
    else:
        assert api_sources == ["Anywhere", "Anywhere (v6)"], status
    assert "deny (incoming)" in host.check_output("ufw status verbose")


def test_health_is_healthy(api):
    status, body = api.get("/api/health")
    assert status == 200, body
    assert body["status"] == "healthy"


def test_download_end_to_end_survives_a_restart(host, api, media):
    task = api.completed({"url": media, "extract_audio": True, "keep_video": True})
    task_id = task["task_id"]
    assert task["files"]["audio"], task
    try:
        status, _ = api.get(task["files"]["audio"], out="/tmp/molecule-audio")
        assert status == 200
        streams = host.check_output(
            "ffprobe -v error -show_entries stream=codec_type -of csv=p=0 /tmp/molecule-audio"
        ).split()
        assert streams == ["audio"], streams
    finally:
        host.run("rm -f /tmp/molecule-audio")

    host.check_output(f"systemctl restart {SERVICE}")
    assert wait_for(lambda: api.get("/api/health")[0] == 200, 30)
    _, listing = api.get("/api/tasks?limit=100")
    assert task_id in [item["task_id"] for item in listing["tasks"]], listing
