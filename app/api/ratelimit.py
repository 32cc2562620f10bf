"""Per-client token buckets for task creation."""

import math
import time
from collections.abc import Callable

# Above this many tracked clients, buckets that have refilled completely are forgotten
# (a full bucket is what a new client gets anyway), so memory stays bounded.
PRUNE_ABOVE = 10_000


class RateLimiter:
    """`burst` requests at once per client, refilled at `per_minute` a minute."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def acquire(self, client: str) -> int:
        """Take one token: 0 when allowed, else the whole seconds until one is available."""
        now = self.clock()
        tokens, when = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > PRUNE_ABOVE:
                self._prune(now)
            return 0
        self._buckets[client] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        full = [c for c, (tokens, when) in self._buckets.items() if tokens + (now - when) * self.rate >= self.burst]
        for client in full:
            del self._buckets[client]
