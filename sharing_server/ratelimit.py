"""Per-recipient request rate limiting (token buckets).

Each recipient has its own bucket of ``burst`` requests, refilled at
``requests_per_second`` (``server.rate_limit`` in shares.yaml, re-read without restart).
A burst from one recipient therefore empties only that recipient's bucket: the others
keep their full allowance. A request that finds its bucket empty is answered
``429 RESOURCE_EXHAUSTED`` with ``Retry-After`` (whole seconds until a token is back).

The server keeps its buckets in a small SQLite file in the sharing state directory
(:class:`SharedTokenBuckets`), so every worker process of one server draws from the same
allowance: with N workers a recipient still gets ``burst`` requests, not N times that.
:class:`TokenBuckets` is the same logic in memory, for a single process.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path

from ggm_lakehouse.model.shares_config import RateLimit

#: Buckets not touched for this long are dropped, so rotating keys cannot grow memory.
_IDLE_SECONDS = 3600.0
_MAX_BUCKETS = 100_000


log = logging.getLogger(__name__)
RATE_LIMIT_FILE_NAME = "ratelimit.sqlite3"


def _refill(tokens: float, last: float, now: float, limit: RateLimit) -> float:
    # A clock that steps back (another process, NTP) must not drain a bucket.
    return min(float(limit.burst), tokens + max(0.0, now - last) * limit.requests_per_second)


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
            tokens = _refill(tokens, last, now, limit)
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
            tokens = _refill(tokens, last, now, limit)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / limit.requests_per_second

    def _evict(self, now: float) -> None:
        for key, (_, last) in list(self._buckets.items()):
            if now - last > _IDLE_SECONDS:
                del self._buckets[key]


class SharedTokenBuckets:
    """Token buckets in a SQLite file, shared by every process that opens the same file.

    Each :meth:`take` is one short ``BEGIN IMMEDIATE`` transaction, so concurrent workers
    serialise on the file and never both spend the last token. The data is disposable
    (at worst a bucket starts full again), hence WAL without fsync. If the file cannot
    be used the request is let through and the failure logged: a broken rate-limit
    store must not take the sharing service down.
    """

    def __init__(self, path: Path | str, clock=time.time):
        self.path = Path(path)
        self._clock = clock  # wall clock: monotonic clocks differ between processes
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._takes = 0

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)"
            )
            os.chmod(self.path, 0o600)
            self._connection = connection
        return self._connection

    def take(self, key: str, limit: RateLimit) -> float:
        """Consume one token for ``key``; returns 0.0 if allowed, else seconds until one is available."""
        with self._lock:
            try:
                return self._take(self._connect(), key, limit)
            except sqlite3.Error:
                log.exception("rate-limit store %s unusable; request not throttled", self.path)
                return 0.0

    def _take(self, connection: sqlite3.Connection, key: str, limit: RateLimit) -> float:
        connection.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()
            row = connection.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens = _refill(row[0], row[1], now, limit) if row else float(limit.burst)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / limit.requests_per_second
            tokens = tokens - 1.0 if wait == 0.0 else tokens
            connection.execute(
                "INSERT INTO buckets (key, tokens, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
                (key, tokens, now),
            )
            self._takes += 1
            if self._takes % 1000 == 0:
                # Rotating keys (client addresses) must not grow the file without bound.
                connection.execute("DELETE FROM buckets WHERE updated < ?", (now - _IDLE_SECONDS,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return wait

    def close(self) -> None:
        """Close this process's connection to the file."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))
