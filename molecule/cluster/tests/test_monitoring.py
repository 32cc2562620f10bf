"""Monitoring (roles/monitoring): every target Prometheus scrapes is up, an API host stopped fires
VideoApiHostDown at the scenario's webhook receiver and its start resolves it, a queue filled past
the threshold fires VideoApiQueueNearLimit; the exporters answer only HTTPS."""

import json

from conftest import API_HOSTS, DB, MONITOR, SERVICE, docker, wait_for

RECEIVED = "/var/log/molecule-alerts.jsonl"


def prometheus(path):
    """GET a path of Prometheus's API on the monitoring host's loopback."""
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090{path}').read().decode())"
    return json.loads(docker(MONITOR, f'python3 -c "{fetch}"'))["data"]


def notifications():
    """(alertname, instance, status) of every alert in what the receiver got, in order."""
    lines = docker(MONITOR, f"cat {RECEIVED} 2>/dev/null", check=False).splitlines()
    return [
        (alert["labels"]["alertname"], alert["labels"].get("instance"), alert["status"])
        for line in lines
        for alert in json.loads(line)["alerts"]
    ]


def test_every_target_is_scraped_and_up():
    def down():
        targets = prometheus("/api/v1/targets")["activeTargets"]
        return [
            f"{t['labels']['job']} {t['labels']['instance']}: {t['lastError']}" for t in targets if t["health"] != "up"
        ]

    assert wait_for(lambda: not down(), 60), down()
    jobs = {t["labels"]["job"] for t in prometheus("/api/v1/targets")["activeTargets"]}
    assert jobs == {"prometheus", "alertmanager", "video_api", "node", "postgres", "haproxy", "blackbox"}
    # The backup metrics of the database host arrive through node exporter's textfile collector.
    assert prometheus("/api/v1/query?query=video_api_backup_repository_up")["result"]
    # The monitoring host's memory with this fleet (a figure for docs/monitoring.md, not a limit).
    units = ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter")
    for unit in units:
        pid = docker(MONITOR, f"systemctl show -P MainPID {unit}")
        print(unit, docker(MONITOR, f"grep VmRSS /proc/{pid}/status"))
    print("targets", len(prometheus("/api/v1/targets")["activeTargets"]))


def test_an_api_host_stopped_fires_host_down_and_its_start_resolves_it():
    host = API_HOSTS[1]
    docker(host, f"systemctl stop {SERVICE}")
    try:
        assert wait_for(lambda: ("VideoApiHostDown", host, "firing") in notifications(), 90), notifications()
    finally:
        docker(host, f"systemctl start {SERVICE}")
    assert wait_for(lambda: ("VideoApiHostDown", host, "resolved") in notifications(), 90), notifications()


def test_a_queue_filled_past_the_threshold_fires_the_queue_alert(client, media):
    tasks = [client.submit(f"{media}/slow/clip.mp4?rate=20000&monitoring={i}") for i in range(12)]
    try:
        assert wait_for(
            lambda: any(n[0] == "VideoApiQueueNearLimit" and n[2] == "firing" for n in notifications()), 90
        ), notifications()
    finally:
        for task_id in tasks:
            client.session.delete(f"{client.base}/api/tasks/{task_id}", timeout=10)


def test_the_exporters_answer_https_only():
    plain = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:9187/metrics')\""
    assert docker(DB, f"{plain} && echo answered", check=False) != "answered"
