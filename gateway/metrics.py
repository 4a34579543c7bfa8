"""CloudWatch metrics as Embedded Metric Format lines on stdout (namespace ``AiModelGateway``).

CloudWatch Logs turns each line into metrics, so nothing calls PutMetricData on the
request path. The lines are built by aws-lambda-powertools' ``EphemeralMetrics``
(one isolated metric set per line, safe across threads; its shared ``Metrics``
class is not), imported on first use so that importing the gateway stays cheap.

Every completion's record becomes one line with the dimensions Stage, Provider,
Model and Tier, stamped with the request's time and written by the request log writer
(so off the critical path where the host allows); an authentication failure (no caller, so no record) is counted by
:func:`count_auth_failure` where the pipeline raises it.
"""
from __future__ import annotations

import json
import sys
import threading

from gateway import metric_names as names
from gateway.types import UsageRecord

#: Counted when the request log store refuses a record and it is kept in a log line instead.
REQUEST_LOG_FALLBACKS = "RequestLogFallbacks"
#: Counted when context injection could not read the catalog and the completion went on without it.
CATALOG_UNAVAILABLE = "CatalogUnavailable"
UNKNOWN = "unknown"
_write_lock = threading.Lock()


def _emit(gateway, dimensions: dict[str, str], values: list[tuple[str, str, float]],
          timestamp: float | None = None) -> None:
    """Write one EMF line with ``(name, unit, value)`` metrics under ``dimensions``, and also under
    Stage alone (the roll-up the stage-wide alarms read)."""
    if not gateway.settings.metrics_emf:
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    metric_set = EphemeralMetrics(namespace=names.NAMESPACE)
    if timestamp is not None:
        metric_set.set_timestamp(int(timestamp * 1000))
    for name, value in dimensions.items():
        metric_set.add_dimension(name=name, value=value or UNKNOWN)
    if len(dimensions) > 1:
        metric_set.add_dimensions(**{names.STAGE: dimensions[names.STAGE]})
    for name, unit, value in values:
        metric_set.add_metric(name=name, unit=unit, value=value)
    line = json.dumps(metric_set.serialize_metric_set(), separators=(",", ":"))
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def emit_request(gateway, record: UsageRecord) -> None:
    """The metrics of one completion: requests, errors, latencies, tokens, cost, cache hits, rate limits."""
    failed = record.status >= 400
    values = [
        (names.REQUESTS, "Count", 1),
        (names.ERRORS, "Count", 1 if failed else 0),
        (names.LATENCY, "Milliseconds", round(record.latency_ms, 3)),
        (names.TOKENS, "Count", record.tokens),
        (names.COST, "None", record.cost),
        (names.CACHE_HITS, "Count", 1 if record.cached else 0),
        (names.RATE_LIMITED, "Count", 1 if record.status == 429 else 0),
    ]
    if record.upstream_latency_ms:
        values.append((names.PROVIDER_LATENCY, "Milliseconds", round(record.upstream_latency_ms, 3)))
    _emit(gateway, {names.STAGE: gateway.settings.stage, names.PROVIDER: record.provider,
                    names.MODEL: record.model, names.TIER: record.tier}, values, record.timestamp)


def count_auth_failure(gateway) -> None:
    """Count one rejected credential (missing, invalid, revoked, expired) by Stage."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(names.AUTH_FAILURES, "Count", 1)])


def count_request_log_fallback(gateway) -> None:
    """Count one record the store refused (it was kept in a log line instead)."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(REQUEST_LOG_FALLBACKS, "Count", 1)])


def count_catalog_unavailable(gateway) -> None:
    """Count one completion that went on without catalog context because the catalog failed."""
    _emit(gateway, {names.STAGE: gateway.settings.stage}, [(CATALOG_UNAVAILABLE, "Count", 1)])
