"""The catalog plugin: product context injected into prompts, the MCP server, the catalog admin API.

Context injection is on when the request asks for it (the body field ``"mcp":
{"enabled": true, "max_products": N}`` of either API; for OpenAI clients also the header
``X-Gateway-MCP: on`` or ``"metadata": {"mcp": "on"}``), else when the caller's
key says so (its ``mcp_context``, in ``caller.attributes``), else when the ``mcp_context_default`` setting
does. What was injected is reported in the native answer's ``mcp_context`` and in the
``X-Gateway-MCP-Status`` and ``X-Gateway-MCP-Products`` headers.

Answers are checked against the catalog (the ``grounding`` check, ``plugins.catalog_grounding``)
when grounding is on for the request (:func:`grounding_mode`): by default when catalog context was
injected.

All of it is declared through the hooks (``gateway_declare``): the ``mcp`` permission of
``POST /mcp``, the ``mcp`` request option, the answer field and headers, and the ``mcp:<tool>``
models its request-log records carry; its routes document themselves (``gateway_openapi``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from marshmallow import RAISE, Schema, validate
from marshmallow import fields as f

from gateway import hookimpl, metrics
from gateway.errors import InvalidRequest
from gateway.http import LazyView
from gateway.setting_fields import setting
from gateway.types import Declaration

logger = logging.getLogger(__name__)

HEADER = "X-Gateway-MCP"
STATUS_HEADER, PRODUCTS_HEADER = "X-Gateway-MCP-Status", "X-Gateway-MCP-Products"
#: The MCP server's tools (``plugins.mcp_tools.TOOLS``, not imported at start-up): their records'
#: models are ``mcp:<tool>``.
TOOL_NAMES = ("search_products", "get_product", "list_categories")
#: Counted when context injection could not read the catalog and the completion went on without it.
CATALOG_UNAVAILABLE = "CatalogUnavailable"
#: Counts answers the grounding check found contradicting the catalog (1 a flagged answer, 0 a passed one).
GROUNDING_MISMATCH = "GroundingMismatch"
GROUNDING_HEADER = "X-Gateway-Grounding"
#: What the grounding check does with an answer: nothing, say what it found, or refuse a mismatch.
GROUNDING_MODES = ("off", "annotate", "block")
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
                                       "seconds a worker reuses catalog reads for search and grounding (admin "
                                       "writes clear its own cache at once)")
    catalog_grounding: str = setting("auto", f.String(validate=validate.OneOf(("auto", *GROUNDING_MODES))),
                                     "check answers against the catalog: `auto` (annotate when catalog context "
                                     "was injected, else off), `off`, `annotate` (the `grounding` answer field "
                                     "and `X-Gateway-Grounding` header), `block` (a mismatch is a 502 "
                                     "`grounding_mismatch`); a key's `grounding` beats this")


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


class McpOptionsSchema(Schema):
    """The ``mcp`` request option: catalog context injection for this request."""

    class Meta:
        unknown = RAISE

    enabled = f.Boolean(required=True)
    max_products = f.Integer(validate=validate.Range(min=1, max=20))


class ClaimSchema(Schema):
    """One claim of an answer about a catalog product, compared with the catalog."""

    product_id = f.String()
    name = f.String()
    field = f.String(metadata={"description": "price, availability, rating or brand"})
    claimed = f.Raw(metadata={"description": "what the answer says (a price in USD; a bound as e.g. \"<100\")"})
    catalog = f.Raw(metadata={"description": "what the catalog holds"})


class GroundingSchema(Schema):
    """The grounding check's verdict (the native answer's ``grounding``)."""

    status = f.String(metadata={"description": "verified, mismatch, unverified (nothing checkable), or "
                                               "catalog_unavailable"})
    checked = f.List(f.String(), metadata={"description": "ids of the catalog products the answer mentions"})
    verified = f.List(f.Nested(ClaimSchema), metadata={"description": "claims that match the catalog"})
    mismatches = f.List(f.Nested(ClaimSchema), metadata={"description": "claims that contradict it"})
    unknown_products = f.List(f.String(), metadata={"description": "product-like names matching no product"})


DECLARATION = Declaration(
    permissions=("mcp",),
    request_options={"mcp": f.Nested(McpOptionsSchema)},
    answer_fields={"mcp_context": f.Dict(allow_none=True, metadata={
        "description": "The catalog context injected: status, product_ids, estimated_tokens; null when off."}),
        "grounding": f.Nested(GroundingSchema, allow_none=True, metadata={
            "description": "The catalog grounding check's verdict; null when grounding is off for the request."})},
    response_headers={STATUS_HEADER: "Catalog context: injected, no_match or catalog_unavailable.",
                      PRODUCTS_HEADER: "The ids of the products injected, comma-separated.",
                      GROUNDING_HEADER: "The catalog grounding check's verdict: verified, mismatch or unverified, "
                                        "with parameters products, mismatches and unknown "
                                        "(`mismatch;products=2;mismatches=1;unknown=0`)."},
    recorded_models={"mcp": tuple(f"mcp:{name}" for name in TOOL_NAMES)},
    answer_checks={"grounding": GROUNDING_MISMATCH},
)


@hookimpl
def gateway_declare():
    """The ``mcp`` permission, request option, answer field and headers, and the tools' models."""
    return DECLARATION


def requested_products(completion, gateway, caller, request) -> int:
    """How many products to inject into ``completion``; 0 when injection is off for it
    (the request's switches first, then the caller's key, then the global setting)."""
    options = completion.options.get("mcp") or {}
    enabled = options.get("enabled")
    if enabled is None:
        enabled = _switch(completion.metadata.get("mcp"), "metadata.mcp")
    if enabled is None:
        enabled = _switch(request.headers.get(HEADER), f"The {HEADER} header")
    if enabled is None:
        enabled = caller.attributes.get("mcp_context")
    if enabled is None:
        enabled = gateway.plugin_settings[CatalogSettings].mcp_context_default
    return options.get("max_products", gateway.plugin_settings[CatalogSettings].mcp_max_products) if enabled else 0


def _insert_after_instructions(messages: list[dict], message: dict) -> None:
    """Put ``message`` after the leading system/developer messages, before the conversation."""
    index = 0
    while index < len(messages) and messages[index]["role"] in ("system", "developer"):
        index += 1
    messages.insert(index, message)


def _report(completion, context: dict) -> None:
    """Tell the caller what was injected: the native answer's ``mcp_context`` and two headers."""
    completion.answer_fields["mcp_context"] = context
    completion.response_headers[STATUS_HEADER] = context["status"]
    completion.response_headers[PRODUCTS_HEADER] = ",".join(context["product_ids"])


@hookimpl
def gateway_enrich_request(completion, caller, request, gateway):
    """Inject the catalog products that best match the last user message, when injection is on.

    An unreachable catalog never fails the request: it proceeds without context, and
    the failure is logged and counted (the ``CatalogUnavailable`` metric).
    """
    wanted = requested_products(completion, gateway, caller, request)
    if not wanted:
        return
    # Loaded on first use: a cold start whose first completion injects nothing never pays for them.
    from plugins.catalog_context import context_message, estimate_tokens
    from plugins.catalog_search import catalog_search

    text = completion.last_user_text()
    try:
        search = catalog_search(gateway)
        products = search.search(search.understand(text), limit=wanted) if text.strip() else []
    except Exception as exc:  # any store failure: answer without context
        metrics.count(gateway, CATALOG_UNAVAILABLE)
        logger.warning("catalog unavailable; completion proceeds without product context",
                       extra={"event": "mcp_catalog_unavailable", "error": type(exc).__name__})
        _report(completion, {"status": "catalog_unavailable", "product_ids": []})
        return
    message, ids = context_message(products, gateway.plugin_settings[CatalogSettings].mcp_context_token_budget)
    if message is None:
        _report(completion, {"status": "no_match", "product_ids": []})
        return
    _insert_after_instructions(completion.messages, message)
    _report(completion, {"status": "injected", "product_ids": ids,
                         "estimated_tokens": estimate_tokens(message["content"])})


def grounding_mode(completion, caller, gateway) -> str:
    """What the grounding check does with this answer: the caller's key's ``grounding`` if set, else
    the ``catalog_grounding`` setting, whose ``auto`` is ``annotate`` when catalog context was injected
    into the request and ``off`` otherwise."""
    mode = caller.attributes.get("grounding") or gateway.plugin_settings[CatalogSettings].catalog_grounding
    if mode == "auto":
        injected = (completion.answer_fields.get("mcp_context") or {}).get("status") == "injected"
        return "annotate" if injected else "off"
    return mode


@hookimpl
def gateway_check_response(completion, answer, caller, gateway):
    """Check the answer against the catalog when grounding is on for it (see :func:`grounding_mode`)."""
    mode = grounding_mode(completion, caller, gateway)
    if mode == "off":
        return
    from plugins.catalog_grounding import check_grounding  # loaded on first use, as the search is

    check_grounding(gateway, answer, mode, CATALOG_UNAVAILABLE)


@hookimpl
def gateway_register_blueprints(app):
    """Serve ``POST /mcp`` (``plugins.mcp_server``) and the catalog admin endpoints
    (``plugins.catalog_admin``), each module loaded by its route's first request."""
    products = "/api/v1/admin/catalog/products/<product_id>"
    app.add_url_rule("/mcp", "mcp", LazyView("plugins.mcp_server.mcp_endpoint"), methods=["POST"])
    app.add_url_rule(products, "catalog_upsert", LazyView("plugins.catalog_admin.upsert_product"), methods=["PUT"])
    app.add_url_rule(products, "catalog_delete", LazyView("plugins.catalog_admin.delete_product"), methods=["DELETE"])


@hookimpl
def gateway_openapi(spec):
    """Document ``POST /mcp`` and the catalog admin routes."""
    from plugins.mcp_openapi import document

    document(spec)
