"""Throttle failed authentications per client address, on the ``limits`` library.

Every 401 answer to a request that carried a key counts against its client address;
past ``failed_auth_limit`` within the window, a wrong key gets 429 with Retry-After
instead of 401 until the window ends. A valid key is never refused, whatever its
address did (behind a load balancer one guesser would otherwise lock every tenant
out), and costs the throttle nothing: only failures touch the counters. Keys are
long random secrets; the throttle bounds the load and noise of guessing, it cannot
make a right guess fail. Requests without a credential are not counted. Behind
proxies, ``trusted_proxy_hops`` makes the client address the one they forward.

The counters share the gateway's limits storage (``RequestLimiter.storage``: SQLite,
Redis or DynamoDB), so the throttle holds across workers and instances. It fails
open.

This drives ``limits`` directly, as flask-limiter does internally, instead of
flask-limiter's ``application_limits``: for one application-wide limit its
per-request machinery (resolving, filtering and exempting limits on every request)
cost about 3 % of a worker's CPU per completion and its import about 20 ms of cold
start.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, request

from gateway.http import error_response

logger = logging.getLogger(__name__)
NAMESPACE = "failed-auth"


class FailedAuthThrottle:
    """Counts 401 answers per client address; an address over the limit gets 429 for wrong keys."""

    def __init__(self, storage, limit: str, presented_key):
        """``limit`` in the ``limits`` notation ("20/minute"); ``presented_key(request)`` tells
        whether a request carries a credential."""
        from limits import parse
        from limits.strategies import FixedWindowRateLimiter

        self.item = parse(limit)
        self.strategy = FixedWindowRateLimiter(storage)
        self.presented_key = presented_key

    def install(self, app: Flask) -> None:
        """Count every 401 answer to a request with a key; past the limit, answer 429 instead."""
        app.after_request(self.count_failure)

    def count_failure(self, response: Response) -> Response:
        """Count a 401 answer to a request that carried a key against its address; the answer
        becomes a 429 once the address is over its limit."""
        if response.status_code != 401 or self.presented_key(request) is None:
            return response
        address = _address()
        try:
            if self.strategy.hit(self.item, NAMESPACE, address):
                return response
            reset_at = self.strategy.get_window_stats(self.item, NAMESPACE, address).reset_time
        except Exception as exc:  # fail open: the storage is down, the 401 stands
            logger.warning("failed-auth throttle unavailable", extra={"error": type(exc).__name__})
            return response
        return error_response(429, "Too many failed authentication attempts from this address; retry "
                              "after the time in Retry-After.", "rate_limit_error", "too_many_failed_attempts",
                              {"Retry-After": str(max(1, int(reset_at - time.time())))})


def _address() -> str:
    """The client address as the WSGI server (or Zappa, from the API Gateway event) gives it."""
    return request.remote_addr or "127.0.0.1"
