"""Per-key request, token and spend limits, on the ``limits`` library, exact across processes.

Counters live in the storage named by ``rate_limit_storage_uri`` (see
:meth:`gateway.config.Settings.limit_storage_uri`): ``memory://`` (per process:
only exact with one worker), ``redis://``, ``sqlite:///`` (the local default,
shared by all workers on a host) or ``dynamodb://`` (Lambda); the last two are in
:mod:`gateway.limit_storage`. Windows are fixed windows (one atomic increment per
check, so no storage ever admits more than the limit).

Each completion, embedding or Responses call also takes one of its key's slots for calls in
flight (``concurrent_requests``: the key's own, else its tier's) with the hit, in the same
transaction on SQLite, and gives it back when it ends (:mod:`gateway.concurrency`; 429
``concurrency_limit_exceeded`` when every slot is taken).

flask-limiter's route decorators do not fit these limits: they are chosen per
*authenticated caller* (known only inside the pipeline) and token and spend
counts are only known after the provider answered. So this module drives
``limits`` directly, as flask-limiter does internally (so does the throttle on
failed authentications per client address, ``plugins.failed_auth``).
"""
from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from flask import Flask, g
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string

from gateway.concurrency import Slot, Slots
from gateway.config import Settings, TierLimits
from gateway.errors import GatewayError, InvalidRequest, RateLimited, ServiceUnavailable
from gateway.leases import leases_for
from gateway.limit_storage import batch  # importing it registers the sqlite:// and dynamodb:// schemes
from gateway.types import TIERS, Caller, RequestLogRecord

logger = logging.getLogger(__name__)
T = TypeVar("T")
MICRO_USD = 1_000_000
MINUTE = 60


@dataclass(frozen=True, eq=False)
class LimitState:
    """The per-minute request limit as the caller sees it: what the X-RateLimit-* headers say."""

    limit: int
    remaining: int
    reset: int


@lru_cache(maxsize=256)
def _item(kind: type[RateLimitItem], amount: int) -> RateLimitItem:
    return kind(amount)


def _month_end(now: float) -> float:
    """Epoch seconds of the start of next calendar month (UTC)."""
    year, month = time.gmtime(now)[:2]
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


class Spend(NamedTuple):
    """What a caller has used: tokens in this minute's window, micro-USD this month."""

    tokens: int
    micro_usd: int


class Entry(NamedTuple):
    """What :meth:`RequestLimiter.enter` gives a call: its spend so far (None: the store failed open)
    and its slot among the key's calls in flight (None: the store failed open)."""

    spend: Spend | None
    slot: Slot | None


class RequestLimiter:
    """Counts each caller's requests, tokens and spend; raises 429/400/503 when it must."""

    def __init__(self, settings: Settings):
        """Counters in the storage the settings name (built once per app)."""
        self.settings = settings
        self.storage: Storage = storage_from_string(settings.limit_storage_uri())
        self.fail_open = settings.rate_limit_fail_mode == "open"
        self._tiers = {name: settings.tier(name) for name in TIERS}
        #: Calls in flight per key, as leases beside the counters (gateway.concurrency).
        self.slots = Slots(leases_for(self.storage), settings.concurrency_lease_seconds)
        #: Storage failures since start (the fail-open metric; also logged as warnings).
        self.store_errors = 0

    def tier(self, caller: Caller) -> TierLimits:
        """The limits of the caller's tier (an unknown tier gets the free tier's)."""
        return self._limits_of(caller.tier)

    def _limits_of(self, tier: str) -> TierLimits:
        return self._tiers.get(tier) or self._tiers["free"]

    def install(self, app: Flask) -> None:
        """Add the X-RateLimit-* headers to every answer of a request that was limited."""
        app.after_request(_add_headers)

    def init(self) -> None:
        """Create the counters table when the storage needs one (DynamoDB)."""
        create = getattr(self.storage, "create_table", None)
        if create:
            create()

    def _guard(self, operation: Callable[[], T], fallback: T) -> T:
        """Run a storage operation; an unreachable store fails closed (503) or open (warning)."""
        try:
            return operation()
        except GatewayError:
            raise
        except Exception as exc:
            self.store_errors += 1
            if not self.fail_open:
                logger.error("rate limit store unreachable; refusing requests",
                             extra={"error": type(exc).__name__, "fail_mode": "closed"})
                raise ServiceUnavailable("Rate limit counters are unreachable; try again shortly.",
                                         code="rate_limit_store_unavailable") from None
            logger.warning("rate limit store unreachable; serving without limits",
                           extra={"error": type(exc).__name__, "fail_mode": "open",
                                  "metric": "RateLimitStoreErrors", "count": self.store_errors})
            return fallback

    def hit(self, caller: Caller) -> Spend | None:
        """Count one request against the caller's per-minute and per-hour limits (429 when over).

        A key's own limits override its tier's. The hour window is counted only when the
        minute window admitted the request. Returns what the caller has spent so far, read
        in the same transaction, for :meth:`check_spend` (None when the store failed open).
        """
        return self._count(caller, None).spend

    def enter(self, caller: Caller) -> Entry:
        """:meth:`hit`, and take one of the caller's slots for calls in flight (its key's
        ``concurrent_requests``, else its tier's) in the same transaction where the store has them
        (SQLite); 429 ``concurrency_limit_exceeded`` when all are taken. The call gives the slot
        back with ``Entry.slot.release()`` when it ends."""
        return self._count(caller, caller.concurrent_requests or self.tier(caller).concurrent_requests)

    def _count(self, caller: Caller, in_flight: int | None) -> Entry:
        """Count the request (and take a slot of ``in_flight`` when given), raising what refuses it."""
        tier = self.tier(caller)
        per_minute = caller.requests_per_minute or tier.requests_per_minute
        per_hour = caller.requests_per_hour or tier.requests_per_hour
        minute = _item(RateLimitItemPerMinute, per_minute)
        hour = _item(RateLimitItemPerHour, per_hour)
        minute_key, hour_key = minute.key_for("requests", caller.key_id), hour.key_for("requests", caller.key_id)
        token_key, budget_key = self._token_key(caller.tier, caller.key_id), self._budget_key(caller.key_id)

        def count() -> tuple[int, float, int, Spend, str | None]:
            lease = None
            with batch(self.storage):
                in_minute = self.storage.incr(minute_key, minute.get_expiry())
                reset = self.storage.get_expiry(minute_key)
                in_hour = self.storage.incr(hour_key, hour.get_expiry()) if in_minute <= per_minute else 0
                spend = Spend(self.storage.get(token_key), self.storage.get(budget_key))
                if in_flight and in_minute <= per_minute and in_hour <= per_hour:
                    lease = self.slots.take(caller.key_id, in_flight)
            return in_minute, reset, in_hour, spend, lease

        counted = self._guard(count, None)
        if counted is None:
            return Entry(None, None)
        in_minute, reset, in_hour, spend, lease = counted
        g.rate_limit = LimitState(per_minute, max(0, per_minute - in_minute), math.ceil(reset))
        if in_minute > per_minute:
            raise RateLimited(f"Rate limit of {per_minute} requests per minute exceeded for this key; "
                              "retry after the time in Retry-After.", retry_after=math.ceil(reset - time.time()))
        if in_hour > per_hour:
            reset = self._guard(lambda: self.storage.get_expiry(hour_key), time.time() + 60)
            raise RateLimited(f"Rate limit of {per_hour} requests per hour exceeded for this key; "
                              "retry after the time in Retry-After.", retry_after=math.ceil(reset - time.time()))
        if in_flight and lease is None:
            raise RateLimited(f"Concurrency limit of {in_flight} calls in flight reached for this key; "
                              "retry when one of them has ended.", retry_after=1, code="concurrency_limit_exceeded")
        return Entry(spend, self.slots.hold(caller.key_id, lease) if lease else None)

    def check_spend(self, caller: Caller, asked: int | None = None, spend: Spend | None = None) -> None:
        """Before the call: refuse ``asked`` output tokens (``max_tokens`` or its kin) above the tier's
        tokens per minute (400), an exhausted token window (429) or an exhausted monthly budget
        (429 ``insufficient_quota``). ``spend``: what :meth:`hit` read (None, when the counter
        store failed open: not checked)."""
        tier = self.tier(caller)
        if asked and asked > tier.tokens_per_minute:
            raise InvalidRequest(f"max_tokens {asked} exceeds this key's limit of {tier.tokens_per_minute} "
                                 "tokens per minute; ask for fewer.", code="max_tokens_exceeds_limit",
                                 param="max_tokens")
        if spend is None:  # the counter store failed open
            return
        used, spent = spend
        if used >= tier.tokens_per_minute:
            reset = self._guard(lambda: self.storage.get_expiry(self._token_key(caller.tier, caller.key_id)),
                                time.time() + 60)
            raise RateLimited(f"Token limit of {tier.tokens_per_minute} tokens per minute reached for "
                              "this key; retry after the time in Retry-After.",
                              retry_after=math.ceil(reset - time.time()))
        if spent >= tier.monthly_budget_usd * MICRO_USD:
            raise RateLimited(f"The monthly budget of ${tier.monthly_budget_usd:.2f} of this key is spent; "
                              "it renews at the start of next month.",
                              retry_after=math.ceil(_month_end(time.time()) - time.time()),
                              code="insufficient_quota")

    def charge(self, records: Iterable[RequestLogRecord]) -> None:
        """After the calls: add the tokens and cost of finished requests to their keys' counters, in
        one transaction, summed per key (answers from the cache cost nothing).

        The request-log writer calls it with each batch of records, so this bookkeeping
        leaves the request's path and costs one write per batch instead of one per
        request; token and budget limits are checked before a call with what was charged
        until then, as they always were (the tokens of an answer are known only after it).
        """
        now = time.time()
        month_left = math.ceil(_month_end(now) - now)
        totals: dict[str, list[int]] = {}
        for record in records:
            if record.cached or not record.api_key_id:
                continue
            for key, expiry, amount in (
                    (self._token_key(record.tier, record.api_key_id), MINUTE, record.tokens),
                    (self._budget_key(record.api_key_id), month_left, round(record.cost * MICRO_USD))):
                if amount > 0:
                    totals.setdefault(key, [expiry, 0])[1] += amount

        def add() -> None:
            with batch(self.storage):
                for key, (expiry, amount) in totals.items():
                    self.storage.incr(key, expiry, amount)

        if totals:
            self._guard(add, None)

    def _token_key(self, tier: str, key_id: str) -> str:
        return _item(RateLimitItemPerMinute, self._limits_of(tier).tokens_per_minute).key_for("tokens", key_id)

    @staticmethod
    def _budget_key(key_id: str) -> str:
        return f"LIMITER/budget/{key_id}/{time.strftime('%Y-%m', time.gmtime())}"


def _add_headers(response: Any) -> Any:
    state: LimitState | None = g.get("rate_limit")
    if state is not None:
        response.headers["X-RateLimit-Limit"] = str(state.limit)
        response.headers["X-RateLimit-Remaining"] = str(state.remaining)
        response.headers["X-RateLimit-Reset"] = str(state.reset)
    return response
