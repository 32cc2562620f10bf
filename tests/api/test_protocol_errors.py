"""Malformed HTTP that never reaches the API: answered with the JSON error object, echoing
nothing, and nothing the client sent in a header reaches the log (a token least of all)."""

import json
import socket
from pathlib import Path

import pytest

from tests.support.helpers import ServiceProcess

TOKEN = "t0ken-for-protocol-tests-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    process = ServiceProcess(
        tmp_path_factory.mktemp("protocol") / "data", VIDEO_API_TOKENS=TOKEN, VIDEO_API_LOG_LEVEL="DEBUG"
    ).start()
    yield process
    process.stop()


def raw_request(port: int, data: bytes) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        f"GET /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n".encode(),
        f"GET /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}{'x' * 9000}\r\n\r\n".encode(),
        f"GET /api/tasks HTTP/1.1\r\nHost: x\r\nBad Header{TOKEN}: Bearer {TOKEN}\r\n\r\n".encode(),
        f"GET /api/tasks?token={TOKEN}{'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /api/tasks HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {TOKEN}\r\n\r\n".encode(),
    ],
    ids=["control-character", "header-over-8190-bytes", "bad-header-name", "long-request-line", "bad-length"],
)
def test_malformed_requests_get_json_errors_that_echo_nothing(service, request_bytes):
    status, headers, body = raw_request(service.port, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message"}
    assert TOKEN.encode() not in body and b"xxxx" not in body
    service.log.flush()
    log = Path(service.log.name).read_bytes()
    assert TOKEN.encode() not in log
    assert b"without reaching the API" in log
