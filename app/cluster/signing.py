"""Host-to-host request signatures: HMAC-SHA256 with the cluster secret over the timestamp, method
and path, checked by the internal file endpoint. Timestamps are the database's time as each host
estimates it (app/cluster/cluster.py), so hosts whose own clocks disagree still accept each other.
(Callbacks to clients have a scheme of their own, app/tasks/callbacks.py.)"""

import hashlib
import hmac
from collections.abc import Mapping

from app.ascii_numbers import ascii_int

NODE_HEADER = "X-Video-Api-Node"
TIMESTAMP_HEADER = "X-Video-Api-Timestamp"
SIGNATURE_HEADER = "X-Video-Api-Signature"
# A signature is good this long after its timestamp, and never more than MAX_FUTURE_S before it
# (the two hosts' estimates of the database's time differ by far less).
MAX_AGE_S = 30
MAX_FUTURE_S = 5


def request_signature(secret: str, timestamp: str, method: str, path: str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}\n{method}\n{path}".encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str, node: str, method: str, path: str, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: request_signature(secret, timestamp, method, path),
    }


def is_signed(secret: str, headers: Mapping[str, str], method: str, path: str, now: float) -> bool:
    """True when the headers carry a signature of this request with the secret, stamped at most
    MAX_AGE_S before now and at most MAX_FUTURE_S after it."""
    stamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    seconds = ascii_int(stamp)
    fresh = seconds is not None and -MAX_FUTURE_S <= now - seconds <= MAX_AGE_S
    expected = request_signature(secret, stamp, method, path) if secret else ""
    return bool(secret and fresh and hmac.compare_digest(given.encode(), expected.encode()))
