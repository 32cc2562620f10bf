"""Named users (video_api_tenants, in this scenario's molecule.yml): the tenants file holds their tokens'
digests only, each token is its user on the deployed service, and a changed user is reloaded, not restarted."""

import hashlib
import json
from pathlib import Path

import yaml
from conftest import PROJECT, SERVICE, changed_tasks, run_playbook, wait_for

TENANTS_FILE = f"/etc/{SERVICE}/tenants.toml"
ENV_FILE = f"/etc/{SERVICE}/env"
# As the scenario's inventory gives them (one admin, one user).
TENANTS = yaml.safe_load((Path(__file__).parents[1] / "molecule.yml").read_text())["provisioner"]["inventory"][
    "group_vars"
]["video_api"]["video_api_tenants"]
ADMIN = next(tenant for tenant in TENANTS if tenant["role"] == "admin")
USER = next(tenant for tenant in TENANTS if tenant["role"] == "user")
ROTATED_TOKEN = "molecule-rotated-user-token-0123456789"


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def converge_config(host, tenants=None):
    """The role's settings tasks (and the handlers they notify) on the host alone, with these users
    instead of the scenario's; the names of the tasks that changed something, and the run's output."""
    extra = ["--extra-vars", json.dumps({"video_api_tenants": tenants})] if tenants is not None else []
    result, report = run_playbook(
        "--limit", host.backend.host, "--tags", "video_api_config", *extra, str(PROJECT / "playbooks" / "site.yml")
    )
    return {task.split(" : ")[-1] for task in changed_tasks(report, host.backend.host)}, result


def test_the_tenants_file_holds_digests_readable_only_by_root_and_the_service_group(host):
    tenants = host.file(TENANTS_FILE)
    assert tenants.exists
    assert (tenants.user, tenants.group, tenants.mode) == ("root", "video-api", 0o640)
    content = tenants.content_string
    for tenant in TENANTS:
        assert f'token_sha256 = "{digest(tenant["token"])}"' in content, tenant["name"]
        assert tenant["token"] not in content, tenant["name"]
    assert f"VIDEO_API_TENANTS_FILE={TENANTS_FILE}\n" in host.file(ENV_FILE).content_string


def test_each_token_is_its_user(api):
    for tenant in TENANTS:
        status, body = api.get("/api/tasks", token=tenant["token"])
        assert status == 200, (tenant["name"], body)

    # Nothing listens on port 9: the tasks end at once; DELETE removes them either way.
    status, body = api.post("/api/process", {"url": "http://127.0.0.1:9/clip.mp4?admin-task"}, token=ADMIN["token"])
    assert status == 202, body
    admins = body["task_id"]
    status, body = api.post("/api/process", {"url": "http://127.0.0.1:9/clip.mp4?user-task"}, token=USER["token"])
    assert status == 202, body
    users = body["task_id"]
    try:
        # A user sees its own tasks only; an admin every task.
        assert api.get(f"/api/status/{admins}", token=USER["token"])[0] == 404
        assert api.get(f"/api/status/{users}", token=USER["token"])[0] == 200
        assert api.get(f"/api/status/{admins}", token=ADMIN["token"])[0] == 200
        assert api.get(f"/api/status/{users}", token=ADMIN["token"])[0] == 200
    finally:
        for task in (admins, users):
            api.call("DELETE", f"/api/tasks/{task}", token=ADMIN["token"])


def test_a_changed_user_is_reloaded_not_restarted(host, api):
    main_pid = f"systemctl show --property MainPID --value {SERVICE}"
    before = host.check_output(main_pid)
    rotated = [dict(tenant, token=ROTATED_TOKEN) if tenant is USER else tenant for tenant in TENANTS]
    try:
        changed, result = converge_config(host, rotated)
        assert "Reload video-download-api for changed users" in changed, changed
        assert "Restart video-download-api" not in changed, changed
        assert ROTATED_TOKEN not in result.stdout and USER["token"] not in result.stdout
        assert f'token_sha256 = "{digest(ROTATED_TOKEN)}"' in host.file(TENANTS_FILE).content_string
        assert wait_for(lambda: api.get("/api/tasks", token=ROTATED_TOKEN)[0] == 200, 15)
        assert api.get("/api/tasks", token=USER["token"])[0] == 401
        assert host.check_output(main_pid) == before
    finally:
        # Back to the scenario's users, again without a restart; the run after that changes nothing.
        changed, _ = converge_config(host)
    assert "Reload video-download-api for changed users" in changed and "Restart video-download-api" not in changed
    assert wait_for(lambda: api.get("/api/tasks", token=USER["token"])[0] == 200, 15)
    assert host.check_output(main_pid) == before
    assert converge_config(host)[0] == set()
