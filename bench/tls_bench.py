"""The cost of TLS, plain and TLS side by side in one run (prints figures; not a test):

    .venv/bin/python bench/tls_bench.py [--tasks 10000] [--seconds 5] [--rounds 3] [--connections 32]
                                        [--only haproxy,handshakes,service]

haproxy     GET /api/status/<id> and GET /api/tasks?limit=50, keep-alive clients, through one HAProxy with
            two frontends, plain HTTP and HTTPS (Mozilla intermediate: TLS 1.2+, its ciphers, no
            tickets), to one service on SQLite with --tasks stored tasks, over plain HTTP on loopback so
            the client leg is the only difference: req/s, p99, TLS/plain (issue 19 aims at >= 0.85x)
handshakes  a new connection per request (wrk with `Connection: close`) on the status route through the
            same frontends: connections/s, a TLS handshake each against a TCP connection each. wrk offers
            its last session again, so most are resumed from HAProxy's session cache (a session ID, no
            tickets); a second HAProxy with the cache off (tune.ssl.cachesize 0) gives full handshakes
service     the service terminating TLS itself (VIDEO_API_TLS_CERT_FILE/KEY_FILE) against the same
            service plain, status route, keep-alive

Needs Debian's `haproxy` (2.6; run here in the foreground from a temporary config, never the system
service) and `wrk` (built with OpenSSL). The certificate is ECDSA P-256 from a throwaway CA
(tests/support/certificates.py). wrk does not verify certificates, so before the load one request
checks each HTTPS port's chain with that CA as the only trust anchor. Each comparison alternates plain
and TLS --rounds times and keeps each side's best round; the range of the rounds' ratios shows how much
other load moved them. Services, HAProxy and wrk (one thread) share this machine's 2 cores, so the
figures are floors and the ratios are what to read.

Here, 2026-12-06, `.venv/bin/python bench/tls_bench.py` (defaults), load average 2.2 at the start and
3.9 at the end (another engineer's test suite running), OpenSSL 3.0.19 (the printed table, its p99 ratios
left out for width):

    == Through HAProxy 2.6.12-1+deb12u4; HTTPS: TLSv1.3 TLS_AES_256_GCM_SHA384, verified with the CA
      status              plain 2991 req/s  p99  24.10 ms | TLS 3080 req/s  p99  21.77 ms | 1.03x (rounds 0.83-1.10x)
      list50              plain  368 req/s  p99 134.01 ms | TLS  413 req/s  p99 184.23 ms | 1.12x (rounds 0.61-1.12x)
      new conn (cache)    plain  993 conn/s p99  77.50 ms | TLS  305 conn/s p99 149.30 ms | 0.31x (rounds 0.22-0.34x)
                          4,418 TLS connections, 4,274 of them resumed
      new conn (no cache) plain 1151 conn/s p99  67.08 ms | TLS  269 conn/s p99 130.14 ms | 0.23x (rounds 0.22-0.25x)
                          4,146 TLS connections, 0 of them resumed
    == The service itself, plain and with VIDEO_API_TLS_CERT_FILE/KEY_FILE
      status              plain 3528 req/s  p99  32.23 ms | TLS 2674 req/s  p99  37.38 ms | 0.76x (rounds 0.68-0.86x)

With keep-alive, TLS at HAProxy costs less than the noise (issue 19's >= 0.85x holds). A connection
per request is where TLS costs: about a quarter to a third of the plain rate, resumed or full. The
service's own TLS (Python's ssl in asyncio) costs about a quarter of its status rate: terminate at
HAProxy where there is one.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from service_bench import Service, fill_store, load_wrk, side_by_side  # noqa: E402

from app.tls import INTERMEDIATE_CIPHERS  # noqa: E402
from tests.support.certificates import TestCA  # noqa: E402
from tests.support.helpers import free_port  # noqa: E402

# Mozilla intermediate's TLS 1.3 suites (app/tls.py leaves them to OpenSSL's defaults, the same list).
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

HAPROXY_CFG = """
global
    maxconn 4096
    stats socket {stats} mode 600 level user
    ssl-default-bind-ciphers {ciphers}
    ssl-default-bind-ciphersuites {suites}
    ssl-default-bind-options prefer-client-ciphers ssl-min-ver TLSv1.2 no-tls-tickets
    {tuning}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend plain
    bind 127.0.0.1:{plain}
    default_backend service

frontend tls
    bind 127.0.0.1:{tls} ssl crt {pem}
    default_backend service

backend service
    server api {backend}
"""


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited ({process.returncode}): {log.read_text().strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"haproxy did not listen on {port}")


@contextmanager
def haproxy(work: Path, backend: str, cert: Path, key: Path, tuning: str = ""):
    """One HAProxy in the foreground (tuning: a line for its global section); yields the plain and
    the HTTPS frontend's URLs and its stats socket."""
    pem = work / "haproxy.pem"  # HAProxy reads the chain and key from one file
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    plain, tls, stats = free_port(), free_port(), work / "haproxy.sock"
    config = work / "haproxy.cfg"
    config.write_text(
        HAPROXY_CFG.format(
            stats=stats,
            plain=plain,
            tls=tls,
            pem=pem,
            ciphers=INTERMEDIATE_CIPHERS,
            suites=TLS13_SUITES,
            backend=backend.removeprefix("http://"),
            tuning=tuning,
        )
    )
    log = work / "haproxy.log"
    with log.open("wb") as output:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=output, stderr=output)
    try:
        for port in (plain, tls):
            wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", stats
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ssl_counters(stats: Path) -> dict:
    """HAProxy's `show info` counters of TLS sessions: lookups in its cache, and misses."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stats))
        sock.sendall(b"show info\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {name: int(fields[name]) for name in ("CumSslConns", "SslCacheLookups", "SslCacheMisses")}


def check_chain(base: str, ca: Path, path: str) -> str:
    """One request verified against ca alone (wrk does not verify); returns the version and cipher."""
    context = ssl.create_default_context(cafile=str(ca))  # a cafile replaces the system's trust store
    host, port = base.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{base}{path}: HTTP {answer.status}")
        version, cipher = connection.sock.version(), connection.sock.cipher()[0]
    finally:
        connection.close()
    return f"{version} {cipher}"


def compare(
    name: str,
    plain: str,
    tls: str,
    paths: list[str],
    args,
    work: Path,
    headers: tuple[str, ...] = (),
    unit: str = "req/s",
) -> None:
    """Plain and TLS in alternation for --rounds rounds, after a 1 s warm-up each that is not
    counted; prints the best round of each side (the machine's other load comes and goes) and the
    range of the rounds' TLS/plain ratios, which shows how much that load moved them."""
    for base in (plain, tls):
        load_wrk(base, paths, args.connections, 1, work, headers)
    rounds = [
        [load_wrk(base, paths, args.connections, args.seconds, work, headers) for base in (plain, tls)]
        for _ in range(args.rounds)
    ]
    print(f"  {name:<19} {side_by_side(rounds, ('plain', 'TLS'), unit)}")


def handshakes(name: str, plain: str, tls: str, stats: Path, status: list[str], args, work: Path) -> None:
    before = ssl_counters(stats)
    compare(name, plain, tls, status, args, work, ("Connection: close",), "conn/s")
    count = {field: value - before[field] for field, value in ssl_counters(stats).items()}
    resumed = count["SslCacheLookups"] - count["SslCacheMisses"]
    print(f"  {'':<19} {count['CumSslConns']:,} TLS connections, {resumed:,} of them resumed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="plain/TLS alternations per comparison")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="haproxy,handshakes,service")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    tools = ["wrk"] + (["haproxy"] if sections & {"haproxy", "handshakes"} else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"tls_bench: not installed: {' '.join(missing)} (Debian: apt-get install -y {' '.join(missing)})")
    # A kill of the bench unwinds the with-blocks below, so the services and HAProxy stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="vda-tls-bench-") as tmp:
        work = Path(tmp)
        ca = TestCA.create(work / "ca")
        cert, key, _ = ca.issue(work / "host")
        # Every urlopen in this process (Service's start-up poll among them) trusts this CA alone.
        trust = ssl.create_default_context(cafile=str(ca.path))
        urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=trust)))
        ids = fill_store(work / "data" / "db" / "tasks.sqlite3", args.tasks)
        shutil.copytree(work / "data", work / "data-tls")  # the TLS service's own copy, both run at once
        status = [f"/api/status/{task_id}" for task_id in ids]
        print(
            f"tls_bench: {args.tasks:,} tasks; wrk 1 thread, {args.connections} connections, {args.seconds:g} s a"
            f" measurement, best of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.2f}"
        )
        with Service(work / "data") as service:
            if sections & {"haproxy", "handshakes"}:
                with haproxy(work, service.base, cert, key) as (plain, tls, stats):
                    version = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2]
                    verified = check_chain(tls, ca.path, status[0])
                    print(f"== Through HAProxy {version}; HTTPS: {verified}, verified with the CA")
                    if "haproxy" in sections:
                        compare("status", plain, tls, status, args, work)
                        compare("list50", plain, tls, ["/api/tasks?limit=50"], args, work)
                    if "handshakes" in sections:
                        handshakes("new conn (cache)", plain, tls, stats, status, args, work)
                if "handshakes" in sections:
                    with haproxy(work, service.base, cert, key, "tune.ssl.cachesize 0") as (plain, tls, stats):
                        handshakes("new conn (no cache)", plain, tls, stats, status, args, work)

            if "service" in sections:
                print("== The service itself, plain and with VIDEO_API_TLS_CERT_FILE/KEY_FILE")
                tls_service = Service(
                    work / "data-tls", VIDEO_API_TLS_CERT_FILE=str(cert), VIDEO_API_TLS_KEY_FILE=str(key)
                )
                tls_service.base = tls_service.base.replace("http://", "https://")
                with tls_service:
                    print(f"  HTTPS: {check_chain(tls_service.base, ca.path, status[0])}, verified with the CA")
                    compare("status", service.base, tls_service.base, status, args, work)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
