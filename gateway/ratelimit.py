"""Per-caller request limits, on the ``limits`` library.

This first version keeps counters in process memory (exact within one process);
the shared storages (Redis, DynamoDB, SQLite across workers) plug in by URI.
"""
from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute, strategies
from limits import storage as limit_storage

from gateway.config import Settings
from gateway.errors import RateLimited
from gateway.types import Caller


class RequestLimiter:
    """Checks and counts one request against the caller's per-minute limit."""

    def __init__(self, settings: Settings, storage_uri: str = "memory://"):
        self.settings = settings
        self._limiter = strategies.MovingWindowRateLimiter(limit_storage.storage_from_string(storage_uri))
        self._items: dict[int, RateLimitItemPerMinute] = {}

    def limit_for(self, caller: Caller) -> int:
        """The caller's requests per minute: its key's own limit, else its tier's."""
        return caller.requests_per_minute or self.settings.requests_per_minute(caller.tier)

    def hit(self, caller: Caller) -> None:
        """Count one request; raise :class:`RateLimited` with ``Retry-After`` when over the limit."""
        per_minute = self.limit_for(caller)
        item = self._items.get(per_minute)
        if item is None:
            item = self._items.setdefault(per_minute, RateLimitItemPerMinute(per_minute))
        if not self._limiter.hit(item, "key", caller.key_id):
            reset_at = self._limiter.get_window_stats(item, "key", caller.key_id).reset_time
            raise RateLimited(f"Rate limit of {per_minute} requests per minute exceeded for this key.",
                              retry_after=math.ceil(reset_at - time.time()))
