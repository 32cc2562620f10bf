"""When to try again and how long to wait: one rule for downloads and for callback deliveries."""

# Answers that say "try again later"; every other HTTP error status is final.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_DELAY_S = 60.0


def backoff_s(first_delay_s: float, attempt: int) -> float:
    """The wait after failed attempt number `attempt` (from 1): doubling, at most MAX_DELAY_S."""
    factor: int = 2 ** (attempt - 1)  # attempt >= 1: an int (typeshed types int ** int as Any)
    return min(first_delay_s * factor, MAX_DELAY_S)
