"""Default provider selection: ``provider/model`` names a provider; otherwise every provider
serving the model, in registration order (the first is tried first, the rest are fallbacks).

It runs last (``trylast``), so any plugin returning candidates overrides it.
"""
from __future__ import annotations

from gateway import hookimpl


@hookimpl(trylast=True)
def gateway_select_provider(completion, providers):
    """Candidates for ``completion.model``, honouring an explicit provider."""
    provider_name, model = completion.provider, completion.model
    if provider_name is None and "/" in model:
        prefix, rest = model.split("/", 1)
        if prefix in providers:
            provider_name, model = prefix, rest
    if provider_name is not None:
        provider = providers.get(provider_name)
        return [(provider, model)] if provider and model in provider.models() else []
    return [(provider, model) for provider in providers.values() if model in provider.models()]
