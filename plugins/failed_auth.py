"""Throttle failed authentications per client address, on the ``limits`` library.

An address that sent ``failed_auth_limit`` wrong keys (answers 401) within the window
gets 429 with Retry-After for every request that carries a key, right or wrong, until
the window ends: otherwise a right guess would still answer 200 and the throttle
would not slow guessing at all. Requests without a credential are not checked.

The counters share the gateway's limits storage (``RequestLimiter.storage``: SQLite,
Redis or DynamoDB), so the throttle holds across workers and instances. It fails
open: keys are long random secrets, the throttle only slows guessing.

This drives ``limits`` directly, as flask-limiter does internally, instead of
flask-limiter's ``application_limits``: for one application-wide limit its
per-request machinery (resolving, filtering and exempting limits on every request)
cost about 3 % of a worker's CPU per completion and its import about 20 ms of cold
start, for the same single counter read done here.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, request

from gateway.http import error_response

logger = logging.getLogger(__name__)
NAMESPACE = "failed-auth"


class FailedAuthThrottle:
    """Counts 401 answers per client address and refuses (429) an address over the limit."""

    def __init__(self, storage, limit: str, presented_key):
        """``limit`` in the ``limits`` notation ("20/minute"); ``presented_key(request)`` tells
        whether a request carries a credential."""
        from limits import parse
        from limits.strategies import FixedWindowRateLimiter

        self.item = parse(limit)
        self.strategy = FixedWindowRateLimiter(storage)
        self.presented_key = presented_key

    def install(self, app: Flask) -> None:
        """Check before every request with a key; count every 401 answer to one."""
        app.before_request(self.refuse_when_over)
        app.after_request(self.count_failure)

    def refuse_when_over(self) -> Response | None:
        """Answer 429 for an address that used up its failed attempts (None lets the request on)."""
        if self.presented_key(request) is None:
            return None
        address = _address()
        try:
            if self.strategy.test(self.item, NAMESPACE, address):
                return None
            reset_at = self.strategy.get_window_stats(self.item, NAMESPACE, address).reset_time
        except Exception as exc:  # fail open: the storage is down, guessing is still slow
            logger.warning("failed-auth throttle unavailable", extra={"error": type(exc).__name__})
            return None
        return error_response(429, "Too many failed authentication attempts from this address; retry "
                              "after the time in Retry-After.", "rate_limit_error", "too_many_failed_attempts",
                              {"Retry-After": str(max(1, int(reset_at - time.time())))})

    def count_failure(self, response: Response) -> Response:
        """Count a 401 answer to a request that carried a key against its address."""
        if response.status_code == 401 and self.presented_key(request) is not None:
            try:
                self.strategy.hit(self.item, NAMESPACE, _address())
            except Exception as exc:  # fail open, as above
                logger.warning("failed-auth throttle unavailable", extra={"error": type(exc).__name__})
        return response


def _address() -> str:
    """The client address as the WSGI server (or Zappa, from the API Gateway event) gives it."""
    return request.remote_addr or "127.0.0.1"
