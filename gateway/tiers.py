"""The tiers a key may have and what each allows by default: the one list of tiers.

The ``tiers`` setting overrides any field of any tier (``gateway/config.py``); the key
admin API, ``gateway keys create --tier``, the limits and the OpenAPI document all take
their tier names from here. Plain data, so importing it costs nothing.
"""

#: Each tier's default limits (DESIGN.md "Data"), cheapest first.
DEFAULT_TIERS = {
    "free": {"requests_per_minute": 10, "requests_per_hour": 100, "tokens_per_minute": 10_000,
             "monthly_budget_usd": 5.0, "concurrent_requests": 4},
    "basic": {"requests_per_minute": 100, "requests_per_hour": 3_000, "tokens_per_minute": 100_000,
              "monthly_budget_usd": 50.0, "concurrent_requests": 16},
    "premium": {"requests_per_minute": 1000, "requests_per_hour": 30_000, "tokens_per_minute": 1_000_000,
                "monthly_budget_usd": 500.0, "concurrent_requests": 64},
    "enterprise": {"requests_per_minute": 5000, "requests_per_hour": 200_000, "tokens_per_minute": 5_000_000,
                   "monthly_budget_usd": 5_000.0, "concurrent_requests": 512},
}

#: The tier names, cheapest first.
TIERS = tuple(DEFAULT_TIERS)
