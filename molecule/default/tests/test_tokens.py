"""The API token: generated on the first deploy, kept by later runs, required by the deployed service."""

import re
import subprocess

from conftest import PROJECT, TOKENS_FILE, host_token, run_playbook


def test_a_random_token_was_generated_readable_only_by_root_and_the_service_group(host):
    tokens = host.file(TOKENS_FILE)
    assert (tokens.user, tokens.group, tokens.mode) == ("root", "video-api", 0o640)
    assert re.fullmatch(r"[A-Za-z0-9]{43}\n", tokens.content_string)
    assert f"VIDEO_API_TOKENS_FILE={TOKENS_FILE}" in host.file("/etc/video-download-api/env").content_string


def test_each_host_has_its_own_token(host):
    others = [name for name in ("video-api-debian12", "video-api-debian13") if name != host.backend.host]
    for other in others:
        other_token = subprocess.run(
            ["docker", "exec", other, "cat", TOKENS_FILE], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert other_token != host_token(host)


def test_the_service_requires_the_token(api):
    assert api.get("/api/health", token="")[0] == 200
    status, body = api.get("/api/tasks", token="")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert api.get("/api/tasks", token="x" * 43)[0] == 401
    assert api.post("/api/process", {"url": "http://127.0.0.1:1/x"}, token="")[0] == 401
    status, body = api.get("/api/tasks")
    assert status == 200, body


def test_a_later_run_keeps_the_token(host):
    before = host_token(host)
    result, report = run_playbook(
        "--limit", host.backend.host, "--tags", "video_api_config", str(PROJECT / "playbooks" / "site.yml")
    )
    stats = report["stats"][host.backend.host]
    assert stats["changed"] == 0, stats
    assert host_token(host) == before
    assert before not in result.stdout
