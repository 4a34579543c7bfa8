"""CloudWatch metrics as Embedded Metric Format lines on stdout (namespace ``AiModelGateway``).

CloudWatch Logs turns each line into metrics, so nothing calls PutMetricData on the
request path. The lines are written here, as the EMF specification describes them (a
``_aws`` block naming the namespace, dimension sets and metrics, then the values), not
through aws-lambda-powertools: see :func:`_line` for why.

Completions are counted from their records, by the request log writer (so off the
critical path where the host allows), one batch at a time: the records of a batch that
share the dimensions Stage, Provider, Model and Tier and the same minute go out as one
line in which each metric holds one value per record (EMF takes a list of values), stamped
with the earliest record's time. A record of folded refusals (:mod:`gateway.refusals`)
holds its ``count`` as its Requests, Errors and RateLimited values, so sums stay exact.
Each answer check a plugin declared (``Declaration.answer_checks``: check name -> metric) that
ran on a record adds one value to its metric: 1 when it flagged the answer (an outcome of
``FLAGGED_OUTCOMES``), 0 when it passed, so the metric's Average is the check's flagged rate
(``GroundingMismatch``: the catalog's mismatch rate) and its Sum the flagged answers.
An authentication failure (no caller, so no record) is counted by
:func:`count_auth_failure` where the pipeline raises it.

Dimension values come only from the gateway's own configuration, never from the caller:
CloudWatch bills every distinct dimension set as a metric, so a caller sending a new model
name on each request would otherwise mint a new metric each time. ``Model`` is kept only
when it is a model the gateway knows (a public name, alias or upstream id of the model
table, a model a registered provider lists, or one a plugin declared it records), ``Provider``
only when it is a registered provider or one a plugin declared; anything else is emitted as
``unknown`` (see :func:`known_dimensions`).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway import metric_names as names
from gateway.types import FLAGGED_OUTCOMES, RequestLogRecord

#: Counted when the request log store refuses a record and it is kept in a log line instead.
REQUEST_LOG_FALLBACKS = "RequestLogFallbacks"
UNKNOWN = "unknown"
#: The most values of one metric in one line (EMF's limit).
VALUES_PER_LINE = 100
_write_lock = threading.Lock()
#: Where :func:`known_dimensions` keeps its sets, in ``gateway.state``.
_STATE_KEY = "metrics.known_dimensions"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownDimensions:
    """The Provider and Model values the gateway's configuration defines (all others are ``unknown``)."""

    providers: frozenset[str]
    models: frozenset[str]

    def provider(self, value: str | None) -> str:
        """``value`` if it names a registered provider, else ``unknown``."""
        return value if value in self.providers else UNKNOWN

    def model(self, value: str | None) -> str:
        """``value`` if it names a model the gateway knows, else ``unknown``."""
        return value if value in self.models else UNKNOWN


def known_dimensions(gateway) -> KnownDimensions:
    """The app's :class:`KnownDimensions`, built on first use from the model table, the registered
    providers and the models plugins declared they record (``Declaration.recorded_models``; all fixed
    once the app is built) and kept in ``gateway.state``."""
    known = gateway.state.get(_STATE_KEY)
    if known is None:
        recorded = gateway.declared.recorded_models
        providers = set(gateway.providers) | set(recorded)
        models: set[str] = set().union(*recorded.values())
        for spec in gateway.models:
            models.add(spec.name)
            models.update(spec.aliases)
            models.update(route.upstream for route in spec.routes)
        for name, provider in gateway.providers.items():
            try:
                models.update(provider.models())
            except Exception:  # a provider's listing failing must not stop the metrics
                logger.warning("provider %s could not list its models for the metrics", name, exc_info=True)
        known = gateway.state[_STATE_KEY] = KnownDimensions(frozenset(providers), frozenset(models))
    return known


def _line(dimensions: dict[str, str], values: list[tuple[str, str, float]], timestamp: float) -> str:
    """One EMF line: ``(name, unit, value)`` metrics (a name given again adds a value to its list)
    under ``dimensions``, and also under Stage alone (the roll-up the stage-wide alarms read).

    Written directly rather than through powertools' public API: its ``add_metric`` formats the
    metric's whole value list into a debug message on every call and prints the set by itself at
    100 values, and a metric set must be built per thread (``Metrics`` is not thread-safe) and
    cleared after each line. Measured per record (bench: one completion's 8 metrics; shared 2-core
    host): powertools' public ``add_metric`` path 92 us for a one-record line and 110 us a record
    in a line of 99 (quadratic); the hand-built powertools metric dict this replaced 43 and 3.7 us;
    this function 22 and 5 us, under 1.5 % of a request's ~1.5 ms of CPU. Names and units are this
    module's constants, so powertools' validation of them had nothing to catch.
    """
    series: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    for name, unit, value in values:
        found = series.get(name)
        if found is None:
            series[name], units[name] = [float(value)], unit
        else:
            found.append(float(value))
    keys = list(dimensions)
    directive = {"Namespace": names.NAMESPACE,
                 "Dimensions": [keys, [names.STAGE]] if len(keys) > 1 else [keys],
                 "Metrics": [{"Name": name, "Unit": unit} for name, unit in units.items()]}
    document = {"_aws": {"Timestamp": int(timestamp * 1000), "CloudWatchMetrics": [directive]},
                **{name: value or UNKNOWN for name, value in dimensions.items()}, **series}
    return json.dumps(document, separators=(",", ":"))


def _emit(gateway, dimensions: dict[str, str], values: list[tuple[str, str, float]],
          timestamp: float | None = None) -> None:
    """Write one EMF line (:func:`_line`) to stdout, stamped ``timestamp`` (now when None)."""
    if not gateway.settings.metrics_emf:
        return
    line = _line(dimensions, values, time.time() if timestamp is None else timestamp)
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _request_values(record: RequestLogRecord, check_metrics: Mapping[str, str]) -> list[tuple[str, str, float]]:
    """One record's metrics: requests, errors, latencies, tokens, cost, cache hits, rate limits, and
    the metric of each declared answer check (``check_metrics``: check name -> metric) that ran on it.
    A record of folded refusals counts its ``count`` requests (its latency is their mean)."""
    count = record.count
    values = [
        (names.REQUESTS, "Count", count),
        (names.ERRORS, "Count", count if record.status >= 400 else 0),
        (names.LATENCY, "Milliseconds", round(record.latency_ms, 3)),
        (names.TOKENS, "Count", record.tokens),
        (names.COST, "None", record.cost),
        (names.CACHE_HITS, "Count", count if record.cached else 0),
        (names.RATE_LIMITED, "Count", count if record.status == 429 else 0),
    ]
    if record.upstream_latency_ms:
        values.append((names.PROVIDER_LATENCY, "Milliseconds", round(record.upstream_latency_ms, 3)))
    for check, outcome in record.checks.items():
        metric = check_metrics.get(check)
        if metric is not None:
            values.append((metric, "Count", 1 if outcome in FLAGGED_OUTCOMES else 0))
    return values


def emit_requests(gateway, records: Iterable[RequestLogRecord]) -> None:
    """The metrics of completions: one line per Provider, Model, Tier and minute (at most
    ``VALUES_PER_LINE`` records), each record's values kept, the line stamped with its earliest time.

    Grouping by minute keeps every value in the minute its request happened, as a line per
    record did (CloudWatch aggregates standard-resolution metrics by the line's minute).
    """
    if not gateway.settings.metrics_emf:
        return
    known = known_dimensions(gateway)
    groups: dict[tuple[str, str, str, int], list[RequestLogRecord]] = {}
    for record in records:
        key = (known.provider(record.provider), known.model(record.model), record.tier or UNKNOWN,
               int(record.timestamp // 60))
        groups.setdefault(key, []).append(record)
    stage = gateway.settings.stage
    check_metrics = gateway.declared.answer_checks
    for (provider, model, tier, _minute), group in groups.items():
        dimensions = {names.STAGE: stage, names.PROVIDER: provider, names.MODEL: model, names.TIER: tier}
        for start in range(0, len(group), VALUES_PER_LINE):
            line = group[start:start + VALUES_PER_LINE]
            _emit(gateway, dimensions,
                  [value for record in line for value in _request_values(record, check_metrics)],
                  min(record.timestamp for record in line))


def count_auth_failure(gateway) -> None:
    """Count one rejected credential (missing, invalid, revoked, expired) by Stage."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(names.AUTH_FAILURES, "Count", 1)])


def count_request_log_fallback(gateway) -> None:
    """Count one record the store refused (it was kept in a log line instead)."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(REQUEST_LOG_FALLBACKS, "Count", 1)])


def count(gateway, name: str) -> None:
    """Count one event of a plugin's own, by Stage (``name``: a constant of the plugin, never a
    caller's value: each name is a CloudWatch metric)."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(name, "Count", 1)])
