#!/usr/bin/python
"""Probe CPython download mirrors from the managed host and pick the fastest."""

import socket
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

DOCUMENTATION = r"""
module: python_mirror_probe
short_description: Pick the fastest reachable mirror for a CPython source tarball
description:
  - Requests the first O(sample_bytes) of the tarball from every mirror, from the managed host,
    with a time limit, and returns the mirror that delivered them fastest.
  - Fails, naming every mirror and why it was dropped, when none answers.
  - Only reads; the caller downloads from the chosen URL and verifies the checksum.
options:
  mirrors:
    description: Candidates; C(layout=pyenv) serves files named by their sha256,
      C(layout=python.org) serves C(<version>/<filename>).
    type: list
    elements: dict
    required: true
  version: {description: CPython version, type: str, required: true}
  filename: {description: Tarball name, e.g. Python-3.13.2.tar.xz, type: str, required: true}
  sha256: {description: The tarball's sha256 (pyenv layout path), type: str, required: true}
  timeout: {description: Seconds a mirror has to deliver the sample, type: float, default: 5}
  sample_bytes: {description: Bytes read from each mirror, type: int, default: 262144}
  validate_certs: {description: Verify TLS certificates, type: bool, default: true}
"""

RETURN = r"""
url: {description: URL of the tarball on the fastest mirror, type: str, returned: success}
probes:
  description: One entry per mirror (mirror, url, kib_per_second or error, summary), fastest first,
    then the dropped ones.
  type: list
  returned: always
"""


def tarball_url(mirror, version, filename, sha256):
    base = mirror["url"].rstrip("/")
    if mirror.get("layout", "python.org") == "pyenv":
        return f"{base}/{sha256}"
    return f"{base}/{version}/{filename}"


def probe(url, timeout, sample_bytes, validate_certs):
    """Time the download of the sample; returns (bytes_per_second, None) or (None, reason)."""
    start = time.monotonic()
    try:
        response = open_url(
            url,
            headers={"Range": f"bytes=0-{sample_bytes - 1}"},
            timeout=timeout,
            validate_certs=validate_certs,
        )
        received = 0
        with response:
            while received < sample_bytes:
                block = response.read(min(65536, sample_bytes - received))
                if not block:
                    break
                received += len(block)
                if time.monotonic() - start > timeout:
                    return None, f"too slow: {received} bytes in {timeout:g} s"
    except HTTPError as exc:
        return None, f"HTTP {exc.code} {exc.reason}"
    except URLError as exc:
        reason = exc.reason
        if isinstance(reason, socket.timeout):
            return None, f"no answer within {timeout:g} s"
        return None, str(reason)
    except socket.timeout:  # noqa: UP041 - not yet TimeoutError on the 3.9 of Debian 11 hosts
        return None, f"no answer within {timeout:g} s"
    except OSError as exc:
        return None, str(exc)
    if received == 0:
        return None, "empty answer"
    elapsed = max(time.monotonic() - start, 1e-6)
    return received / elapsed, None


def main():
    module = AnsibleModule(
        argument_spec={
            "mirrors": {"type": "list", "elements": "dict", "required": True},
            "version": {"type": "str", "required": True},
            "filename": {"type": "str", "required": True},
            "sha256": {"type": "str", "required": True},
            "timeout": {"type": "float", "default": 5.0},
            "sample_bytes": {"type": "int", "default": 262144},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    probes = []
    for mirror in params["mirrors"]:
        if not mirror.get("url"):
            module.fail_json(msg=f"mirror without url: {mirror!r}")
        url = tarball_url(mirror, params["version"], params["filename"], params["sha256"])
        speed, error = probe(url, params["timeout"], params["sample_bytes"], params["validate_certs"])
        entry = {"mirror": mirror["url"], "url": url, "error": error}
        if speed is not None:
            entry["kib_per_second"] = round(speed / 1024, 1)
        entry["summary"] = f"{url}: {error or str(entry['kib_per_second']) + ' KiB/s'}"
        probes.append(entry)

    reachable = sorted((p for p in probes if p["error"] is None), key=lambda p: -p["kib_per_second"])
    if not reachable:
        reasons = "; ".join(f"{p['url']}: {p['error']}" for p in probes)
        module.fail_json(msg=f"no mirror delivered {params['filename']}: {reasons}", probes=probes)
    dropped = [p for p in probes if p["error"] is not None]
    module.exit_json(changed=False, url=reachable[0]["url"], probes=reachable + dropped)


if __name__ == "__main__":
    main()
