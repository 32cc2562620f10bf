"""Address guard and settings on their own (the task stores: test_store_contract.py)."""

import ipaddress
import subprocess
import sys

import pytest

from app.settings import ConfigError, Settings, load_settings
from app.tasks.address_guard import BlockedAddressError, blocked_reason, check_url_syntax
from tests.support.helpers import REPO

ALLOW = (ipaddress.ip_network("127.0.0.1/32"),)


# Pure checks of addresses: nothing here opens a connection.
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.2",
        "fe80::1%eth0",
    ],
)
def test_blocked_addresses(address):
    assert blocked_reason(address, ALLOW)


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1", "93.184.215.14", "2606:4700::1111"])
def test_allowed_addresses(address):
    assert blocked_reason(address, ALLOW) is None


def test_allow_list_opens_private_ranges():
    assert blocked_reason("10.9.8.7", (ipaddress.ip_network("10.0.0.0/8"),)) is None
    assert blocked_reason("10.9.8.7", ()) is not None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x/", "//host/x", "http://", "http://h:bad/"])
def test_url_syntax_refused(url):
    with pytest.raises(BlockedAddressError):
        check_url_syntax(url)


def test_socket_guard_refuses_blocked_connects_in_a_worker_like_process():
    # A child process: the guard patches the socket module of the process that installs it.
    code = """
import ipaddress, socket
from app.tasks.address_guard import install_socket_guard, BlockedAddressError
install_socket_guard([ipaddress.ip_network("127.0.0.1/32")])
for target in [("127.0.0.2", 9), ("::ffff:127.0.0.2", 9)]:
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    try:
        socket.socket(family).connect(target)
    except BlockedAddressError as exc:
        print("blocked", exc)
try:
    socket.create_connection(("127.0.0.2", 9), timeout=1)
except BlockedAddressError as exc:
    print("blocked", exc)
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except ConnectionRefusedError:
    print("allowed")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.count("blocked") == 3, result.stdout
    assert result.stdout.strip().endswith("allowed")


def test_settings_defaults_match_the_contract():
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.max_concurrent, settings.queue_limit) == ("127.0.0.1", 8000, 2, 100)
    assert (settings.retention_hours, settings.max_storage_mb, settings.min_free_mb) == (24, 10240, 1024)
    assert settings.max_filesize_mb == 2048 and settings.allow_networks == () and settings.log_level == "INFO"
    assert settings.db_path.parent != settings.media_dir and settings.media_dir not in settings.db_path.parents


def test_settings_parse_values():
    settings = load_settings(
        {
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "VIDEO_API_ALLOW_NETWORKS": " 10.0.0.0/8, fd00::/8 ",
            "VIDEO_API_LOG_LEVEL": "debug",
            "VIDEO_API_RETENTION_HOURS": "0.5",
        }
    )
    assert settings.port == 9000 and settings.log_level == "DEBUG" and settings.retention_hours == 0.5
    assert [str(n) for n in settings.allow_networks] == ["10.0.0.0/8", "fd00::/8"]
    with pytest.raises(ConfigError, match="VIDEO_API_RETENTION_HOURS"):
        load_settings({"VIDEO_API_RETENTION_HOURS": "nan"})
