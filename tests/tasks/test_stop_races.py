"""SIGTERM at any moment after a submit, with the fork server cold or warm: the service exits
within 5 s and leaves no process behind (a worker being started when the stop came included)."""

import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.helpers import ServiceProcess

EXIT_WITHIN_S = 5.0
DELAYS_S = (0.0, 0.03, 0.08, 0.15, 0.25, 0.4)


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds marker: the service, its fork server, workers, FFmpeg."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def trial(tmp_path: Path, media_server, delay: float, warm: bool, queued: int = 1) -> float:
    marker = f"VIDEO_API_TEST_TRIAL={uuid.uuid4().hex}"
    service = ServiceProcess(
        tmp_path / f"trial-{uuid.uuid4().hex[:8]}",
        VIDEO_API_RATE_PER_MINUTE="0",
        VIDEO_API_TEST_TRIAL=marker.split("=")[1],
    )
    service.data_dir.mkdir(parents=True)
    service.start()
    if warm:  # a first download running means the fork server has finished its imports
        first = service.submit(media_server.url(f"/slow/noise.mp4?rate=100000&warm={marker}"), extract_audio=False)
        service.wait(first, lambda s: s["status"] == "downloading" and s["progress"] > 0)
    for n in range(queued):
        requests.post(
            service.base + "/api/process",
            timeout=10,
            json={"url": media_server.url(f"/slow/noise.mp4?rate=100000&n={n}&{marker}")},
        )
    time.sleep(delay)
    elapsed = service.stop(signal.SIGTERM, timeout=30)
    deadline = time.monotonic() + 1.0  # SIGKILLed processes take a moment to vanish
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == [], f"processes left behind after a stop {delay}s after a submit"
    return elapsed


@pytest.mark.parametrize("warm", [False, True], ids=["cold-fork-server", "warm-fork-server"])
def test_sigterm_at_many_delays_after_a_submit_exits_promptly(tmp_path, media_server, warm):
    times = [trial(tmp_path, media_server, delay, warm) for delay in DELAYS_S]
    print(f"{'warm' if warm else 'cold'}: exit times {[round(t, 2) for t in times]} s")
    assert max(times) < EXIT_WITHIN_S, times


def test_sigterm_with_a_hundred_tasks_queued_exits_promptly(tmp_path, media_server):
    elapsed = trial(tmp_path, media_server, 0.2, warm=True, queued=100)
    print(f"100 queued: exit in {elapsed:.2f} s")
    assert elapsed < EXIT_WITHIN_S
