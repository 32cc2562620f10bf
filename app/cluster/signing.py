"""Host-to-host request signatures: HMAC-SHA256 with the cluster secret over the timestamp, a
nonce, the method and the path, checked by the internal file endpoint. Timestamps are the
database's time as each host estimates it (app/cluster/cluster.py), so hosts whose own clocks
disagree still accept each other; a nonce is accepted once (Nonces), so a request seen on the
wire cannot be replayed within its MAX_AGE_S either. (Callbacks to clients have a scheme of their
own, app/tasks/callbacks.py.)"""

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from app.ascii_numbers import ascii_int

NODE_HEADER = "X-Video-Api-Node"
TIMESTAMP_HEADER = "X-Video-Api-Timestamp"
SIGNATURE_HEADER = "X-Video-Api-Signature"
NONCE_HEADER = "X-Video-Api-Nonce"
NONCE_LENGTH = 32  # hex digits: 128 random bits
# A signature is good this long after its timestamp, and never more than MAX_FUTURE_S before it
# (the two hosts' estimates of the database's time differ by far less).
MAX_AGE_S = 30
MAX_FUTURE_S = 5


def request_signature(secret: str, timestamp: str, nonce: str, method: str, path: str) -> str:
    message = f"{timestamp}\n{nonce}\n{method}\n{path}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, node: str, method: str, path: str, now: float) -> dict[str, str]:
    timestamp, nonce = str(int(now)), secrets.token_hex(NONCE_LENGTH // 2)
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: request_signature(secret, timestamp, nonce, method, path),
    }


class Nonces:
    """The nonces of the signed requests accepted within the last signature lifetime: a second
    request with one of them is a replay."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}  # nonce -> monotonic time it can no longer be valid

    def first_use(self, nonce: str) -> bool:
        now = time.monotonic()
        # Oldest first (insertion order), so the expired ones are at the front.
        while self._expiry:
            oldest, until = next(iter(self._expiry.items()))
            if until >= now:
                break
            del self._expiry[oldest]
        if nonce in self._expiry:
            return False
        self._expiry[nonce] = now + MAX_AGE_S + MAX_FUTURE_S
        return True


def is_signed(secret: str, headers: Mapping[str, str], method: str, path: str, now: float, nonces: Nonces) -> bool:
    """True when the headers carry a signature of this request with the secret, stamped at most
    MAX_AGE_S before now and at most MAX_FUTURE_S after it, with a nonce not accepted before."""
    stamp = headers.get(TIMESTAMP_HEADER, "")
    nonce = headers.get(NONCE_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    seconds = ascii_int(stamp)
    fresh = seconds is not None and -MAX_FUTURE_S <= now - seconds <= MAX_AGE_S
    well_formed = len(nonce) == NONCE_LENGTH and nonce.isascii() and nonce.isalnum()
    expected = request_signature(secret, stamp, nonce, method, path) if secret else ""
    authentic = bool(secret and fresh and well_formed and hmac.compare_digest(given.encode(), expected.encode()))
    return authentic and nonces.first_use(nonce)
