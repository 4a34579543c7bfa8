"""Usage and metrics: a caller's own usage, and (with ``admin``) anyone's and the gateway's.

- ``GET /api/v1/usage?from=&to=&group_by=model|provider|day[&api_key_id=]``: the caller's own
  requests, tokens, cost and answer checks' figures. Naming another user (``user=``) or another
  user's key is a 404, exactly as for something that does not exist.
- ``GET /api/v1/admin/usage?user=&from=&to=&group_by=``: any user's usage.
- ``GET /api/v1/admin/metrics?from=&to=``: per provider and model (requests, errors by type,
  p50/p95/p99 latency, tokens, cost, cache hit rate, rate-limited, each answer check's flagged
  rate), time series, top users, recent errors and the declared answer checks: what the dashboard
  draws.

``from`` and ``to`` are ISO 8601 dates or times (UTC unless an offset is given) or epoch
seconds; ``to`` is exclusive, and a date alone for ``to`` includes that whole day.
"""
from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from flask import Blueprint, jsonify, request

from gateway import pipeline, usage
from gateway.app import current_gateway
from gateway.errors import InvalidRequest, NotFound
from gateway.request_log import writer_for

blueprint = Blueprint("usage", __name__, url_prefix="/api/v1")

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=400)


def _instant(name: str, value: str, *, end: bool) -> float:
    """Epoch seconds of a ``from``/``to`` parameter; a 400 naming it when unreadable."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 date or time (e.g. 2026-01-31 or "
                             f"2026-01-31T12:00:00Z) or epoch seconds, not {value!r}.",
                             code="invalid_parameter") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and len(value) == 10:  # a date alone: up to the end of that day
        parsed += timedelta(days=1)
    return parsed.timestamp()


def _window() -> tuple[float, float]:
    now = time.time()
    to = _instant("to", request.args["to"], end=True) if request.args.get("to") else now
    start = (_instant("from", request.args["from"], end=False) if request.args.get("from")
             else to - DEFAULT_WINDOW.total_seconds())
    if start >= to:
        raise InvalidRequest("'from' must be before 'to'.", code="invalid_parameter")
    if to - start > MAX_WINDOW.total_seconds():
        raise InvalidRequest(f"The window is limited to {MAX_WINDOW.days} days.", code="invalid_parameter")
    return start, to


def _group_by() -> str:
    group_by = request.args.get("group_by", "model")
    if group_by not in usage.GROUPS:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(usage.GROUPS)}, not {group_by!r}.",
                             code="invalid_parameter")
    return group_by


def _usage_of(gateway, user_id: str, key_id: str | None = None) -> dict:
    start, end = _window()
    group_by = _group_by()
    writer_for(gateway).flush()  # read this process' own writes
    records = gateway.store.records_for_user(user_id, start, end)
    if key_id is not None:
        records = [r for r in records if r.api_key_id == key_id]
    return {"user": user_id, "from": usage.iso(start), "to": usage.iso(end), "group_by": group_by,
            "totals": usage.summarize(records), "groups": usage.grouped(records, group_by)}


@blueprint.get("/usage")
def own_usage():
    """The caller's own usage; another user, or another user's key, is a 404."""
    gateway = current_gateway()
    caller = pipeline.admit(gateway, request, "completions")
    user = request.args.get("user", caller.user_id)
    key_id = request.args.get("api_key_id")
    if user != caller.user_id:
        raise NotFound("No usage found for that user.")
    if key_id is not None:
        key = gateway.store.get_key(key_id)
        if key is None or key.user_id != caller.user_id:
            raise NotFound("No usage found for that key.")
    return jsonify(_usage_of(gateway, caller.user_id, key_id))


@blueprint.get("/admin/usage")
def user_usage():
    """Any user's usage (``user=`` is required)."""
    gateway = current_gateway()
    pipeline.authenticate(gateway, request, "admin")
    user = request.args.get("user", "").strip()
    if not user:
        raise InvalidRequest("'user' is required: the user id whose usage to show.", code="invalid_parameter")
    return jsonify(_usage_of(gateway, user))


@blueprint.get("/admin/metrics")
def gateway_metrics():
    """Per provider and model metrics, time series, top users and recent errors over the window."""
    gateway = current_gateway()
    pipeline.authenticate(gateway, request, "admin")
    start, end = _window()
    writer_for(gateway).flush()
    records = usage.records_of_every_user(gateway.store, start, end)
    return jsonify({
        "from": usage.iso(start), "to": usage.iso(end),
        "totals": {**usage.summarize(records), "latency_ms": usage.latency_percentiles(records)},
        "by_provider_model": usage.by_provider_and_model(records),
        "timeseries": usage.time_series(records, start, end, usage.bucket_size(start, end)),
        "top_users": usage.top_users(records),
        "recent_errors": usage.recent_errors(records),
        "circuits": gateway.resilience.circuits(),
        "answer_checks": sorted(gateway.declared.answer_checks),
    })
