"""SIGTERM at any moment after a submit, with the download host cold or warm: the service exits
within 5 s and leaves no process behind (a download being started when the stop came included)."""

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
    """Live processes whose environment holds marker: the service, its download host, FFmpeg."""
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


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def marked_service(tmp_path: Path) -> tuple[ServiceProcess, str]:
    """A started service whose every process carries a marker of its own in its environment."""
    marker = f"VIDEO_API_TEST_TRIAL={uuid.uuid4().hex}"
    service = ServiceProcess(
        tmp_path / f"trial-{uuid.uuid4().hex[:8]}",
        VIDEO_API_RATE_PER_MINUTE="0",
        VIDEO_API_TEST_TRIAL=marker.split("=")[1],
    )
    service.data_dir.mkdir(parents=True)
    return service.start(), marker


def assert_nothing_left(marker: str, grace_s: float, when: str) -> None:
    deadline = time.monotonic() + grace_s  # SIGKILLed processes take a moment to vanish
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: command_line(pid) for pid in processes_with(marker)}
    assert left == {}, f"processes left behind {when}"


def trial(tmp_path: Path, media_server, delay: float, warm: bool, queued: int = 1) -> float:
    service, marker = marked_service(tmp_path)
    if warm:  # a first download running means the download host has finished its imports
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
    assert_nothing_left(marker, 1.0, f"after a stop {delay}s after a submit")
    return elapsed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_the_download_host_goes_with_the_service_even_while_it_still_imports(tmp_path, signum):
    """The download host spends about a second importing yt-dlp after start-up: a stop or a crash
    then must take it along at once, not leave it to finish its imports alone."""
    service, marker = marked_service(tmp_path)
    service.stop(signum, timeout=30)
    assert_nothing_left(marker, 0.3, f"by a {signal.Signals(signum).name} right after start-up")


@pytest.mark.parametrize("warm", [False, True], ids=["cold-download-host", "warm-download-host"])
def test_sigterm_at_many_delays_after_a_submit_exits_promptly(tmp_path, media_server, warm):
    times = [trial(tmp_path, media_server, delay, warm) for delay in DELAYS_S]
    print(f"{'warm' if warm else 'cold'}: exit times {[round(t, 2) for t in times]} s")
    assert max(times) < EXIT_WITHIN_S, times


def test_sigterm_with_a_hundred_tasks_queued_exits_promptly(tmp_path, media_server):
    elapsed = trial(tmp_path, media_server, 0.2, warm=True, queued=100)
    print(f"100 queued: exit in {elapsed:.2f} s")
    assert elapsed < EXIT_WITHIN_S
