"""The container image and compose.yaml, run for real: `make container-test` (needs a Docker engine).

The image is built from the local Debian 12 base (molecule/build-images.sh; no registry here) and runs
hardened: read-only root, tmpfs /tmp, no capabilities, no-new-privileges. The media server is a
container on an internal Docker network (no route off the machine), serving ffmpeg-generated files.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

import app
from tests.support.certificates import TestCA, served_serial
from tests.support.helpers import FINAL, REPO, ffprobe, free_port, trusting
from tests.support.mediaserver import generate_media

pytestmark = pytest.mark.container

BASE_IMAGE = os.environ.get("MOLECULE_IMAGE_DEBIAN12", "video-api-molecule/debian:12")
IMAGE = "video-download-api:test"
PREFIX = f"video-api-test-{os.getpid()}"
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
MEDIA_PORT = 8080
MEDIA_SERVER = (
    "import sys, threading; from pathlib import Path; sys.path.insert(0, '/srv'); "
    "from mediaserver import MediaServer; "
    f"MediaServer(Path('/media'), host='0.0.0.0', port={MEDIA_PORT}).start(); threading.Event().wait()"
)


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image():
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.fail("the container tests need a running Docker engine; `make pytest` runs the others")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        pytest.fail(f"base image {BASE_IMAGE} missing: run `make images`")
    subprocess.run(
        ["bash", "molecule/build-service-image.sh"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "BASE_IMAGE": BASE_IMAGE, "IMAGE": IMAGE},
    )
    return IMAGE


@pytest.fixture(scope="module")
def network(image):
    """An internal network: containers reach each other and the host, nothing beyond."""
    name = docker("network", "create", "--internal", f"{PREFIX}-net")
    yield name, docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", name)
    docker("network", "rm", name)


@pytest.fixture(scope="module")
def media(image, network, tmp_path_factory):
    """The tests' media server (tests/support/mediaserver.py) in a container from the image, as `media`."""
    folder = generate_media(tmp_path_factory.mktemp("media"))
    name = f"{PREFIX}-media"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network[0],
        "--network-alias",
        "media",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        *HARDENED,
        "-v",
        f"{folder}:/media:ro",
        "-v",
        f"{REPO / 'tests/support/mediaserver.py'}:/srv/mediaserver.py:ro",
        image,
        "python",
        "-c",
        MEDIA_SERVER,
    )
    yield f"http://media:{MEDIA_PORT}", folder
    docker("rm", "--force", "--volumes", name)


@pytest.fixture
def containers():
    """Starts service containers; removes them, and their volume, at the end."""
    started, volumes = [], set()

    def run(image: str, network, volume: str, name: str) -> str:
        volumes.add(volume)
        docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network[0],
            *HARDENED,
            "--health-interval",
            "1s",
            "-v",
            f"{volume}:/data",
            "-e",
            f"VIDEO_API_ALLOW_NETWORKS={network[1]}",
            "-e",
            "VIDEO_API_MIN_FREE_MB=1",
            image,
        )
        started.append(name)
        return name

    yield run
    for name in started:
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)
    for volume in volumes:
        subprocess.run(["docker", "volume", "rm", volume], capture_output=True)


def inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container)


def wait_healthy(container: str, timeout: float = 30) -> str:
    """Waits for Docker's own health check to pass; returns the service's base URL."""
    deadline = time.monotonic() + timeout
    while (health := inspect(container, "{{.State.Health.Status}}")) != "healthy":
        assert time.monotonic() < deadline and inspect(container, "{{.State.Running}}") == "true", (
            f"{container}: {health}\n{docker('logs', container)}"
        )
        time.sleep(0.2)
    return f"http://{inspect(container, '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')}:8000"


def wait_task(base: str, task_id: str, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(body := requests.get(f"{base}/api/status/{task_id}", timeout=10).json()):
        assert time.monotonic() < deadline, f"timed out; last status {body}"
        time.sleep(0.1)
    return body


def submit(base: str, url: str, session=requests, **options) -> str:
    response = session.post(f"{base}/api/process", json={"url": url, **options}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def fetch(base: str, link: str, target: Path) -> Path:
    response = requests.get(base + link, timeout=30)
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return target


def test_image_metadata_and_contents(image):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image))
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == app.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"].startswith(head or "unknown")
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert "VIDEO_API_DATA_DIR=/data" in config["Env"] and "HOST=0.0.0.0" in config["Env"]
    assert list(config["Volumes"]) == ["/data"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "app.healthcheck"]
    # Nothing but the runtime: no pip, compiler, apt lists or caches, no tests in the app.
    leftovers = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "python -c 'import pip' 2>/dev/null && echo pip; command -v gcc cc pip pip3; find /var/lib/apt/lists"
        " /var/cache/apt /root/.cache /tmp -type f ! -name lock 2>/dev/null; true",
    )
    assert leftovers == "", leftovers


def test_python_meets_the_derived_minimum(image):
    derived = subprocess.run(
        [
            str(REPO / ".venv/bin/python"),
            "roles/python/files/requires_python.py",
            "requirements.txt",
            "--cache-dir",
            ".cache",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    minimum = tuple(int(part) for part in json.loads(derived.stdout)["version"].split("."))
    found = docker(
        "run", "--rm", "--network", "none", image, "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"
    )
    assert tuple(int(part) for part in found.split(".")) >= minimum, f"image Python {found} < {minimum}"


def test_download_stop_and_resume(image, network, media, containers, tmp_path):
    media, folder = media
    volume = f"{PREFIX}-data"
    first = containers(image, network, volume, f"{PREFIX}-svc1")
    base = wait_healthy(first)
    # Every process of the container, as the host sees them (`docker top` runs the host's ps).
    assert {line.split()[1] for line in docker("top", first, "-o", "pid,uid").splitlines()[1:]} == {"10001"}

    task_id = submit(base, f"{media}/media/sample.mp4", extract_audio=True, keep_video=True)
    done = wait_task(base, task_id, lambda body: body["status"] in FINAL)
    assert done["status"] == "completed", done
    video = ffprobe(fetch(base, done["files"]["video"], tmp_path / "video.mp4"))
    audio = ffprobe(fetch(base, done["files"]["audio"], tmp_path / "audio.mp3"))
    assert {s["codec_type"] for s in video["streams"]} == {"video", "audio"}
    assert [s["codec_name"] for s in audio["streams"]] == ["mp3"]

    # A slow download (6 s at 250 kB/s), stopped halfway: within 5 s, and resumed by the next container.
    slow_id = submit(base, f"{media}/slow/noise.mp4?rate=250000", extract_audio=False, keep_video=True)
    wait_task(base, slow_id, lambda body: body["status"] == "downloading" and (body["downloaded_bytes"] or 0) > 0)
    started = time.monotonic()
    docker("stop", first)
    assert time.monotonic() - started < 5
    assert inspect(first, "{{.State.ExitCode}}") == "0"
    assert docker("diff", first) == "", "the service wrote outside /data and /tmp"
    # The clean stop requeued the task and left its partial file on the volume.
    part = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{volume}:/data",
        image,
        "find",
        f"/data/media/{slow_id}",
        "-name",
        "*.part",
        "-size",
        "+0",
    )
    assert part, "no partial download on the volume"

    second = containers(image, network, volume, f"{PREFIX}-svc2")
    base = wait_healthy(second)
    done = wait_task(base, slow_id, lambda body: body["status"] in FINAL)
    assert done["status"] == "completed" and done["attempts"] == 1, done  # a clean stop is no attempt
    resumed = fetch(base, done["files"]["video"], tmp_path / "noise.mp4")
    assert resumed.read_bytes() == (folder / "noise.mp4").read_bytes()
    assert {s["codec_type"] for s in ffprobe(resumed)["streams"]} == {"video", "audio"}
    assert requests.get(f"{base}/api/status/{task_id}", timeout=10).json()["status"] == "completed"
    assert docker("diff", second) == ""


def test_the_image_serves_https_from_mounted_files(image, tmp_path):
    """VIDEO_API_TLS_CERT_FILE/KEY_FILE from a read-only bind mount: the HEALTHCHECK (pinned to that
    certificate) passes, a client verifying against the CA only gets 200, and a renewed pair written
    into the mount is served after `docker kill --signal HUP` (tini hands SIGHUP to the service)."""
    ca = TestCA.create(tmp_path / "ca")
    tls = tmp_path / "tls"
    cert, key, serial = ca.issue(tls)
    # The container's uid 10001 reads the key; in production the key is that uid's alone (0400).
    tls.chmod(0o755)
    key.chmod(0o644)
    port, name = free_port(), f"{PREFIX}-tls"
    try:
        options = [*HARDENED, "--health-interval", "1s", "-p", f"127.0.0.1:{port}:8000", "-v", f"{tls}:/run/tls:ro"]
        options += [
            "-e",
            f"VIDEO_API_TLS_CERT_FILE=/run/tls/{cert.name}",
            "-e",
            f"VIDEO_API_TLS_KEY_FILE=/run/tls/{key.name}",
        ]
        docker("run", "-d", "--name", name, *options, "-e", "VIDEO_API_MIN_FREE_MB=1", image)
        wait_healthy(name)
        response = trusting(ca.path).get(f"https://127.0.0.1:{port}/api/health", timeout=10)
        assert response.status_code == 200, response.text
        assert served_serial(port, ca.path) == serial

        _, _, renewed = ca.issue(tls)  # in place: same files, same modes
        docker("kill", "--signal", "HUP", name)
        deadline = time.monotonic() + 10
        while served_serial(port, ca.path) != renewed:
            assert time.monotonic() < deadline, docker("logs", name)
            time.sleep(0.2)
        # The next probe pins the renewed certificate and passes.
        last = json.loads(inspect(name, "{{json .State.Health}}"))["Log"][-1]["Start"]
        deadline = time.monotonic() + 10
        while (probe := json.loads(inspect(name, "{{json .State.Health}}"))["Log"][-1])["Start"] == last:
            assert time.monotonic() < deadline, probe
            time.sleep(0.2)
        assert probe["ExitCode"] == 0 and inspect(name, "{{.State.Health.Status}}") == "healthy", probe
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)


def test_compose_service(image):
    """compose.yaml with the docker-compose found here (1.29): up, healthy on the published port, down."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose missing (Debian package docker-compose; .ci/run installs it)")
    # That every setting passes through is checked without Docker (test_settings_declared.py).
    port, project = free_port(), f"{PREFIX}-compose"
    env = {
        **os.environ,
        "VIDEO_API_IMAGE": image,
        "VIDEO_API_PUBLISH": f"127.0.0.1:{port}",
        "VIDEO_API_MIN_FREE_MB": "1",
    }
    command = [compose, "--project-name", project, "--file", str(REPO / "compose.yaml")]
    try:
        subprocess.run([*command, "up", "--detach"], env=env, check=True, capture_output=True, timeout=120)
        container = subprocess.run(
            [*command, "ps", "--quiet", "video-api"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        assert inspect(container, "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}") == "true [ALL]"
        deadline = time.monotonic() + 20
        while (health := requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, health.text
            time.sleep(0.2)
        # The image's health check, inherited (its first run comes after the 10 s interval).
        assert inspect(container, "{{.State.Health.Status}}") in ("starting", "healthy")
        assert docker("volume", "inspect", "-f", "{{.Name}}", f"{project}_data").endswith("_data")
    finally:
        subprocess.run([*command, "down", "--volumes", "--timeout", "10"], env=env, capture_output=True, timeout=120)
    assert docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}") == ""


# Local stand-ins for the official postgres and haproxy images of compose.yaml's cluster profile.
CLUSTER_IMAGES = {"postgres": "video-api-test/postgres:15", "haproxy": "video-api-test/haproxy:2.6"}
REPLICAS = ("video-api-1", "video-api-2")


@pytest.fixture(scope="module")
def cluster_images(image):
    """Builds molecule/compose/{postgres,haproxy}.Dockerfile from the local Debian 12 base (cached layers)."""
    context = REPO / "molecule/compose"
    for name, tag in CLUSTER_IMAGES.items():
        dockerfile = str(context / f"{name}.Dockerfile")
        docker(
            "build",
            "-q",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-f",
            dockerfile,
            "-t",
            tag,
            str(context),
            timeout=600,
        )
    return CLUSTER_IMAGES


def test_compose_cluster(image, cluster_images, media, tmp_path):
    """The cluster profile: PostgreSQL, two replicas and HAProxy come up; HAProxy's HTTPS port (a
    certificate of a throwaway CA, mounted) is answered by both replicas, verified against that CA
    only, with HSTS; its plain port answers only a redirect; a download works through it whichever
    replica holds the file; a renewed host.pem is served after SIGUSR2; down --volumes leaves nothing
    behind."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose missing (Debian package docker-compose; .ci/run installs it)")
    folder = media[1]
    http_port, https_port, project = free_port(), free_port(), f"{PREFIX}-cluster"
    ca, tls = TestCA.create(tmp_path / "ca"), tmp_path / "tls"

    def install_certificate() -> int:
        """host.pem as HAProxy reads it (chain, then key) for the name the test connects to; its serial."""
        cert, key, serial = ca.issue(tls, names=("localhost", "127.0.0.1"))
        pem = tls / "host.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        # HAProxy's user (uid 199 here, 99 in the official image) reads it; in production 0400, that uid's.
        pem.chmod(0o644)
        return serial

    serial = install_certificate()
    tls.chmod(0o755)
    hardened = {"read_only": True, "tmpfs": ["/tmp"], "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}
    # Nothing leaves the machine: the project's network is internal; HAProxy publishes on loopback
    # from a second network. The media server joins the profile (JSON is YAML).
    override = tmp_path / "compose.test.yaml"
    override.write_text(
        json.dumps(
            {
                "networks": {"default": {"internal": True}, "edge": {}},
                "services": {
                    "haproxy": {"networks": ["default", "edge"]},
                    "media": {
                        "image": image,
                        "profiles": ["cluster"],
                        "user": f"{os.getuid()}:{os.getgid()}",
                        **hardened,
                        "volumes": [
                            f"{folder}:/media:ro",
                            f"{REPO / 'tests/support/mediaserver.py'}:/srv/mediaserver.py:ro",
                        ],
                        "command": ["python", "-c", MEDIA_SERVER],
                    },
                },
            }
        )
    )
    env = {
        **os.environ,
        "VIDEO_API_IMAGE": image,
        "VIDEO_API_POSTGRES_IMAGE": cluster_images["postgres"],
        "VIDEO_API_HAPROXY_IMAGE": cluster_images["haproxy"],
        "VIDEO_API_CLUSTER_HTTP_PORT": str(http_port),
        "VIDEO_API_CLUSTER_HTTPS_PORT": str(https_port),
        "VIDEO_API_CLUSTER_TLS_DIR": str(tls),
        "VIDEO_API_CLUSTER_SECRET": "test-cluster-secret-0123456789",
        "VIDEO_API_POSTGRES_PASSWORD": "test-password-0123",
        "VIDEO_API_ALLOW_NETWORKS": "172.16.0.0/12,192.168.0.0/16,10.0.0.0/8",
        "VIDEO_API_MIN_FREE_MB": "1",
    }
    command = [
        compose,
        "--project-name",
        project,
        "--file",
        str(REPO / "compose.yaml"),
        "--file",
        str(override),
        "--profile",
        "cluster",
    ]
    base, http = f"https://127.0.0.1:{https_port}", trusting(ca.path)

    def logs() -> str:
        return subprocess.run([*command, "logs", "--no-color"], env=env, capture_output=True, text=True).stdout

    def served_by(response: requests.Response) -> str:
        assert response.status_code == 200, (response.status_code, response.text)
        return response.headers["X-Served-By"]

    try:
        started = time.monotonic()
        up = subprocess.run(
            [*command, "up", "--detach", "haproxy", "media"], env=env, capture_output=True, text=True, timeout=180
        )
        assert up.returncode == 0, up.stderr
        running = subprocess.run(
            [*command, "ps", "--services", "--filter", "status=running"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        # `up haproxy` brings the cluster, not the single service.
        assert sorted(running) == sorted(["postgres", *REPLICAS, "haproxy", "media"]), running
        for replica in REPLICAS:
            container = subprocess.run(
                [*command, "ps", "--quiet", replica], env=env, capture_output=True, text=True, check=True
            ).stdout.strip()
            assert inspect(container, "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}") == "true [ALL]"

        # Through HAProxy, until both replicas have passed its health checks and answered.
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while seen != set(REPLICAS):
            assert time.monotonic() < deadline, f"answered by {seen}\n{logs()}"
            try:
                response = http.get(f"{base}/api/health", timeout=5)
            except requests.ConnectionError:
                response = None
            if response is not None and response.status_code == 200:
                seen.add(served_by(response))
            else:
                time.sleep(0.5)
        print(f"cluster up and both replicas answering in {time.monotonic() - started:.1f} s")

        # One task through HAProxy, polled through it (each poll to the next replica: one shared store).
        assert response.headers["Strict-Transport-Security"] == "max-age=63072000"
        # Plain HTTP, whatever the method: a redirect to the same path on HTTPS, no replica reached.
        for method in ("GET", "POST"):
            plain = requests.request(
                method, f"http://127.0.0.1:{http_port}/api/tasks?limit=1", allow_redirects=False, timeout=5
            )
            assert plain.status_code in (301, 302, 308), (method, plain.status_code, plain.text)
            assert plain.headers["Location"] == f"{base}/api/tasks?limit=1", plain.headers
            assert "X-Served-By" not in plain.headers

        task_id = submit(base, "http://media:8080/media/sample.mp4", http, extract_audio=False, keep_video=True)
        deadline = time.monotonic() + 60
        while True:
            response = http.get(f"{base}/api/status/{task_id}", timeout=10)
            served_by(response)
            if (body := response.json())["status"] in FINAL:
                break
            assert time.monotonic() < deadline, f"timed out; last status {body}"
            time.sleep(0.2)
        assert body["status"] == "completed", body

        # The file is on the volume of the replica that downloaded it, and only there.
        find = ["find", "/data/media", "-type", "f", "-path", f"/data/media/{task_id}/*.mp4"]
        holders = [
            replica
            for number, replica in enumerate(REPLICAS, 1)
            if docker("run", "--rm", "--network", "none", "-v", f"{project}_data-{number}:/data", image, *find)
        ]
        assert len(holders) == 1, holders
        # Every download from the holder: HAProxy routes the file's id to it (not round robin).
        original, served = (folder / "sample.mp4").read_bytes(), set()
        for attempt in range(6):
            response = http.get(base + body["files"]["video"], timeout=30)
            served.add(served_by(response))
            assert response.content == original, f"download {attempt} from {response.headers['X-Served-By']}"
        assert served == set(holders), served

        # Renewal: new content in the same file, SIGUSR2 to HAProxy's master, the new serial served.
        assert served_serial(https_port, ca.path) == serial
        renewed = install_certificate()
        assert (
            subprocess.run([*command, "kill", "-s", "SIGUSR2", "haproxy"], env=env, capture_output=True).returncode == 0
        )
        deadline = time.monotonic() + 10
        while served_serial(https_port, ca.path) != renewed:
            assert time.monotonic() < deadline, f"renewed certificate not served\n{logs()}"
            time.sleep(0.2)
        assert http.get(f"{base}/api/health", timeout=5).status_code == 200
    finally:
        down = subprocess.run(
            [*command, "down", "--volumes", "--timeout", "10"], env=env, capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    for kind in ("container", "volume", "network"):
        left = docker(
            kind,
            "ls",
            "--quiet",
            *(["--all"] if kind == "container" else []),
            "--filter",
            f"label=com.docker.compose.project={project}",
        )
        assert left == "", f"{kind}s left: {left}"
