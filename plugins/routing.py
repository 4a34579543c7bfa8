"""Default provider selection, from the model table (``gateway.models``).

- ``provider/model`` (or the native API's ``provider``) names the provider: only it is
  tried, no fallback. ``model`` may be a public name, an alias or the upstream id.
- Otherwise the model (or alias) is looked up in the table: its routes whose
  provider is registered, ordered by the model's strategy (``priority``,
  ``lowest_latency``, ``lowest_cost``, ``weighted``), then the routes of each of
  its ``fallbacks`` in turn.
- A model the table does not know goes to every provider whose ``models()`` lists it.

It runs last (``trylast``), so any plugin returning candidates overrides it.
"""
from __future__ import annotations

import random

from gateway import hookimpl
from gateway.models import ModelSpec, Route


def order_routes(spec: ModelSpec, gateway, rng: random.Random | None = None) -> list[Route]:
    """``spec``'s routes in the order its strategy gives."""
    routes = list(spec.routes)
    if spec.strategy == "lowest_cost":
        return sorted(routes, key=lambda r: r.price.input + r.price.output)
    if spec.strategy == "lowest_latency":
        latency = gateway.resilience.latency
        # A route never measured sorts first, so that it gets measured.
        return sorted(routes, key=lambda r: latency.average((r.provider, r.upstream)) or 0.0)
    if spec.strategy == "weighted":
        draw = (rng or random).random
        # Weighted random order without replacement (Efraimidis–Spirakis keys).
        return sorted(routes, key=lambda r: draw() ** (1.0 / r.weight), reverse=True)
    return routes


def _explicit(table, provider, model: str) -> list:
    spec = table.resolve(model)
    for route in spec.routes if spec else ():
        if route.provider == provider.name:
            return [(provider, route.upstream)]
    if model in table.served_by(provider.name) or model in provider.models():
        return [(provider, model)]
    return []


@hookimpl(trylast=True)
def gateway_select_provider(completion, providers, gateway):
    """Candidates for ``completion.model``: explicit provider, alias, strategy, fallbacks."""
    table = gateway.models
    provider_name, model = completion.provider, completion.model
    if provider_name is None and "/" in model:
        prefix, rest = model.split("/", 1)
        if prefix in providers:
            provider_name, model = prefix, rest
    if provider_name is not None:
        provider = providers.get(provider_name)
        return _explicit(table, provider, model) if provider else []
    spec = table.resolve(model)
    if spec is None:
        return [(provider, model) for provider in providers.values() if model in provider.models()]
    candidates: list = []
    for name in (spec.name, *spec.fallbacks):
        chain_spec = table.resolve(name)
        for route in order_routes(chain_spec, gateway) if chain_spec else ():
            candidate = (providers.get(route.provider), route.upstream)
            if candidate[0] is not None and candidate not in candidates:
                candidates.append(candidate)
    return candidates
