"""Where the downloader is led: redirects to other schemes are refused where they are seen, a
host name with a blocked address is refused whole everywhere, and bodies cut short more often
than yt-dlp retries are retried by the service."""

import shutil
import sys

import pytest
import requests

from tests.support.helpers import ServiceProcess, submit, wait_status
from tests.support.mediaserver import BLOCKED_HOST

MIXED_HOST = "mixed.test"  # resolves to 127.0.0.1 (allowed in tests) and 127.0.0.2 (blocked)


async def test_a_redirect_to_another_scheme_fails_the_task_clearly(client, media_server, capfd):
    task_id = await submit(client, media_server.url(f"/redirect?to=ftp://{BLOCKED_HOST}/sample.mp4"))
    status = await wait_status(client, task_id)
    assert status["status"] == "failed"
    assert "redirect refused: scheme 'ftp' is not allowed" in status["error"], status["error"]
    assert "internal error" not in status["error"]
    assert "Traceback" not in capfd.readouterr().err


async def test_a_body_cut_short_more_often_than_yt_dlp_retries_is_retried_by_the_service(make_client, media_server):
    client = await make_client(download_attempts=3, retry_delay_s=0.1)
    task_id = await submit(client, media_server.url("/truncated/cut7/noise.mp4?times=7"), extract_audio=False)
    status = await wait_status(client, task_id)
    assert status["status"] == "completed", status
    assert media_server.flaky_hits["cut7"] > 7
    video = await (await client.get(status["files"]["video"])).read()
    assert video == (media_server.folder / "noise.mp4").read_bytes()


@pytest.fixture
def mixed_host_service(tmp_path):
    """The service in its own mount namespace, where /etc/hosts gives MIXED_HOST both addresses."""
    if shutil.which("unshare") is None:
        pytest.fail("needs unshare (util-linux)")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {MIXED_HOST}\n{BLOCKED_HOST} {MIXED_HOST}\n")
    (tmp_path / "data").mkdir()
    service = ServiceProcess(tmp_path / "data")
    service.command = [
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount --bind {hosts} /etc/hosts && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "app",
    ]
    service.start()
    yield service
    service.stop()


def test_a_host_with_a_blocked_address_is_refused_at_submit_and_through_a_redirect(mixed_host_service, media_server):
    service = mixed_host_service
    target = f"http://{MIXED_HOST}:{media_server.port}/media/sample.mp4"
    response = requests.post(service.base + "/api/process", json={"url": target}, timeout=10)
    assert response.status_code == 422 and response.json()["error"]["code"] == "blocked_address"
    task_id = service.submit(media_server.url(f"/redirect?to={target}"))
    status = service.wait(task_id, lambda s: s["status"] in ("completed", "failed"))
    assert status["status"] == "failed", status
    assert f"host {MIXED_HOST}: loopback address {BLOCKED_HOST} is not allowed" in status["error"], status["error"]
