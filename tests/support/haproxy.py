"""The haproxy role's configuration rendered outside Ansible (roles/haproxy/templates/haproxy.cfg.j2), as its
template module writes it: the role's defaults and vars, then the values given; trim_blocks, the trailing newline
kept, Ansible's hash filter. And Debian's haproxy run on it in the foreground (tests/test_role_haproxy_routing.py,
bench/cluster_bench.py)."""

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.support import role_templates
from tests.support.helpers import REPO

ROLE = REPO / "roles" / "haproxy"


def render_config(**values) -> str:
    variables: dict = {}
    for path in (ROLE / "defaults" / "main.yml", ROLE / "vars" / "main.yml"):
        variables |= yaml.safe_load(path.read_text())
    variables |= values
    return (
        role_templates.environment(ROLE)
        .get_template("haproxy.cfg.j2")
        .render(ansible_managed="Ansible managed", **variables)
    )


def local_values(work: Path, certificate: Path, https_port: int, http_port: int, servers: list[dict], **values) -> dict:
    """The role's values for a run on this machine's loopback: files under work (an empty ACME map, the admin
    socket), the frontend's certificate (its key beside it, .key for .crt), plain HTTP to the servers."""
    acme_map = work / "acme-challenge.map"
    acme_map.touch()
    return {
        "haproxy_bind_address": "127.0.0.1",
        "haproxy_https_port": https_port,
        "haproxy_http_port": http_port,
        "haproxy_tls_certificate": str(certificate),
        "haproxy_acme_map": str(acme_map),
        "haproxy_admin_socket": str(work / "haproxy.sock"),
        "haproxy_backend_tls": False,
        "haproxy_backend_servers": servers,
        **values,
    }


def admin(socket_path: str, command: str) -> str:
    """One command on HAProxy's admin socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(socket_path)
        sock.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: sock.recv(65536), b"")).decode()


@contextlib.contextmanager
def running(config: str, work: Path, port: int) -> Iterator[subprocess.Popen]:
    """haproxy -db (foreground) on config until the block ends; waits for port to listen."""
    path, log = work / "haproxy.cfg", work / "haproxy.log"
    path.write_text(config)
    with log.open("w") as output:
        process = subprocess.Popen(
            [shutil.which("haproxy") or "haproxy", "-db", "-f", str(path)], stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited ({process.returncode}): {log.read_text().strip()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy did not listen on {port}: {log.read_text().strip()}") from None
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def version() -> str:
    return subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2]
