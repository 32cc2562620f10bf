"""A converge skips the tasks its roles' probes show would change nothing; drift on the host must
still be found and repaired, and the run after the repair must change nothing."""

from conftest import PROJECT, SERVICE, TOKENS_FILE, changed_tasks, run_playbook

INSTALL = f"/opt/{SERVICE}"
ENV_FILE = f"/etc/{SERVICE}/env"
UNIT = f"/etc/systemd/system/{SERVICE}.service"
VENV_PYTHON = f"{INSTALL}/venv/bin/python"


def converge(host):
    """site.yml on the host alone: the names of the tasks that changed something, and its stats."""
    _, report = run_playbook("--limit", host.backend.host, str(PROJECT / "playbooks" / "site.yml"))
    # "cluster-api1: video_api : Write ..." -> "Write ..."
    changed = {task.split(" : ")[-1] for task in changed_tasks(report, host.backend.host)}
    return changed, report["stats"][host.backend.host]


def test_drift_is_repaired_and_the_next_run_changes_nothing(host, api):
    host.run_expect(
        [0],
        " && ".join(
            [
                f"chmod 0600 {ENV_FILE}",
                f"echo '# edited by hand' >> {UNIT}",
                f"rm {INSTALL}/current/app/api/application.py",
                f"{VENV_PYTHON} -m pip uninstall --yes --quiet idna",
                f"chmod 0644 {TOKENS_FILE}",
                f"systemctl stop {SERVICE}",
            ]
        ),
    )

    changed, _ = converge(host)

    assert {
        "Write the service settings",
        "Install the systemd unit",
        "Unpack the code into its release directory",
        "Install the pinned requirements into the virtualenv",
        "Keep the tokens file readable only by root and the service group",
    } <= changed, changed
    assert host.file(ENV_FILE).mode == 0o640
    assert "edited by hand" not in host.file(UNIT).content_string
    assert host.file(f"{INSTALL}/current/app/api/application.py").exists
    assert host.run(f"{VENV_PYTHON} -c 'import idna'").rc == 0
    assert host.file(TOKENS_FILE).mode == 0o640
    assert host.service(SERVICE).is_running
    status, body = api.get("/api/health")
    assert status == 200 and body["status"] == "healthy", body

    changed, stats = converge(host)
    assert stats["changed"] == 0, changed
