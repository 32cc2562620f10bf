"""A file's id names the host that holds it: its first TAG_DIGITS hex digits are a digest of the
host's node name, so a load balancer can send a download straight to that host (the haproxy role
writes one rule per host with the same formula; tests/test_role_haproxy_routing.py checks both agree).
The rest is random; an id of any other shape (older files) is still valid, just not routed."""

import hashlib
import secrets

TAG_DIGITS = 8
_RANDOM_BYTES = 12  # 96 random bits: 32 hex digits in all, the shape every id has had


def node_tag(node: str) -> str:
    return hashlib.sha256(node.encode()).hexdigest()[:TAG_DIGITS]


def new_file_id(node: str) -> str:
    return node_tag(node) + secrets.token_hex(_RANDOM_BYTES)
