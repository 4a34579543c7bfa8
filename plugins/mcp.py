"""The catalog plugin: product context injected into prompts, the MCP server, the catalog admin API.

Context injection is on when the request asks for it (native API: ``"mcp":
{"enabled": true, "max_products": N}``; OpenAI-compatible API: the header
``X-Gateway-MCP: on`` or ``"metadata": {"mcp": "on"}``), else when the caller's
key says so (its ``mcp_context``), else when the ``mcp_context_default`` setting
does. What was injected is put in
``completion.metadata["mcp_context"]``, which the views report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import has_request_context, request
from marshmallow import fields as f
from marshmallow import validate

from gateway import hookimpl, metrics
from gateway.errors import InvalidRequest
from gateway.http import LazyView
from gateway.setting_fields import setting
from plugins.echo_provider import message_text

logger = logging.getLogger(__name__)

HEADER = "X-Gateway-MCP"
_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}


@dataclass(frozen=True, eq=False)
class CatalogSettings:
    """The catalog plugin's settings."""

    mcp_context_default: bool = setting(False, f.Boolean(), "inject catalog context into completions that do "
                                        "not say (the request's switch beats the key's, which beats this)")
    mcp_max_products: int = setting(5, f.Integer(validate=validate.Range(min=1, max=20)),
                                    "products injected at most")
    mcp_context_token_budget: int = setting(1000, f.Integer(validate=validate.Range(min=100, max=100_000)),
                                            "estimated tokens (about 4 characters each) the injected catalog "
                                            "block may take")
    catalog_cache_ttl: float = setting(60.0, f.Float(validate=validate.Range(min=0)),
                                       "seconds a worker reuses catalog reads for search (admin writes clear "
                                       "its own cache at once)")


@hookimpl
def gateway_declare_settings():
    """The catalog plugin's settings."""
    return CatalogSettings


def _switch(value, where: str) -> bool | None:
    """``on``/``off`` (or a boolean) as True/False; None when absent; a 400 for anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH:
        return _SWITCH[value.strip().lower()]
    raise InvalidRequest(f"{where} must be 'on' or 'off', not {value!r}.", code="invalid_mcp_option")


def requested_products(completion, gateway, caller) -> int:
    """How many products to inject into ``completion``; 0 when injection is off for it
    (the request's switches first, then the caller's key, then the global setting)."""
    options = completion.options.get("mcp") or {}
    enabled = options.get("enabled")
    if enabled is None:
        enabled = _switch(completion.metadata.get("mcp"), "metadata.mcp")
    if enabled is None and has_request_context():
        enabled = _switch(request.headers.get(HEADER), f"The {HEADER} header")
    if enabled is None:
        enabled = caller.mcp_context
    if enabled is None:
        enabled = gateway.plugin_settings[CatalogSettings].mcp_context_default
    return options.get("max_products", gateway.plugin_settings[CatalogSettings].mcp_max_products) if enabled else 0


def _insert_after_instructions(messages: list[dict], message: dict) -> None:
    """Put ``message`` after the leading system/developer messages, before the conversation."""
    index = 0
    while index < len(messages) and messages[index]["role"] in ("system", "developer"):
        index += 1
    messages.insert(index, message)


@hookimpl
def gateway_enrich_request(completion, caller, gateway):
    """Inject the catalog products that best match the last user message, when injection is on.

    An unreachable catalog never fails the request: it proceeds without context, and
    the failure is logged and counted (the ``CatalogUnavailable`` metric).
    """
    wanted = requested_products(completion, gateway, caller)
    if not wanted:
        return
    # Loaded on first use: a cold start whose first completion injects nothing never pays for them.
    from plugins.catalog_context import context_message, estimate_tokens
    from plugins.catalog_search import catalog_search

    last_user = next((m for m in reversed(completion.messages) if m["role"] == "user"), None)
    text = message_text(last_user) if last_user else ""
    try:
        search = catalog_search(gateway)
        products = search.search(search.understand(text), limit=wanted) if text.strip() else []
    except Exception as exc:  # any store failure: answer without context
        metrics.count_catalog_unavailable(gateway)
        logger.warning("catalog unavailable; completion proceeds without product context",
                       extra={"event": "mcp_catalog_unavailable", "error": type(exc).__name__})
        completion.metadata["mcp_context"] = {"status": "catalog_unavailable", "product_ids": []}
        return
    message, ids = context_message(products, gateway.plugin_settings[CatalogSettings].mcp_context_token_budget)
    if message is None:
        completion.metadata["mcp_context"] = {"status": "no_match", "product_ids": []}
        return
    _insert_after_instructions(completion.messages, message)
    completion.metadata["mcp_context"] = {"status": "injected", "product_ids": ids,
                                          "estimated_tokens": estimate_tokens(message["content"])}


@hookimpl
def gateway_register_blueprints(app):
    """Serve ``POST /mcp`` (``plugins.mcp_server``) and the catalog admin endpoints
    (``plugins.catalog_admin``), each module loaded by its route's first request."""
    products = "/api/v1/admin/catalog/products/<product_id>"
    app.add_url_rule("/mcp", "mcp", LazyView("plugins.mcp_server.mcp_endpoint"), methods=["POST"])
    app.add_url_rule(products, "catalog_upsert", LazyView("plugins.catalog_admin.upsert_product"), methods=["PUT"])
    app.add_url_rule(products, "catalog_delete", LazyView("plugins.catalog_admin.delete_product"), methods=["DELETE"])
