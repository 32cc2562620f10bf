"""The haproxy role's download routing (roles/haproxy/templates/haproxy.cfg.j2): one use-server rule a server,
matching the tag the service starts its file ids with (app/store/file_ids.py node_tag, the one source of the
formula; the template is checked against it). With Debian's haproxy on this machine: the rendered file passes
haproxy -c, and run on two local backends, downloads go to the server their id names, also while it drains, and
are balanced once it is in maintenance or down."""

import http.server
import re
import subprocess
import threading
import time

import pytest
import yaml

from app.store.file_ids import new_file_id, node_tag
from tests.support.certificates import TestCA
from tests.support.haproxy import admin, local_values, render_config, running
from tests.support.helpers import REPO, free_port, trusting

RULE = re.compile(r"^    use-server (\S+) if \{ path_beg /api/download/([0-9a-f]+) \}$", re.MULTILINE)
SERVERS = [
    {"name": "api-a", "address": "10.0.0.1"},
    {"name": "api-b", "address": "10.0.0.2", "port": 8443, "node": "node-of-b"},
    {"name": "api-c", "address": "10.0.0.3", "node": ""},  # empty: the name, as site.yml passes an unset one
]


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def status(socket: str, server: str) -> str:
    """The server's status in HAProxy's stats (UP, DOWN, DRAIN, MAINT...)."""
    (line,) = (line for line in admin(socket, "show stat").splitlines() if line.startswith(f"video_api,{server},"))
    return line.split(",")[17]


def rules(config: str) -> dict[str, str]:
    return dict(RULE.findall(config))


def test_each_server_has_the_rule_of_its_node_tag():
    assert rules(render_config(haproxy_backend_servers=SERVERS)) == {
        "api-a": node_tag("api-a"),
        "api-b": node_tag("node-of-b"),  # node, when given, not the name
        "api-c": node_tag("api-c"),
    }


def test_no_servers_no_rules():
    assert rules(render_config(haproxy_backend_servers=[])) == {}


@pytest.fixture
def certificate(tmp_path):
    ca = TestCA.create(tmp_path)
    cert, _key, _serial = ca.issue(tmp_path)
    return ca.path, cert


@pytest.mark.parametrize("backend_tls", [True, False])
def test_haproxy_accepts_the_rendered_file(tmp_path, certificate, backend_tls):
    ca, cert = certificate
    values = local_values(tmp_path, cert, free_port(), free_port(), SERVERS, haproxy_metrics_port=free_port())
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        render_config(**values | {"haproxy_backend_tls": backend_tls, "haproxy_backend_ca_file": str(ca)})
    )
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


class Backend(http.server.ThreadingHTTPServer):
    """An API host as HAProxy sees it: health 200, any other GET answered with its name in X-Served-By."""

    def __init__(self, name: str) -> None:
        self.name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                handler.send_response(200)
                handler.send_header("X-Served-By", name)
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_downloads_go_to_the_server_their_id_names(tmp_path, certificate):
    ca, cert = certificate
    backends = {name: Backend(name) for name in ("node-a", "node-b")}
    servers = [{"name": name, "address": "127.0.0.1", "port": backend.port} for name, backend in backends.items()]
    https_port = free_port()
    values = local_values(tmp_path, cert, https_port, free_port(), servers, haproxy_check_inter="100ms")
    client = trusting(ca)

    def served_by(path: str, times: int = 10) -> set[str]:
        return {
            client.get(f"https://127.0.0.1:{https_port}{path}", timeout=5).headers["X-Served-By"] for _ in range(times)
        }

    try:
        with running(render_config(**values), tmp_path, https_port):
            a, b = f"/api/download/{new_file_id('node-a')}", f"/api/download/{new_file_id('node-b')}"
            assert wait_for(lambda: served_by("/api/tasks", 4) == {"node-a", "node-b"}, 10)  # both up
            assert (served_by(a), served_by(b)) == ({"node-a"}, {"node-b"})
            # An id of another shape (a file of an older release) is balanced.
            assert served_by("/api/download/0123456789abcdef0123456789abcdef") == {"node-a", "node-b"}

            socket = values["haproxy_admin_socket"]
            # Draining (rolling_update.yml's first step, weight 0): no new balanced requests, but its rule holds.
            admin(socket, "set server video_api/node-a state drain")
            assert served_by("/api/tasks") == {"node-b"}
            assert served_by(a) == {"node-a"}
            # In maintenance (the drain's end, the host stopped): the rule is ignored, the other server answers.
            admin(socket, "set server video_api/node-a state maint")
            assert served_by(a) == {"node-b"}
            admin(socket, "set server video_api/node-a state ready")
            assert wait_for(lambda: served_by(a) == {"node-a"}, 10)
            # Down (its checks fail): the same.
            backends["node-a"].shutdown()
            backends["node-a"].server_close()
            assert wait_for(lambda: status(socket, "node-a") == "DOWN", 10)
            assert served_by(a) == {"node-b"}
    finally:
        for backend in backends.values():
            backend.server_close()


def test_compose_routes_each_replicas_downloads_to_it():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    config = compose["services"]["haproxy"]["environment"]["HAPROXY_CONFIG"]
    rules = dict(re.findall(r"use-server (\S+) if \{ path_beg /api/download/([0-9a-f]+) \}", config))
    replicas = {
        name: service["environment"]["VIDEO_API_NODE_ID"]
        for name, service in compose["services"].items()
        if "cluster" in service.get("profiles", ()) and "VIDEO_API_NODE_ID" in service.get("environment", {})
    }
    assert replicas and rules == {name: node_tag(node) for name, node in replicas.items()}, (rules, replicas)
