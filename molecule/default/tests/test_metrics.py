"""/metrics on the deployed service: Prometheus text from the host itself, no token needed."""

import json

VENV_PYTHON = "/opt/video-download-api/venv/bin/python"
SCRAPE = (
    "import json, urllib.request; from prometheus_client.parser import text_string_to_metric_families as parse;"
    " text = urllib.request.urlopen('https://127.0.0.1:8000/metrics', timeout=10).read().decode();"
    " print(json.dumps(sorted(f.name for f in parse(text))))"
)

EXPECTED = (
    "video_api_tasks",
    "video_api_queue_depth",
    "video_api_downloaded_bytes",
    "video_api_download_duration_seconds",
    "video_api_http_requests",
    "video_api_disk_free_bytes",
)


def test_metrics_are_served_to_the_host_itself(host):
    names = json.loads(host.check_output(f'{VENV_PYTHON} -c "{SCRAPE}"'))
    assert set(EXPECTED) <= set(names), names
    assert "VIDEO_API_METRICS_NETWORKS=127.0.0.0/8,::1/128" in host.file("/etc/video-download-api/env").content_string
