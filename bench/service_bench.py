"""Benchmarks of the service (prints figures; not a test).

    .venv/bin/python bench/service_bench.py [--only api,rss,churn,wall,reuse] [--targets status,list50,...]
        [--big-mb 200] [--rounds 3] [--warm 60] [--original-venv DIR --original-src DIR]

api    GET /api/status and GET /api/tasks?limit=50 with 100,000 stored tasks at 1/16/64 connections,
       and list latency with 1,000 vs 100,000 tasks (cost must not grow with the table)
rss    PSS of each process of the tree idle, and the peak PSS of the whole tree (FFmpeg, ffprobe
       included) while three --big-mb downloads run at once, fresh and after --warm small downloads,
       --rounds times: this service, the original project (tmwgsicp/video-download-api, when
       --original-venv/--original-src are given) and three `yt-dlp` CLI processes, in the same run
churn  RSS of the main process and the download host across 200 downloads
wall   one large local download through the service vs plain `yt-dlp` on the same file
reuse  `reuse: true` answered from a completed task (the download host decides which video the URL
       names) vs downloading the same video again

The load generator runs in this process on the same 2 cores as the service, so requests/s is a
floor for the service, not a ceiling. All traffic is to 127.0.0.1.
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from store_bench import fill_sqlite  # noqa: E402

from tests.support.helpers import free_port, host_pids  # noqa: E402
from tests.support.mediaserver import MediaServer, generate_media  # noqa: E402

PYTHON = sys.executable


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _rollup(pid: int) -> tuple[int, int]:
    """PSS of pid and its anonymous part (KB). PSS splits shared pages among the processes that map
    them; its other part are pages of files (FFmpeg's and Python's libraries) the kernel may drop."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Pss", "Pss_Anon"):
            fields[key] = int(value.split()[0])
    return fields["Pss"], fields.get("Pss_Anon", 0)


def answering(server, what: str):
    """server, once its /api/health answers (30 s at most)."""
    for _ in range(300):
        try:
            urllib.request.urlopen(server.base + "/api/health", timeout=1).read()
            return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


class Service:
    def __init__(self, data_dir: Path, **env):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "VIDEO_API_DATA_DIR": str(data_dir),
            "VIDEO_API_ALLOW_NETWORKS": "127.0.0.1/32",
            "VIDEO_API_MIN_FREE_MB": "1",
            "VIDEO_API_LOG_LEVEL": "WARNING",
            "VIDEO_API_RATE_PER_MINUTE": "0",
            **env,
        }
        # Rate limiting off: the bench submits hundreds of tasks a minute from one client.

    def __enter__(self):
        self.process = subprocess.Popen([PYTHON, "-m", "app"], cwd=REPO, env=self.env)
        try:
            return answering(self, "service")
        except BaseException:  # __exit__ is not called for a failed __enter__: nothing left running
            self.process.kill()
            self.process.wait()
            raise

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)

    def tree_rss(self) -> dict:
        main = self.process.pid
        return {"main_kb": rss_kb(main), "host_kb": sum(rss_kb(p) for p in host_pids(main))}


def fill_store(db_path: Path, count: int) -> list[str]:
    """Insert count finished tasks (one transaction); returns some ids to query."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return fill_sqlite(db_path, count)[:: max(1, count // 1000)]


async def load(
    base: str, paths: list[str], connections: int, seconds: float, headers: list[dict] | None = None
) -> dict:
    """GETs of paths in turn on `connections` connections; headers, if given, one dict per path, sent with it."""
    latencies = []
    stop_at = time.perf_counter() + seconds

    async def one_connection(session, offset):
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            n = i % len(paths)
            async with session.get(base + paths[n], headers=headers[n] if headers else None) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)
            i += connections

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one_connection(session, n) for n in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


_WRK_SCRIPT = """
paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


def _wrk_ms(text: str) -> float:
    value = float(text.rstrip("mus"))
    return (
        value / 1000
        if text.endswith("us")
        else value * 1000
        if text.endswith("s") and not text.endswith("ms")
        else value
    )


def load_wrk(
    base: str, paths: list[str], connections: int, seconds: float, work: Path, headers: tuple[str, ...] = ()
) -> dict:
    """Same measurement with wrk (C, one thread), which leaves the service more of the 2 cores;
    headers ("Name: value") go on every request."""
    paths_file, script = work / "wrk-paths.txt", work / "wrk.lua"
    paths_file.write_text("\n".join(paths) + "\n")
    script.write_text(_WRK_SCRIPT % paths_file)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script)]
    command += [argument for header in headers for argument in ("-H", header)] + [base]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(parts[1])
        elif parts and parts[0] in ("50%", "99%"):
            figures["p50_ms" if parts[0] == "50%" else "p99_ms"] = _wrk_ms(parts[1])
        elif "Non-2xx" in line:
            raise RuntimeError(line)
    return figures


API_TARGETS = ("status", "list50", "list50-failed")


CEILING_SERVER = """
import sys
from aiohttp import web
body = b'{"x": "' + b"x" * (int(sys.argv[2]) - 9) + b'"}'
async def constant(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/{tail:.*}", constant)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def side_by_side(rounds: list, names: tuple[str, str], unit: str = "req/s") -> str:
    """Two sides measured in alternating rounds (load_wrk results, one pair a round): each side's best
    round (the machine's other load comes and goes), the second's rate over the first's, the range of
    the rounds' ratios (how much that load moved them) and the p99 ratio."""
    best = [max((pair[side] for pair in rounds), key=lambda result: result["rps"]) for side in (0, 1)]
    ratios = sorted(second["rps"] / first["rps"] for first, second in rounds)
    shown = [
        f"{name} {result['rps']:7.0f} {unit}  p99 {result['p99_ms']:6.2f} ms"
        for name, result in zip(names, best, strict=True)
    ]
    return (
        f"{shown[0]} | {shown[1]} | {best[1]['rps'] / best[0]['rps']:.2f}x"
        f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x), p99 {best[1]['p99_ms'] / best[0]['p99_ms']:.2f}x"
    )


def ceiling(work: Path, body_bytes: int, connections: int, seconds: float) -> dict:
    """The same wrk load on a bare aiohttp handler answering a constant JSON body of body_bytes:
    what this machine gives any aiohttp service right now, to read the service's figure against."""
    port = free_port()
    server = subprocess.Popen([PYTHON, "-c", CEILING_SERVER, str(port), str(body_bytes)])
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        return load_wrk(f"http://127.0.0.1:{port}", ["/"], connections, seconds, work)
    finally:
        server.terminate()
        server.wait(10)


def bench_api(work: Path, seconds: float, wanted: set) -> None:
    use_wrk = shutil.which("wrk") is not None
    generator = "wrk, 1 thread" if use_wrk else "aiohttp client in this process (install wrk for better figures)"
    print(f"== API with stored tasks; load generator: {generator}; it shares the 2 cores ==")
    for count in (1_000, 100_000):
        data = work / f"api-{count}"
        started = time.perf_counter()
        ids = fill_store(data / "db" / "tasks.sqlite3", count)
        print(f"stored {count:,} tasks in {time.perf_counter() - started:.1f}s")
        with Service(data) as service:
            targets = {
                "status": [f"/api/status/{task_id}" for task_id in ids],
                "list50": ["/api/tasks?limit=50"],
                "list50-failed": ["/api/tasks?limit=50&status=failed"],
            }
            targets = {name: paths for name, paths in targets.items() if name in wanted}
            levels = (1, 16, 64) if count == 100_000 else (1,)
            for name, paths in targets.items():
                asyncio.run(load(service.base, paths, 4, 0.5))  # warm up
                for connections in levels:
                    if use_wrk:
                        result = load_wrk(service.base, paths, connections, seconds, work)
                    else:
                        result = asyncio.run(load(service.base, paths, connections, seconds))
                    print(
                        f"  {count:>7,} tasks  {name:<14} {connections:>2} conn: {result['rps']:7.0f} req/s"
                        f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
                    )
                if use_wrk and count == 100_000:
                    size = len(urllib.request.urlopen(service.base + paths[0], timeout=10).read())
                    top = ceiling(work, size, levels[-1], seconds)
                    print(
                        f"  {'':>7}        bare aiohttp, same {size}-byte body, {levels[-1]} conn: {top['rps']:7.0f}"
                        f" req/s  p99 {top['p99_ms']:6.2f} ms (service at {result['rps'] / top['rps']:.2f}x)"
                    )
        shutil.rmtree(data)


async def _submit(session, base, url, **options) -> str:
    async with session.post(base + "/api/process", json={"url": url, **options}) as response:
        body = await response.json()
        assert response.status == 202, body
        return body["task_id"]


async def _wait(session, base, task_id, interval=0.02) -> dict:
    while True:
        async with session.get(f"{base}/api/status/{task_id}") as response:
            body = await response.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        await asyncio.sleep(interval)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += map(int, task.read_text().split())
    return children


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent) of every process under pid."""
    return [pair for child in _children(pid) for pair in ((child, pid), *_descendants(child))]


def _role(pid: int, parent: int | None) -> str:
    if parent is None:
        return "main"
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(command)
    if b"app.tasks.host" in text:
        return "download host"
    return Path(command[0].decode()).name or "?"


@dataclass
class Tree:
    """PSS (KB) of every process of a tree, by role: main, download host, or the program's name
    (ffprobe, ffmpeg, yt-dlp); and the anonymous part of their sum."""

    by_role: dict[str, list[int]] = field(default_factory=dict)
    anon_kb: int = 0

    @property
    def total_kb(self) -> int:
        return sum(sum(values) for values in self.by_role.values())

    def __str__(self) -> str:
        parts = [
            f"{role} {'+'.join(f'{kb / 1024:.1f}' for kb in sorted(values, reverse=True))}"
            for role, values in sorted(self.by_role.items(), key=lambda item: -sum(item[1]))
        ]
        return f"{self.total_kb / 1024:6.1f} MB  ({', '.join(parts)}; anonymous {self.anon_kb / 1024:.1f})"


def tree_pss(root: int, with_root: bool = True) -> Tree:
    """The tree under root (with root itself, or only its descendants). Processes gone meanwhile are left out."""
    tree = Tree()
    for pid, parent in ((root, None), *_descendants(root)) if with_root else _descendants(root):
        with contextlib.suppress(OSError):
            pss, anon = _rollup(pid)
            tree.by_role.setdefault(_role(pid, parent), []).append(pss)
            tree.anon_kb += anon
    return tree


class Original:
    """The project this service replaces (tmwgsicp/video-download-api: FastAPI, yt-dlp in threads
    of one process), run by uvicorn as its start.py does (without start.py's own process)."""

    def __init__(self, venv: Path, source: Path):
        self.venv, self.source = venv, source
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        shutil.rmtree(self.source / "temp", ignore_errors=True)
        command = [str(self.venv / "bin/python"), "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--log-level", "warning"],
            cwd=self.source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return answering(self, "the original project")
        except BaseException:
            self.process.kill()
            raise

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.source / "temp", ignore_errors=True)


async def _peak_of(root: int, submit, finished, with_root: bool = True) -> Tree:
    """Submits, then samples the tree under root every 0.1 s until finished() says all are done."""
    peak = Tree()
    handles = await submit()
    while not await finished(handles):
        sample = tree_pss(root, with_root)
        if sample.total_kb > peak.total_kb:
            peak = sample
        await asyncio.sleep(0.1)
    return peak


async def _three_here(service: Service, url: str) -> Tree:
    async with aiohttp.ClientSession() as session:

        async def submit():
            # Video only, as the original project does with extract_audio false.
            return [await _submit(session, service.base, f"{url}&rss={n}", extract_audio=False) for n in range(3)]

        async def finished(ids):
            statuses = [(await (await session.get(f"{service.base}/api/status/{t}")).json())["status"] for t in ids]
            assert "failed" not in statuses, statuses
            return all(status in ("completed", "cancelled") for status in statuses)

        return await _peak_of(service.process.pid, submit, finished)


async def _three_original(original: Original, url: str) -> Tree:
    async with aiohttp.ClientSession() as session:

        async def submit():
            ids = []
            for n in range(3):
                body = {"url": f"{url}&orig={n}", "extract_audio": False, "keep_video": True}
                async with session.post(original.base + "/api/process", json=body) as response:
                    ids.append((await response.json())["task_id"])
            return ids

        async def finished(ids):
            statuses = [(await (await session.get(f"{original.base}/api/status/{t}")).json())["status"] for t in ids]
            assert "error" not in statuses, statuses
            return all(status == "completed" for status in statuses)

        return await _peak_of(original.process.pid, submit, finished)


def _three_cli(work: Path, url: str) -> Tree:
    """Three `yt-dlp` processes at once: the tree of a shell that starts them."""
    out = work / "cli3"
    out.mkdir(parents=True)
    cli = f"{REPO / '.venv/bin/yt-dlp'} -q --no-progress --no-cache-dir -P {out}"
    three = " & ".join(f"{cli} -o 'cli{n}.%(ext)s' '{url}&cli={n}'" for n in range(3))
    shell = subprocess.Popen(["sh", "-c", f"{three} & wait"])

    async def submit():
        return None

    async def finished(_):
        return shell.poll() is not None

    peak = asyncio.run(_peak_of(shell.pid, submit, finished, with_root=False))  # not the shell
    assert shell.returncode == 0
    shutil.rmtree(out)
    return peak


# Measured earlier on this machine, not by this script: MeTube (yt-dlp in one asyncio process).
METUBE_PEAK_MB = "182-186"


async def _small_downloads_here(service: Service, url: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        ids = [await _submit(session, service.base, f"{url}?warm={n}") for n in range(count)]
        for task_id in ids:
            assert (await _wait(session, service.base, task_id, 0.1))["status"] == "completed"


async def _small_downloads_original(original: Original, url: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        ids = []
        for n in range(count):
            body = {"url": f"{url}?warm={n}", "extract_audio": True, "keep_video": True}
            async with session.post(original.base + "/api/process", json=body) as response:
                ids.append((await response.json())["task_id"])
        for task_id in ids:
            while (status := await (await session.get(f"{original.base}/api/status/{task_id}")).json())[
                "status"
            ] not in ("completed", "error"):
                await asyncio.sleep(0.1)
            assert status["status"] == "completed", status


def _range(trees: list[Tree]) -> str:
    totals = sorted(tree.total_kb / 1024 for tree in trees)
    return f"{totals[0]:.0f}-{totals[-1]:.0f} MB"


def bench_rss(
    work: Path, media: MediaServer, big_mb: int, original: tuple[Path, Path] | None, rounds: int, warm: int
) -> None:
    """Idle PSS of each process of the tree, and the peak PSS of the whole tree (FFmpeg and ffprobe
    included) while three big_mb downloads run at once, on a fresh start and again after warm small
    downloads (video + audio): this service, the original project, yt-dlp. Rounds alternate."""
    print(
        f"== PSS of the process tree: idle, and peak of 3 x {big_mb} MB downloads at once (20 MB/s each),"
        f" fresh and after {warm} small downloads; {rounds} rounds =="
    )
    url = media.url("/slow/" + big_file(media, big_mb).name) + "?rate=20000000"
    small = media.url("/media/sample.webm")
    runs: dict[str, list[tuple[Tree, Tree, Tree]]] = {}

    def measure(name: str, running, three, small_downloads, big: str) -> None:
        """Idle, the peak of three big downloads, and that peak again after the small downloads."""
        time.sleep(1.0)
        idle = tree_pss(running.process.pid)
        fresh = asyncio.run(three(running, big))
        asyncio.run(small_downloads(running, small, warm))
        runs.setdefault(name, []).append((idle, fresh, asyncio.run(three(running, f"{big}&warm=1"))))

    for round_number in range(rounds):
        big = f"{url}&round={round_number}"
        with Service(work / "rss", VIDEO_API_MAX_CONCURRENT="3", VIDEO_API_QUEUE_LIMIT="1000") as service:
            measure("this service", service, _three_here, _small_downloads_here, big)
        shutil.rmtree(work / "rss")
        if original is not None:
            with Original(*original) as running:
                measure("original project", running, _three_original, _small_downloads_original, big)
    if original is None:
        print("  the original project: not run (--original-venv/--original-src; see --help)")
    for name, measured in runs.items():
        for number, (idle, fresh, warmed) in enumerate(measured, start=1):
            print(f"  {name:<17} round {number}: idle       {idle}")
            print(f"  {'':<17}          peak fresh {fresh}")
            print(f"  {'':<17}          peak warm  {warmed}")
    for name, measured in runs.items():
        fresh_range, warm_range = _range([m[1] for m in measured]), _range([m[2] for m in measured])
        print(f"  {name:<17} peak: fresh {fresh_range}, after {warm} downloads {warm_range}")
    print(f"  {'3 x yt-dlp CLI':<17} peak {_three_cli(work, url)}")
    print(f"  {'MeTube':<17} peak {METUBE_PEAK_MB} MB (measured earlier on this machine, not in this run)")


def bench_churn(work: Path, media: MediaServer, downloads: int) -> None:
    # The download host lives as long as the service: what a download left behind in it would add up here.
    print(f"== RSS of the main process and the download host across {downloads} downloads (webm 76 KB, video+mp3) ==")
    with Service(work / "churn", VIDEO_API_QUEUE_LIMIT="1000") as service:

        async def churn():
            async with aiohttp.ClientSession() as session:
                started = time.perf_counter()
                for batch in range(0, downloads, 50):
                    ids = [
                        await _submit(session, service.base, media.url(f"/media/sample.webm?churn={n}"))
                        for n in range(batch, batch + 50)
                    ]
                    results = [await _wait(session, service.base, task_id, 0.1) for task_id in ids]
                    failed = sum(r["status"] != "completed" for r in results)
                    rss = service.tree_rss()
                    print(
                        f"  after {batch + 50:>3} downloads ({failed} failed): main {rss['main_kb'] / 1024:.1f} MB,"
                        f" download host {rss['host_kb'] / 1024:.1f} MB"
                    )
                elapsed = time.perf_counter() - started
                print(
                    f"  {downloads} downloads in {elapsed:.1f}s ({elapsed / downloads * 1000:.0f} ms each, 2 at a time)"
                )

        rss0 = service.tree_rss()
        before = f"main {rss0['main_kb'] / 1024:.1f} MB, download host {rss0['host_kb'] / 1024:.1f} MB"
        print(f"  before:                  {before}")
        asyncio.run(churn())
    shutil.rmtree(work / "churn")


def bench_reuse(work: Path, media: MediaServer, rounds: int = 30) -> None:
    print(f"== reuse: the same video asked {rounds} times (noise.mp4, video + mp3) ==")
    url = media.url("/media/noise.mp4")
    with Service(work / "reuse") as service:

        async def asked_again():
            async with aiohttp.ClientSession() as session:
                downloads, answers = [], []
                for n in range(3):  # the reference: the same video downloaded afresh (another URL each time)
                    started = time.perf_counter()
                    await _wait(session, service.base, await _submit(session, service.base, f"{url}?again={n}"))
                    downloads.append(time.perf_counter() - started)
                reused = await _submit(session, service.base, url, reuse=True)
                await _wait(session, service.base, reused)
                for _ in range(rounds):
                    started = time.perf_counter()
                    async with session.post(service.base + "/api/process", json={"url": url, "reuse": True}) as answer:
                        assert answer.status == 200 and (await answer.json())["task_id"] == reused
                    answers.append(time.perf_counter() - started)
                answers.sort()
                print(
                    f"  downloaded again: best {min(downloads) * 1000:.0f} ms of 3; answered by reuse: median"
                    f" {answers[len(answers) // 2] * 1000:.0f} ms, worst {answers[-1] * 1000:.0f} ms"
                    f" ({min(downloads) / answers[len(answers) // 2]:.0f}x faster)"
                )

        asyncio.run(asked_again())
    shutil.rmtree(work / "reuse")


def big_file(media: MediaServer, big_mb: int) -> Path:
    """A local file of about big_mb MB (noise.mp4 looped), made once."""
    source = media.folder / "big.mp4"
    if not source.exists():
        loops = max(1, big_mb * 1024 * 1024 // (media.folder / "noise.mp4").stat().st_size)
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-stream_loop",
                str(loops - 1),
                "-i",
                str(media.folder / "noise.mp4"),
                "-c",
                "copy",
                str(source),
            ],
            check=True,
        )
    return source


def bench_wall(work: Path, media: MediaServer, big_mb: int) -> None:
    source = big_file(media, big_mb)
    size_mb = source.stat().st_size / 1024 / 1024
    url = media.url("/media/big.mp4")
    print(f"== wall time, one {size_mb:.0f} MB local download (best of 3) ==")

    def cli(extra: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            out = work / "cli"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            started = time.perf_counter()
            subprocess.run(
                [str(REPO / ".venv/bin/yt-dlp"), "-q", "--no-progress", "--no-cache-dir", "-P", str(out), *extra, url],
                check=True,
            )
            best = min(best, time.perf_counter() - started)
        return best

    def service_run(options: dict) -> float:
        with Service(work / "wall") as service:

            async def run_once():
                async with aiohttp.ClientSession() as session:
                    started = time.perf_counter()
                    task_id = await _submit(session, service.base, url + f"?r={uuid.uuid4().hex}", **options)
                    status = await _wait(session, service.base, task_id, 0.01)
                    assert status["status"] == "completed", status
                    elapsed = time.perf_counter() - started
                    await session.delete(f"{service.base}/api/tasks/{task_id}")
                    return elapsed

            times = [asyncio.run(run_once()) for _ in range(3)]
        shutil.rmtree(work / "wall")
        return min(times)

    video_cli = cli([])
    video_service = service_run({"extract_audio": False})
    print(
        f"  video only:  service {video_service:.2f}s  yt-dlp CLI {video_cli:.2f}s"
        f"  ratio {video_service / video_cli:.2f}x"
    )
    both_cli = cli(["-k", "-x"])
    both_service = service_run({"audio_format": "m4a", "audio_bitrate": "best"})
    print(
        f"  video+audio: service {both_service:.2f}s  yt-dlp -k -x {both_cli:.2f}s"
        f"  ratio {both_service / both_cli:.2f}x  (service: m4a, bitrate best = stream copy, like -x)"
    )
    mp3_service = service_run({"audio_format": "mp3", "audio_bitrate": "192"})
    print(f"  video+mp3 192k (service default, re-encodes): {mp3_service:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="api,rss,churn,wall,reuse")
    parser.add_argument("--targets", default=",".join(API_TARGETS), help="api section: which endpoints")
    parser.add_argument("--seconds", type=float, default=3.0, help="per load level")
    parser.add_argument("--downloads", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="rss section: rounds of each project")
    parser.add_argument("--warm", type=int, default=60, help="rss section: small downloads before the second peak")
    parser.add_argument(
        "--original-venv",
        type=Path,
        help="rss section: a venv with the original project's requirements (python -m venv /tmp/orig-venv;"
        " /tmp/orig-venv/bin/pip install fastapi 'uvicorn[standard]' pydantic yt-dlp requests pyyaml psutil)",
    )
    parser.add_argument(
        "--original-src",
        type=Path,
        help="rss section: its source (git -C <clone of tmwgsicp/video-download-api> archive HEAD api | tar -x -C DIR)",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="vda-bench-"))
    media = MediaServer(generate_media(Path(tempfile.gettempdir()) / "vda-bench-media")).start()
    try:
        if "api" in sections:
            bench_api(work, args.seconds, set(args.targets.split(",")))
        if "rss" in sections:
            original = (args.original_venv, args.original_src) if args.original_venv and args.original_src else None
            bench_rss(work, media, args.big_mb, original, args.rounds, args.warm)
        if "churn" in sections:
            bench_churn(work, media, args.downloads)
        if "wall" in sections:
            bench_wall(work, media, args.big_mb)
        if "reuse" in sections:
            bench_reuse(work, media)
    finally:
        media.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
