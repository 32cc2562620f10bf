"""/metrics: Prometheus text that prometheus_client parses, and counts that move with a real download."""

import asyncio
import ipaddress

from prometheus_client.parser import text_string_to_metric_families

import app
from app.metrics import Metrics
from app.settings import load_settings
from tests.support.helpers import make_settings, submit, wait_status

MIB = 1024 * 1024


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text."""
    families = text_string_to_metric_families(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


async def scrape(client) -> dict:
    """{(sample name, sorted labels): value} of one scrape."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await response.text())


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


async def test_build_info_the_limits_from_the_settings_and_the_running_and_waiting_work(make_client, media_server):
    client = await make_client(node_id="node-a", max_concurrent=1, queue_limit=7, min_free_mb=3, max_storage_mb=11)
    idle = await scrape(client)
    assert idle[("video_api_build_info", (("node", "node-a"), ("version", app.__version__)))] == 1
    assert idle[("video_api_queue_limit", ())] == 7
    assert idle[("video_api_workers_max", ())] == 1
    assert idle[("video_api_min_free_bytes", ())] == 3 * MIB
    assert idle[("video_api_media_limit_bytes", ())] == 11 * MIB
    assert idle[("video_api_tasks_leased", (("node", "node-a"),))] == 0  # this host, also when idle
    assert idle[("video_api_oldest_queued_age_seconds", ())] == 0
    running = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&metrics=1"))
    await wait_status(client, running, ("downloading",))
    waiting = await submit(client, media_server.url("/slow/noise.mp4?rate=200000&metrics=2"))
    await asyncio.sleep(0.3)
    text = await (await client.get("/metrics")).text()
    busy = samples(text)
    await client.delete(f"/api/tasks/{waiting}")
    await client.delete(f"/api/tasks/{running}")
    leased = {labels: n for (name, labels), n in busy.items() if name == "video_api_tasks_leased"}
    assert leased == {(("node", "node-a"),): 1}  # a single host's tasks are its own (the store's owner "local")
    assert 0.3 <= busy[("video_api_oldest_queued_age_seconds", ())] < 30
    assert busy[("video_api_queue_depth", ())] == 1
    undocumented = [family.name for family in text_string_to_metric_families(text) if not family.documentation]
    assert undocumented == []
    assert "# HELP video_api_tasks_leased " in text and "# HELP video_api_build_info " in text


def test_figures_of_the_database_are_left_out_while_it_cannot_be_reached(tmp_path):
    settings = make_settings(tmp_path, node_id="node-b")
    response = Metrics().render(settings, None, None, 0, None, 10**9)
    down = samples(response.body.decode())
    assert down[("video_api_database_up", ())] == 0
    assert not {name for name, _ in down} & {
        "video_api_tasks",
        "video_api_queue_depth",
        "video_api_tasks_leased",
        "video_api_oldest_queued_age_seconds",
    }
    # What the settings and the host say still answers: alert ratios keep their denominators.
    assert down[("video_api_build_info", (("node", "node-b"), ("version", app.__version__)))] == 1
    assert down[("video_api_queue_limit", ())] == settings.queue_limit
    assert down[("video_api_workers_max", ())] == settings.max_concurrent


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
