"""The CloudWatch metric names and dimensions the gateway emits (namespace ``AiModelGateway``).

The alarms and dashboards in ``cloudformation/`` use exactly these names.
"""
from __future__ import annotations

NAMESPACE = "AiModelGateway"

REQUESTS = "Requests"
ERRORS = "Errors"
LATENCY = "Latency"
PROVIDER_LATENCY = "ProviderLatency"
TOKENS = "Tokens"
COST = "Cost"
CACHE_HITS = "CacheHits"
RATE_LIMITED = "RateLimited"
AUTH_FAILURES = "AuthFailures"

ALL = (REQUESTS, ERRORS, LATENCY, PROVIDER_LATENCY, TOKENS, COST, CACHE_HITS, RATE_LIMITED, AUTH_FAILURES)

STAGE = "Stage"
PROVIDER = "Provider"
MODEL = "Model"
TIER = "Tier"

DIMENSIONS = (STAGE, PROVIDER, MODEL, TIER)
