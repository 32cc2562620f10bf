"""A --check run of site.yml against the converged hosts must report no changes."""

from conftest import PROJECT, changed_tasks, run_playbook


def test_check_mode_run_reports_no_changes():
    _, report = run_playbook("--check", str(PROJECT / "playbooks" / "site.yml"))
    changed = changed_tasks(report)
    print("\n--check recap:", {host: stats["changed"] for host, stats in report["stats"].items()})
    assert not changed, changed
    assert all(stats["changed"] == 0 for stats in report["stats"].values())
