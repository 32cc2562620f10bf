"""The OpenAPI document: describes every route, and schemathesis finds no 5xx and no response off the schema."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.api import webpage
from app.api.application import create_app
from app.tenants.tenants_file import Role, Tenant, token_digest, write
from tests.support.helpers import REPO, TEST_ALLOW, free_port, make_settings

TOKEN = "schemathesis-token-0123456789abcdef"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


async def test_the_document_describes_every_route(aiohttp_client, tmp_path):
    application = create_app(make_settings(tmp_path))
    client = await aiohttp_client(application)
    document = await (await client.get("/api/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    # Not the API: the web page's routes (app/webpage.py, HTML and files) and the hosts' internal one.
    outside = (webpage.PAGE_PATH.rstrip("/"), "/internal/")
    routes = {
        (resource.canonical, route.method.lower())
        for resource in application.router.resources()
        for route in resource
        if route.method != "HEAD" and not resource.canonical.startswith(outside)
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER])
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(tmp_path, role):
    # As an admin (a simple token), and as a user of the tenants file, with limits, who owns no task.
    # In a loopback-only network namespace: generated URLs and callback URLs can reach nothing else.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = f"""
set -e
ip link set lo up
{sys.executable} -m app 2> {tmp_path}/service.log &
service=$!
trap 'kill $service; wait $service' EXIT
for _ in $(seq 100); do
  {sys.executable} -c "import urllib.request; urllib.request.urlopen('{base}/api/health')" 2>/dev/null && break
  sleep 0.1
done
{Path(sys.executable).with_name("st")} run {base}/api/openapi.json \\
  --header "Authorization: Bearer {TOKEN}" --checks {CHECKS} --max-examples 15 \\
  --generation-deterministic --no-color
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PORT": str(port),
        "VIDEO_API_DATA_DIR": str(tmp_path / "data"),
        "VIDEO_API_ALLOW_NETWORKS": TEST_ALLOW,
        "VIDEO_API_MIN_FREE_MB": "1",
        "VIDEO_API_RATE_PER_MINUTE": "0",
        "VIDEO_API_DOWNLOAD_ATTEMPTS": "1",
        "VIDEO_API_CALLBACK_SECRET": TOKEN,
        "VIDEO_API_CALLBACK_ATTEMPTS": "1",
    }
    if role == Role.ADMIN:
        env["VIDEO_API_TOKENS"] = TOKEN
    else:
        limits = {"max_active_tasks": 3, "max_storage_mb": 5, "submissions_per_minute": 1000}
        write(tmp_path / "tenants.toml", {"tester": Tenant("tester", Role.USER, token_digest(TOKEN), **limits)})
        env["VIDEO_API_TENANTS_FILE"] = str(tmp_path / "tenants.toml")
    # Run from tmp_path, so schemathesis's example database (.schemathesis/) stays out of the repo.
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # No handler failed (aiohttp itself logs the malformed requests it answers with 400).
    assert "unhandled error" not in (tmp_path / "service.log").read_text()
