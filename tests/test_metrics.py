"""/metrics: Prometheus text that prometheus_client parses, and counts that move with a real download."""

import ipaddress

from prometheus_client.parser import text_string_to_metric_families

from app.settings import load_settings
from tests.support.helpers import submit, wait_status


async def scrape(client) -> dict:
    """{(sample name, sorted labels): value} of one scrape."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(await response.text())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


async def test_metrics_move_after_a_download(client, media_server):
    before = await scrape(client)
    assert before[("video_api_tasks", (("status", "completed"),))] == 0
    assert before[("video_api_queue_depth", ())] == 0
    assert before[("video_api_download_duration_seconds_count", ())] == 0
    assert before[("video_api_disk_free_bytes", ())] > 0
    task = await wait_status(client, await submit(client, media_server.url("/media/sample.mp4"), audio_format="mp3"))
    assert task["status"] == "completed", task
    after = await scrape(client)
    assert after[("video_api_tasks", (("status", "completed"),))] == 1
    assert after[("video_api_tasks_finished_total", (("status", "completed"),))] == 1
    assert after[("video_api_downloaded_bytes_total", ())] == task["downloaded_bytes"] > 0
    assert after[("video_api_download_duration_seconds_count", ())] == 1
    assert after[("video_api_download_duration_seconds_sum", ())] > 0
    assert after[("video_api_extraction_duration_seconds_count", ())] == 1
    assert after[("video_api_media_used_bytes", ())] > 0
    accepted = ("video_api_http_requests_total", (("method", "POST"), ("route", "/api/process"), ("status", "202")))
    assert after[accepted] == 1
    polled = (
        "video_api_http_requests_total",
        (("method", "GET"), ("route", "/api/status/{task_id}"), ("status", "200")),
    )
    assert after[polled] >= 1
    latency = ("video_api_http_request_duration_seconds_count", (("method", "POST"), ("route", "/api/process")))
    assert after[latency] == 1
    await client.get("/api/nothing-here")
    missing = ("video_api_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    assert (await scrape(client))[missing] == 1


async def test_a_failed_task_is_counted(client, media_server):
    task = await wait_status(client, await submit(client, media_server.url("/media/absent.mp4")))
    assert task["status"] == "failed"
    assert (await scrape(client))[("video_api_tasks_finished_total", (("status", "failed"),))] == 1


async def test_metrics_answer_only_the_allowed_networks(make_client):
    client = await make_client(metrics_networks=(ipaddress.ip_network("192.0.2.0/24"),))
    response = await client.get("/metrics")
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"


def test_metrics_networks_default_to_loopback():
    assert [str(n) for n in load_settings({}).metrics_networks] == ["127.0.0.0/8", "::1/128"]
    settings = load_settings({"VIDEO_API_METRICS_NETWORKS": "10.0.0.0/8"})
    assert [str(n) for n in settings.metrics_networks] == ["10.0.0.0/8"]
