"""The one retry loop: timeouts, retries with backoff and full jitter, fallbacks, circuit breakers.

For each candidate ``(provider, model)`` in order: skip it while its circuit is
open; otherwise call it, retrying retryable failures (429, 5xx, timeouts,
connection errors) with exponential backoff and full jitter, waiting at least the
upstream's ``Retry-After``; then fall back to the next candidate. The whole
request keeps inside ``request_timeout`` (API Gateway ends it at 29 s).

Written here rather than taken from a library (tenacity, pybreaker): the loop
must interleave retries, fallbacks, breakers and one deadline, and record every
attempt's latency; composing two libraries for that is longer than this module.
"""
from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from gateway.config import Settings
from gateway.errors import GatewayError, ProviderError, ProviderTimeout, ServiceUnavailable, UpstreamRejected
from gateway.types import Provider, RequestLogRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Deadline(NamedTuple):
    """When the current request's budget ends, on the clock of the :class:`Resilience` that set it."""

    at: float
    clock: Callable[[], float]


_deadline: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("deadline", default=None)


def time_left() -> float | None:
    """Seconds left of the current request's budget (providers cap their timeouts with it), or None."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline.at - deadline.clock())


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt + 1``: full jitter, at least ``retry_after``."""
    jittered = rng() * min(cap, base * 2 ** attempt)
    return max(jittered, retry_after or 0.0)


#: Failures the upstream causes: its 5xx, an answer it garbled, a connection it refused or dropped,
#: its timeouts. Only these count towards opening a breaker.
UPSTREAM_FAILURES = frozenset({"provider_error", "provider_bad_response", "provider_unreachable",
                               "provider_timeout"})


def counts_as_failure(exc: ProviderError) -> bool:
    """Whether ``exc`` says the upstream is unhealthy (the breaker counts it). Nothing a caller's
    input causes counts (its 4xx, text it cannot read), nor the upstream's rate limiting of our
    key or a provider without credentials: one tenant can never open a breaker for all."""
    return exc.code in UPSTREAM_FAILURES and not isinstance(exc, UpstreamRejected)


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → after ``cooldown`` one probe
    (half-open) → closed on its success, open again on its failure."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """May a call go upstream now? In half-open state only one probe at a time may."""
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        """A call succeeded: close."""
        with self._lock:
            self.failures, self.opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        """A call failed: count it; open at the threshold, or again after a failed probe."""
        with self._lock:
            self.failures += 1
            if self._probing or self.failures >= self.threshold:
                self.opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """A probe ended without saying anything about health (e.g. the caller's 400)."""
        with self._lock:
            self._probing = False

    def snapshot(self) -> dict:
        """The state for ``/api/v1/health/ready``."""
        state = self.state
        view = {"state": state, "consecutive_failures": self.failures}
        if state == "open" and self.opened_at is not None:
            view["retry_in_seconds"] = round(self.cooldown - (self._clock() - self.opened_at), 1)
        return view


class LatencyTracker:
    """Exponential moving average of successful call latency per (provider, model)."""

    def __init__(self, weight: float = 0.3):
        self._weight = weight
        self._averages: dict[tuple[str, str], float] = {}

    def observe(self, key: tuple[str, str], milliseconds: float) -> None:
        """Fold one call's latency into the average."""
        previous = self._averages.get(key)
        self._averages[key] = milliseconds if previous is None else \
            previous + self._weight * (milliseconds - previous)

    def average(self, key: tuple[str, str]) -> float | None:
        """The moving average in ms, or None before the first call."""
        return self._averages.get(key)


class Resilience:
    """One app's breakers, latency averages and retry policy (built once, shared by all requests).

    ``clock`` (seconds, monotonic) serves everything here: the breakers' cool-downs, the latencies,
    and the request's deadline that :func:`time_left` reads.
    """

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.latency = LatencyTracker()
        self.sleep = sleep
        self._clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, provider: str, model: str) -> CircuitBreaker:
        """The breaker of ``provider`` serving ``model`` (created on first use)."""
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(key, CircuitBreaker(
                    self.settings.circuit_breaker_failure_threshold,
                    self.settings.circuit_breaker_cooldown, self._clock))
        return breaker

    def circuits(self) -> dict[str, dict]:
        """Every breaker's state, by ``provider/model``."""
        return {f"{provider}/{model}": breaker.snapshot()
                for (provider, model), breaker in sorted(self._breakers.items())}

    def call(self, candidates: list[tuple[Provider, str]], attempt: Callable[[Provider, str], T],
             record: RequestLogRecord) -> tuple[T, Provider, str]:
        """``attempt(provider, model)`` for each candidate with retries, until one succeeds.

        :raises UpstreamRejected: at once, when a provider refuses the request itself.
        :raises ProviderError: 502/503/504 when every candidate failed.
        """
        token = _deadline.set(_Deadline(self._clock() + self.settings.request_timeout, self._clock))
        errors: list[ProviderError] = []
        try:
            for provider, model in candidates:
                record.provider, record.model = provider.name, model
                try:
                    return self._with_retries(provider, model, attempt, record), provider, model
                except UpstreamRejected:
                    raise
                except ProviderError as exc:
                    errors.append(exc)
                if time_left() == 0:
                    break
        finally:
            _deadline.reset(token)
        raise _all_failed(errors, len(candidates))

    def _with_retries(self, provider: Provider, model: str, attempt: Callable[[Provider, str], T],
                      record: RequestLogRecord) -> T:
        settings = self.settings
        breaker = self.breaker(provider.name, model)
        for number in range(settings.retry_attempts + 1):
            if not breaker.allow():
                raise CircuitOpen(f"Provider '{provider.name}' is failing for model '{model}'; "
                                  "calls are paused for a moment (circuit open).")
            started = self._clock()
            try:
                value = attempt(provider, model)
            except ProviderError as exc:
                breaker.failure() if counts_as_failure(exc) else breaker.release()
                logger.warning("provider attempt failed", extra={
                    "provider": provider.name, "model": model, "attempt": number + 1,
                    "error_code": exc.code, "retryable": exc.retryable})
                delay = backoff_delay(number, settings.retry_base_delay, settings.retry_max_delay,
                                      exc.retry_after)
                left = time_left()
                if not exc.retryable or number == settings.retry_attempts or (left is not None
                                                                                 and delay >= left):
                    raise
                self.sleep(delay)
                continue
            except BaseException:  # a bug, not an upstream failure: free a half-open probe slot
                breaker.release()
                raise
            finally:
                elapsed_ms = (self._clock() - started) * 1000
                record.upstream_latency_ms += elapsed_ms
            breaker.success()
            self.latency.observe((provider.name, model), elapsed_ms)
            return value
        raise AssertionError("unreachable: the last attempt returns or raises")


class CircuitOpen(ProviderError):
    """The candidate's circuit is open: not called at all (503 when no fallback answers)."""

    status = 503
    code = "circuit_open"

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


def _all_failed(errors: list[ProviderError], tried: int) -> GatewayError:
    """The error the caller sees when no candidate answered: the last one's kind, a clear message."""
    last = errors[-1] if errors else ProviderError("No provider could be tried before the deadline.")
    if len(errors) <= 1 and tried <= 1:
        return last
    detail = "; ".join(error.message for error in errors)
    message = f"All {len(errors)} providers for this model failed: {detail}"
    if all(isinstance(error, CircuitOpen) for error in errors):
        return ServiceUnavailable(message, code="circuit_open")
    if isinstance(last, ProviderTimeout):
        return ProviderTimeout(message)
    return ProviderError(message, code=last.code, status=last.status, headers=last.headers)
