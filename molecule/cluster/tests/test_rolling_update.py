"""playbooks/rolling_update.yml under load: a changed release reaches both hosts with no failed
request and an SSE follower sees its task to the end; a release that fails its health gate
stops the play at the first host, which is back on its previous release, the other untouched."""

import shutil
import time

from conftest import API_HOSTS, INSTALL_DIR, PROJECT, TERMINAL, Load, current_release, docker, run_playbook

PLAYBOOK = str(PROJECT / "playbooks" / "rolling_update.yml")


def release_copy(tmp_path, change):
    """A copy of app/ with one change, so it bundles into a new release."""
    source = tmp_path / "app"
    shutil.copytree(PROJECT / "app", source, ignore=shutil.ignore_patterns("__pycache__"))
    change(source)
    return source


def test_a_rolling_update_under_load_fails_no_request(client, media, tmp_path):
    before = {host: current_release(host) for host in API_HOSTS}
    source = release_copy(tmp_path, lambda app: (app / "release_note.txt").write_text(f"{time.time()}\n"))
    # Slower than the update takes, so both hosts restart under the task and its SSE stream.
    task_id = client.submit(f"{media}/slow/clip.mp4?rate=16000")
    with Load(client, task_id) as load:
        started = time.monotonic()
        _, report = run_playbook(PLAYBOOK, "-e", f"video_api_source_dir={source}")
        duration = time.monotonic() - started
        # The follower keeps going until the task (which may have moved host) ends.
        deadline = time.monotonic() + 300
        while load.sse_last_status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(1)
    after = {host: current_release(host) for host in API_HOSTS}
    print(
        f"\nrolling update of {len(API_HOSTS)} hosts: {duration:.1f} s; {load.requests} requests,"
        f" {len(load.failures)} failed; SSE streams {load.sse_streams}, last status {load.sse_last_status};"
        f" served by {sorted(filter(None, load.served_by))}"
    )
    assert all(after[host] != before[host] for host in API_HOSTS), (before, after)
    assert load.failures == []
    assert load.sse_last_status == "completed" and load.sse_streams >= 2
    assert {host: stats["failures"] for host, stats in report["stats"].items()} == dict.fromkeys(report["stats"], 0)


def test_a_release_that_fails_its_health_gate_is_rolled_back_on_the_first_host_only(client, tmp_path):
    before = {host: current_release(host) for host in API_HOSTS}
    previous_before = {host: docker(host, f"readlink {INSTALL_DIR}/previous") for host in API_HOSTS}
    releases_before = {host: set(docker(host, f"ls {INSTALL_DIR}/releases").split()) for host in API_HOSTS}
    broken = release_copy(
        tmp_path, lambda app: (app / "__main__.py").write_text(f"raise SystemExit('broken release {time.time()}')\n")
    )
    task_id = client.submit("http://127.0.0.1:9/nothing-listens?bad-release")
    with Load(client, task_id) as load:
        result, _ = run_playbook(
            PLAYBOOK, "-e", f"video_api_source_dir={broken}", "-e", "video_api_health_timeout=20", check=False
        )
    output = result.stdout
    assert result.returncode != 0
    first, second = API_HOSTS
    assert f"Rolling update stopped at {first}" in output, output[-3000:]
    after = {host: current_release(host) for host in API_HOSTS}
    assert after == before
    assert {host: docker(host, f"readlink {INSTALL_DIR}/previous") for host in API_HOSTS} == previous_before
    # The first host got the broken release (kept for inspection), the second nothing at all.
    releases_after = {host: set(docker(host, f"ls {INSTALL_DIR}/releases").split()) for host in API_HOSTS}
    assert len(releases_after[first] - releases_before[first]) == 1, releases_after
    assert releases_after[second] == releases_before[second]
    for host in API_HOSTS:
        assert (
            docker(
                host,
                "python3 -c \"import urllib.request as u; print(u.urlopen('https://127.0.0.1:8000/api/health').status)\"",
            )
            == "200"
        )
    print(f"\nbad release: {load.requests} requests, {len(load.failures)} failed")
    assert load.failures == []


def test_rollback_puts_every_host_on_its_previous_release(client):
    previous = {host: docker(host, f"readlink {INSTALL_DIR}/previous") for host in API_HOSTS}
    current = {host: current_release(host) for host in API_HOSTS}
    task_id = client.submit("http://127.0.0.1:9/nothing-listens?rollback")
    with Load(client, task_id) as load:
        run_playbook(str(PROJECT / "playbooks" / "rollback.yml"))
    assert {host: current_release(host) for host in API_HOSTS} == previous
    assert {host: docker(host, f"readlink {INSTALL_DIR}/previous") for host in API_HOSTS} == current
    print(f"\nrollback: {load.requests} requests, {len(load.failures)} failed")
    assert load.failures == []
