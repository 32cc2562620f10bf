"""Host-to-host request signatures: HMAC-SHA256 with the cluster secret over the timestamp, method
and path, checked by the internal file endpoint. (Callbacks to clients have a scheme of their own,
app/tasks/callbacks.py.)"""

import hashlib
import hmac
import time
from collections.abc import Mapping

from app.ascii_numbers import ascii_int

NODE_HEADER = "X-Video-Api-Node"
TIMESTAMP_HEADER = "X-Video-Api-Timestamp"
SIGNATURE_HEADER = "X-Video-Api-Signature"
MAX_CLOCK_SKEW_S = 30


def request_signature(secret: str, timestamp: str, method: str, path: str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}\n{method}\n{path}".encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str, node: str, method: str, path: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: request_signature(secret, timestamp, method, path),
    }


def is_signed(secret: str, headers: Mapping[str, str], method: str, path: str) -> bool:
    """True when the headers carry a signature of this request with the secret, within MAX_CLOCK_SKEW_S."""
    stamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    seconds = ascii_int(stamp)
    fresh = seconds is not None and abs(time.time() - seconds) <= MAX_CLOCK_SKEW_S
    expected = request_signature(secret, stamp, method, path) if secret else ""
    return bool(secret and fresh and hmac.compare_digest(given.encode(), expected.encode()))
