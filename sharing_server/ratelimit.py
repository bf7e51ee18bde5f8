"""Per-recipient request rate limiting (token buckets).

Each recipient has its own bucket of ``burst`` requests, refilled at
``requests_per_second`` (``server.rate_limit`` in shares.yaml, re-read without restart).
A burst from one recipient therefore empties only that recipient's bucket: the others
keep their full allowance. A request that finds its bucket empty is answered
``429 RESOURCE_EXHAUSTED`` with ``Retry-After`` (whole seconds until a token is back).

Buckets live in the server process; with several worker processes each enforces the
limit on its own share of the traffic, which bounds a recipient at workers x limit.
"""
from __future__ import annotations

import math
import threading
import time

from sharing_server.shares_config import RateLimit

#: Buckets not touched for this long are dropped, so rotating keys cannot grow memory.
_IDLE_SECONDS = 3600.0
_MAX_BUCKETS = 100_000


class TokenBuckets:
    """Thread-safe token buckets keyed by recipient (or client address for failed logins)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def take(self, key: str, limit: RateLimit) -> float:
        """Consume one token for ``key``; returns 0.0 if allowed, else seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - last) * limit.requests_per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                allowed = 0.0
            else:
                self._buckets[key] = (tokens, now)
                allowed = (1.0 - tokens) / limit.requests_per_second
            if len(self._buckets) > _MAX_BUCKETS:
                self._evict(now)
            return allowed

    def peek_empty(self, key: str, limit: RateLimit) -> float:
        """Seconds until ``key`` has a token again, without consuming one (0.0 = has one)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - last) * limit.requests_per_second)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / limit.requests_per_second

    def _evict(self, now: float) -> None:
        for key, (_, last) in list(self._buckets.items()):
            if now - last > _IDLE_SECONDS:
                del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))
