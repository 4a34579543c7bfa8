"""The CloudWatch metrics the gateway emits: the one list the emitter, the alarms and dashboards share.

Emitted as Embedded Metric Format log lines in namespace ``AiModelGateway``. Every
metric is published under each of ``DIMENSION_SETS``; the alarms in
``cloudformation/observability.yaml`` read the ``("Stage",)`` set, the dashboards
the finer ones. Changing a name here means changing the templates with it (a test
compares them).
"""
from __future__ import annotations

NAMESPACE = "AiModelGateway"

#: Metric name -> CloudWatch unit.
METRICS: dict[str, str] = {
    "Requests": "Count",            # completions answered, any status
    "Errors": "Count",              # completions that ended in an error status (4xx from providers, 5xx)
    "Latency": "Milliseconds",      # whole request, as the gateway saw it
    "ProviderLatency": "Milliseconds",  # time spent waiting for providers
    "Tokens": "Count",              # prompt + completion tokens
    "Cost": "None",                 # US dollars
    "CacheHits": "Count",           # answers served from the response cache
    "RateLimited": "Count",         # requests refused with 429
    "AuthFailures": "Count",        # requests refused with 401 or 403
}

DIMENSIONS = ("Stage", "Provider", "Model", "Tier")

#: The dimension combinations every metric is published under (EMF ``Dimensions``).
DIMENSION_SETS: tuple[tuple[str, ...], ...] = (
    ("Stage",),
    ("Stage", "Provider"),
    ("Stage", "Provider", "Model"),
    ("Stage", "Tier"),
)
