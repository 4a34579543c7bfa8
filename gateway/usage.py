"""Usage arithmetic over request-log records: totals, groups, percentiles, time series.

Plain functions over lists of :class:`RequestLogRecord`, so the API views stay thin and
every store gives the same answers. A record stands for ``count`` requests (folded
refusals, :mod:`gateway.refusals`): every sum, rate and percentile weighs it so. Each answer
check (``RequestLogRecord.checks``) gets its figures wherever the totals are: the answers it
checked, those it flagged (an outcome of ``FLAGGED_OUTCOMES``) and their rate.
Records are read per user (DynamoDB: a Query of ``UserAnalyticsGlobalSecondaryIndex``
each, never a Scan of the log).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from gateway.types import FLAGGED_OUTCOMES, RequestLogRecord

GROUPS: dict[str, Callable[[RequestLogRecord], str]] = {
    "model": lambda r: r.model or "unknown",
    "provider": lambda r: r.provider or "unknown",
    "day": lambda r: datetime.fromtimestamp(r.timestamp, UTC).strftime("%Y-%m-%d"),
}
MAX_BUCKETS = 60


def iso(timestamp: float) -> str:
    """``timestamp`` as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class CheckTally:
    """Answers each answer check checked and flagged, by the check's name, as records are added."""

    def __init__(self) -> None:
        self.checked: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()

    @classmethod
    def of(cls, records: Iterable[RequestLogRecord]) -> CheckTally:
        """The tally of ``records``."""
        tally = cls()
        for record in records:
            if record.checks:
                tally.add(record)
        return tally

    def add(self, record: RequestLogRecord) -> None:
        """Count the checks that ran on ``record`` (``count`` answers each)."""
        for name, outcome in record.checks.items():
            self.checked[name] += record.count
            if outcome in FLAGGED_OUTCOMES:
                self.flagged[name] += record.count

    def figures(self) -> dict[str, dict]:
        """``{check: {"checked", "flagged", "rate"}}`` (rate: flagged / checked, 4 places), for each
        check that ran at least once, by name."""
        return {name: {"checked": checked, "flagged": self.flagged[name],
                       "rate": round(self.flagged[name] / checked, 4)}
                for name, checked in sorted(self.checked.items())}


def summarize(records: Iterable[RequestLogRecord]) -> dict:
    """Requests, errors, tokens, cost, savings, cache hits, rate-limited requests and each answer
    check's figures (``checks``: :meth:`CheckTally.figures`) of ``records``."""
    totals = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "tokens": 0,
              "cost": 0.0, "saved_cost": 0.0, "cache_hits": 0, "rate_limited": 0}
    checks = CheckTally()
    for r in records:
        totals["requests"] += r.count
        totals["errors"] += r.count if r.status >= 400 else 0
        totals["prompt_tokens"] += r.prompt_tokens
        totals["completion_tokens"] += r.completion_tokens
        totals["tokens"] += r.tokens
        totals["cost"] += r.cost
        totals["saved_cost"] += r.saved_cost
        totals["cache_hits"] += r.count if r.cached else 0
        totals["rate_limited"] += r.count if r.status == 429 else 0
        if r.checks:
            checks.add(r)
    totals["cost"], totals["saved_cost"] = round(totals["cost"], 8), round(totals["saved_cost"], 8)
    totals["checks"] = checks.figures()
    return totals


def grouped(records: list[RequestLogRecord], by: str) -> list[dict]:
    """One summary per value of ``by`` (model, provider or UTC day), in key order."""
    key_of = GROUPS[by]
    groups: dict[str, list[RequestLogRecord]] = defaultdict(list)
    for record in records:
        groups[key_of(record)].append(record)
    return [{by: key, **summarize(rows)} for key, rows in sorted(groups.items())]


def percentile(values: list[float], p: float, weights: list[int] | None = None) -> float | None:
    """The nearest-rank ``p``-th percentile of ``values``, each counted ``weights`` times (once when
    not given); None for none."""
    if not values:
        return None
    pairs = sorted(zip(values, weights or [1] * len(values), strict=True))
    rank = max(1, math.ceil(p / 100 * sum(weight for _value, weight in pairs)))
    for value, weight in pairs:
        rank -= weight
        if rank <= 0:
            return round(value, 3)
    return round(pairs[-1][0], 3)


def _latency(records: list[RequestLogRecord], p: float) -> float | None:
    return percentile([r.latency_ms for r in records], p, [r.count for r in records])


def latency_percentiles(records: list[RequestLogRecord]) -> dict:
    """p50, p95 and p99 latency in milliseconds (a folded record's mean counts for each of its requests)."""
    return {f"p{p}": _latency(records, p) for p in (50, 95, 99)}


def _errors_by_type(records: list[RequestLogRecord]) -> dict[str, int]:
    found: Counter[str] = Counter()
    for record in records:
        if record.status >= 400:
            found[record.error_code] += record.count
    return dict(found)


def by_provider_and_model(records: list[RequestLogRecord]) -> list[dict]:
    """Per (provider, model): requests, errors by type, latency percentiles, tokens, cost,
    cache hit rate, rate-limited count and each answer check's figures."""
    groups: dict[tuple[str, str], list[RequestLogRecord]] = defaultdict(list)
    for record in records:
        groups[(record.provider or "unknown", record.model or "unknown")].append(record)
    rows = []
    for (provider, model), rows_of in sorted(groups.items()):
        totals = summarize(rows_of)
        rows.append({
            "provider": provider, "model": model, "requests": totals["requests"],
            "errors": totals["errors"],
            "errors_by_type": _errors_by_type(rows_of),
            "latency_ms": latency_percentiles(rows_of), "tokens": totals["tokens"],
            "cost": totals["cost"], "saved_cost": totals["saved_cost"],
            "cache_hit_rate": round(totals["cache_hits"] / totals["requests"], 4),
            "rate_limited": totals["rate_limited"], "checks": totals["checks"],
        })
    return rows


def bucket_size(start: float, end: float) -> int:
    """A whole number of minutes that cuts ``[start, end)`` into at most ``MAX_BUCKETS`` buckets."""
    return max(60, math.ceil((end - start) / MAX_BUCKETS / 60) * 60)


def time_series(records: list[RequestLogRecord], start: float, end: float, bucket: int) -> dict:
    """Requests, tokens, cost, p50/p95 latency and the answers each check flagged (``flagged``: by
    check, for the checks that ran in the series) per bucket, one series per provider/model."""
    count = max(1, math.ceil((end - start) / bucket))
    cells: dict[str, list[list[RequestLogRecord]]] = {}
    for record in records:
        index = int((record.timestamp - start) // bucket)
        if 0 <= index < count:
            name = f"{record.provider or 'unknown'}/{record.model or 'unknown'}"
            cells.setdefault(name, [[] for _ in range(count)])[index].append(record)
    series = []
    for name, buckets in sorted(cells.items()):
        tallies = [CheckTally.of(b) for b in buckets]
        ran = sorted(set().union(*(tally.checked for tally in tallies)))
        series.append({
            "name": name,
            "requests": [sum(r.count for r in b) for b in buckets],
            "tokens": [sum(r.tokens for r in b) for b in buckets],
            "cost": [round(sum(r.cost for r in b), 8) for b in buckets],
            "latency_p50": [_latency(b, 50) for b in buckets],
            "latency_p95": [_latency(b, 95) for b in buckets],
            "flagged": {check: [tally.flagged[check] for tally in tallies] for check in ran},
        })
    return {"bucket_seconds": bucket, "buckets": [iso(start + i * bucket) for i in range(count)],
            "series": series}


def top_users(records: list[RequestLogRecord], limit: int = 10) -> list[dict]:
    """The users with the highest cost (then requests), with their totals."""
    per_user: dict[str, list[RequestLogRecord]] = defaultdict(list)
    for record in records:
        per_user[record.user_id].append(record)
    rows = [{"user": user, **summarize(rows_of)} for user, rows_of in per_user.items()]
    rows.sort(key=lambda row: (-row["cost"], -row["requests"], row["user"]))
    return rows[:limit]


def recent_errors(records: list[RequestLogRecord], limit: int = 20) -> list[dict]:
    """The latest failed requests, newest first."""
    failed = sorted((r for r in records if r.status >= 400), key=lambda r: r.timestamp, reverse=True)
    return [{"timestamp": iso(r.timestamp), "request_id": r.request_id, "user": r.user_id,
             "provider": r.provider, "model": r.model, "status": r.status, "error_code": r.error_code,
             "count": r.count}
            for r in failed[:limit]]


def records_of_every_user(store, start: float, end: float) -> list[RequestLogRecord]:
    """Every record in ``[start, end)`` of every user holding a key, read user by user."""
    users = sorted({key.user_id for key in store.list_keys()})
    return [record for user in users for record in store.records_for_user(user, start, end)]
