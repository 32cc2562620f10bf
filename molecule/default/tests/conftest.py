"""Helpers for the default scenario's testinfra tests: HTTP calls made from inside a container."""

import json
import shlex

import pytest

SERVICE = "video-download-api"
API = "http://127.0.0.1:8000"

# Runs inside the container with its own python3, so requests reach the service's loopback.
HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, body, out = sys.argv[1:5]
request = urllib.request.Request(url, method=method, data=body.encode() or None,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, data = response.status, response.read()
except urllib.error.HTTPError as error:
    status, data = error.code, error.read()
except OSError as error:  # not listening (yet): status 0, so callers can poll
    status, data = 0, json.dumps({"error": str(error)}).encode()
if out:
    open(out, "wb").write(data)
    data = b"{}"
print(json.dumps({"status": status, "body": data.decode(errors="replace")}))
"""


class Api:
    def __init__(self, host):
        self.host = host

    def call(self, method, path, payload=None, out=""):
        body = json.dumps(payload) if payload is not None else ""
        command = " ".join(shlex.quote(part) for part in ["python3", "-c", HTTP_CLIENT, method, API + path, body, out])
        result = json.loads(self.host.check_output(command))
        return result["status"], (json.loads(result["body"]) if result["body"] else None)

    def get(self, path, **kwargs):
        return self.call("GET", path, **kwargs)

    def post(self, path, payload):
        return self.call("POST", path, payload)


@pytest.fixture
def api(host):
    return Api(host)
