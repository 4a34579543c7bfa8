"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the marshmallow schemas (apispec).

Request bodies come from the schemas that validate them (``gateway/schemas.py``, the key
admin and catalog schemas), so the document and the validation cannot drift apart.
Answers are described by the small schemas below, which exist only for the document.
This module (and apispec) loads on the first request for the document (``gateway.app``
routes it through ``http.LazyView``), which is then kept per app: a cold start pays
nothing for it.
"""
from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from marshmallow import INCLUDE, Schema
from marshmallow import fields as f

from gateway.schemas import UPSTREAM_URL_FIELDS
from gateway.types import PERMISSIONS, TIERS

_DOCUMENT = "openapi.document"

#: Each error status, what it means; every one answers the JSON error envelope.
ERRORS = {
    400: "The body or a parameter is wrong; the message names the field.",
    401: "No key, or a malformed, unknown, revoked or expired key.",
    403: "The key lacks the permission this route needs.",
    404: "No such thing, or it is not the caller's.",
    405: "The method is not allowed here.",
    413: "The body is larger than max_body_bytes.",
    415: "The body is not JSON.",
    429: "A rate limit, token limit or budget was reached; wait for Retry-After seconds.",
    502: "The provider failed.",
    503: "A dependency is not available (circuit open, provider not configured, limit store down).",
    504: "The provider did not answer in time.",
}
COMPLETION_ERRORS = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)
READ_ERRORS = (400, 401, 403, 429, 503)
WRITE_ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)


class ErrorBody(Schema):
    """The inside of the error envelope."""

    message = f.String(required=True)
    type = f.String(required=True)
    param = f.String(required=True, allow_none=True,
                     metadata={"description": "The request field at fault, or null."})
    code = f.String(required=True)


class ErrorEnvelope(Schema):
    """Every error: ``{"error": {"message", "type", "param", "code"}}``."""

    error = f.Nested(ErrorBody, required=True)


class UsageCounts(Schema):
    """Token counts of one answer."""

    prompt_tokens = f.Integer(required=True)
    completion_tokens = f.Integer(required=True)
    total_tokens = f.Integer(required=True)


class Open(Schema):
    """An answer object that may carry more fields than documented: an upstream's own answer
    reaches the caller as it sent it (``logprobs``, ``system_fingerprint``, usage details…)."""

    class Meta:
        unknown = INCLUDE


class ChatMessage(Open):
    """The assistant's message in an answer."""

    role = f.String(required=True)
    content = f.String(required=True, allow_none=True)
    tool_calls = f.List(f.Dict())


class ChatChoice(Open):
    """One choice of a chat completion."""

    index = f.Integer(required=True)
    message = f.Nested(ChatMessage, required=True)
    finish_reason = f.String(required=True, allow_none=True)
    logprobs = f.Raw(allow_none=True)


class OpenAIObject(Open):
    """What every OpenAI object starts with."""

    id = f.String(required=True)
    object = f.String(required=True)
    created = f.Integer(required=True)


class ChatCompletionAnswer(OpenAIObject):
    """OpenAI's ``chat.completion``."""

    model = f.String(required=True)
    choices = f.List(f.Nested(ChatChoice), required=True)
    usage = f.Nested(UsageCounts, required=True)


class NativeCompletionAnswer(Schema):
    """The gateway's own answer: the completion plus provider, cost and latency."""

    id = f.String(required=True)
    request_id = f.String(required=True)
    model = f.String(required=True)
    provider = f.String(required=True)
    content = f.String(required=True, allow_none=True)
    tool_calls = f.List(f.Dict(), allow_none=True)
    finish_reason = f.String(required=True, allow_none=True)
    usage = f.Nested(UsageCounts, required=True)
    cost = f.Float(required=True)
    latency_ms = f.Float(required=True)
    mcp_context = f.Dict(allow_none=True)


class ModelEntry(OpenAIObject):
    """One model in ``GET /v1/models``."""

    owned_by = f.String(required=True)
    aliases = f.List(f.String())


class ModelList(Schema):
    """OpenAI's model list."""

    object = f.String(required=True)
    data = f.List(f.Nested(ModelEntry), required=True)


class EmbeddingUsage(Open):
    """Tokens of an embeddings request."""

    prompt_tokens = f.Integer(required=True)
    total_tokens = f.Integer(required=True)


class Embedding(Open):
    """One input's vector: floats, or base64 little-endian float32 with ``encoding_format: base64``."""

    object = f.String(required=True)
    index = f.Integer(required=True)
    embedding = f.Raw(required=True, metadata={"anyOf": [{"type": "array", "items": {"type": "number"}},
                                                           {"type": "string"}]})


class EmbeddingList(Open):
    """OpenAI's embeddings answer."""

    object = f.String(required=True)
    data = f.List(f.Nested(Embedding), required=True)
    model = f.String(required=True)
    usage = f.Nested(EmbeddingUsage, required=True)


class ResponseObject(Open):
    """A Responses API answer, as the upstream sent it."""

    id = f.String(required=True)
    object = f.String(required=True)
    model = f.String(required=True)
    output = f.List(f.Dict(), required=True)
    usage = f.Dict()


class Health(Schema):
    """Liveness, or readiness with its checks."""

    status = f.String(required=True)
    checks = f.Dict()


class UsageReport(Schema):
    """Usage over a window: totals and groups."""

    user = f.String(required=True)
    group_by = f.String(required=True)
    totals = f.Dict(required=True)
    groups = f.List(f.Dict(), required=True)
    from_ = f.String(required=True, data_key="from")
    to = f.String(required=True)


class MetricsReport(Schema):
    """What the dashboard draws."""

    totals = f.Dict(required=True)
    by_provider_model = f.List(f.Dict(), required=True)
    timeseries = f.Raw(required=True)
    top_users = f.List(f.Dict(), required=True)
    recent_errors = f.List(f.Dict(), required=True)
    circuits = f.Dict(required=True, metadata={"description": "Each circuit breaker by provider/model."})
    from_ = f.String(required=True, data_key="from")
    to = f.String(required=True)


#: Field types of the stored key, as annotated on ``ApiKey``, and their marshmallow fields.
_KEY_FIELD_TYPES = {"str": f.String, "float": f.Float, "int": f.Integer, "bool": f.Boolean,
                    "list[str]": lambda **options: f.List(f.String(), **options)}


def _key_view_fields() -> dict[str, f.Field]:
    """Every field of a stored key but its hash, typed from ``ApiKey`` itself: the document follows
    the store's record without a second list to keep in step."""
    from dataclasses import fields as dataclass_fields

    from gateway.store.base import ApiKey

    view = {}
    for field in dataclass_fields(ApiKey):
        if field.name == "key_hash":
            continue
        base, _, rest = str(field.type).partition(" | ")
        view[field.name] = _KEY_FIELD_TYPES[base](required=True, allow_none=rest == "None")
    view["tier"] = f.String(required=True, metadata={"enum": list(TIERS)})
    view["permissions"] = f.List(f.String(metadata={"enum": list(PERMISSIONS)}), required=True)
    return view


KeyView = Schema.from_dict(_key_view_fields(), name="KeyView")


class NewKey(KeyView):
    """A created or rotated key: the plaintext, shown this once (a rotation names the key it replaces)."""

    key = f.String(required=True)
    replaces = f.Nested(KeyView)


class KeyListing(Schema):
    """Keys, oldest first."""

    data = f.List(f.Nested(KeyView), required=True)


class ProductAnswer(Schema):
    """A stored product, and whether it was new."""

    product = f.Dict(required=True)
    created = f.Boolean(required=True)


#: ``from``/``to``: an ISO 8601 date or date-time, epoch seconds, or empty (the default).
INSTANT = {"anyOf": [{"type": "string", "maxLength": 0},
                     {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"},
                     {"type": "string", "pattern": "^[0-9]{1,10}(\\.[0-9]{1,6})?$"}]}


class WindowQuery(Schema):
    """The window: ``from`` and ``to`` (exclusive; a date alone includes that day), at most 400 days,
    ``from`` before ``to``. Default: the last 7 days."""

    from_ = f.String(data_key="from", metadata={"description": "Start.", **INSTANT})
    to = f.String(metadata={"description": "End (exclusive).", **INSTANT})


class UsageQuery(WindowQuery):
    """The window and ``group_by``."""

    group_by = f.String(metadata={"enum": ["model", "provider", "day"]})


class OwnUsageQuery(UsageQuery):
    """The caller's own usage, optionally of one of its keys."""

    api_key_id = f.String(metadata={"description": "One of your own keys; another user's is a 404."})
    user = f.String(metadata={"description": "Your own user id; any other is a 404."})


class AdminUsageQuery(UsageQuery):
    """Any user's usage."""

    user = f.String(required=True)


class KeyListQuery(Schema):
    """Keys of one user."""

    user_id = f.String()


class JsonRpcMessage(Schema):
    """One JSON-RPC 2.0 message (MCP, Streamable HTTP)."""

    jsonrpc = f.String(required=True, metadata={"enum": ["2.0"]})
    id = f.Raw(metadata={"type": ["string", "number"]})
    method = f.String(required=True)
    params = f.Dict()


class JsonRpcAnswer(Schema):
    """A JSON-RPC answer: a result, or an error (a gateway refusal carries the envelope in ``data``)."""

    jsonrpc = f.String(required=True)
    id = f.Raw(allow_none=True)
    result = f.Raw()
    error = f.Dict()


#: What the schemas check across fields (``@validates_schema``), in JSON Schema's words.
CROSS_FIELD_RULES = {
    "Message": {"anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"], "properties": {"tool_calls": {"minItems": 1}}}],
        "if": {"properties": {"role": {"const": "tool"}}}, "then": {"required": ["tool_call_id"]}},
    "KeyChange": {"minProperties": 1},
}


def _json(schema: str) -> dict:
    return {"application/json": {"schema": schema}}


def _errors(statuses: tuple[int, ...]) -> dict:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _operation(summary: str, answers: dict, errors: tuple[int, ...], *, public: bool = False,
               body: str | None = None, query: str | None = None, path: tuple[str, ...] = ()) -> dict:
    """One operation: its answers, its errors (all as the envelope), security, body and parameters."""
    operation: dict[str, Any] = {"summary": summary, "responses": {**answers, **_errors(errors)}}
    operation["security"] = [] if public else [{"ApiKey": []}, {"Bearer": []}]
    if body:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    parameters: list[dict] = [{"in": "path", "name": name, "required": True,
                               "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}
                              for name in path]
    if query:
        parameters.append({"in": "query", "schema": query})
    if parameters:
        operation["parameters"] = parameters
    return operation


def _ok(schema: str | None, description: str = "OK", status: int = 200, content: dict | None = None) -> dict:
    answer: dict[str, Any] = {"description": description,
                              "headers": {"X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}}}
    if content is not None or schema is not None:
        answer["content"] = content if content is not None else _json(schema)
    return {str(status): answer}


def _completion_answer(schema: str) -> dict:
    return _ok(None, "The completion; with stream: true, Server-Sent Events ending with [DONE].",
               content={**_json(schema), "text/event-stream": {"schema": {"type": "string"}}})


def paths() -> dict[str, dict[str, dict]]:
    """Every public route and its operations."""
    admin = "/api/v1/admin"
    return {
        "/v1/chat/completions": {"post": _operation(
            "Create a chat completion (OpenAI-compatible).", _completion_answer("ChatCompletionAnswer"),
            COMPLETION_ERRORS, body="ChatCompletionRequest")},
        "/v1/models": {"get": _operation("The models this key may use.", _ok("ModelList"), READ_ERRORS)},
        "/v1/models/{model_id}": {"get": _operation(
            "One model this key may use, by name or alias.", _ok("ModelEntry"), (401, 403, 404, 429, 503),
            path=("model_id",))},
        "/v1/embeddings": {"post": _operation(
            "Create embeddings (OpenAI-compatible; Bedrock Titan and Cohere models too).", _ok("EmbeddingList"),
            COMPLETION_ERRORS, body="EmbeddingRequest")},
        "/v1/responses": {"post": _operation(
            "Create a model response (OpenAI's Responses API, passed to OpenAI-compatible providers).",
            _ok(None, "The response; with stream: true, its typed Server-Sent Events.",
                content={**_json("ResponseObject"), "text/event-stream": {"schema": {"type": "string"}}}),
            COMPLETION_ERRORS, body="ResponsesRequest")},
        "/api/v1/completions": {"post": _operation(
            "Create a completion in the gateway's own form.", _completion_answer("NativeCompletionAnswer"),
            COMPLETION_ERRORS, body="NativeCompletionRequest")},
        "/health": {"get": _operation("Liveness.", _ok("Health"), (), public=True)},
        "/api/v1/health/live": {"get": _operation("Liveness.", _ok("Health"), (), public=True)},
        "/api/v1/health/ready": {"get": _operation(
            "Readiness: store, providers, circuit breakers.",
            {**_ok("Health"), "503": {"description": "Not ready.", "content": _json("Health")}}, (), public=True)},
        "/api/v1/usage": {"get": _operation("Your own usage.", _ok("UsageReport"), (400, 401, 403, 404, 429, 503),
                                            query="OwnUsageQuery")},
        f"{admin}/usage": {"get": _operation("Any user's usage (admin).", _ok("UsageReport"), READ_ERRORS,
                                             query="AdminUsageQuery")},
        f"{admin}/metrics": {"get": _operation("Gateway metrics (admin).", _ok("MetricsReport"), READ_ERRORS,
                                               query="WindowQuery")},
        f"{admin}/keys": {
            "get": _operation("List keys (admin).", _ok("KeyListing"), READ_ERRORS, query="KeyListQuery"),
            "post": _operation("Create a key; its plaintext is shown once (admin).",
                               _ok("NewKey", "Created.", 201), WRITE_ERRORS, body="KeyCreate")},
        f"{admin}/keys/{{key_id}}": {
            "get": _operation("One key (admin).", _ok("KeyView"), (401, 403, 404, 429, 503), path=("key_id",)),
            "patch": _operation("Change a key (admin).", _ok("KeyView"), WRITE_ERRORS, body="KeyChange",
                                path=("key_id",)),
            "delete": _operation("Revoke a key (admin).", _ok("KeyView"), (401, 403, 404, 429, 503),
                                 path=("key_id",))},
        f"{admin}/keys/{{key_id}}/rotate": {"post": _operation(
            "Issue a new key for the same owner; the old one expires after the grace period (admin).",
            _ok("NewKey", "Created.", 201), (401, 403, 404, 429, 503), path=("key_id",))},
        f"{admin}/catalog/products/{{product_id}}": {
            "put": _operation("Create or replace a product (admin); the id comes from the URL (a "
                              "productId in the body must equal it).",
                              {**_ok("ProductAnswer", "Replaced."), **_ok("ProductAnswer", "Created.", 201)},
                              WRITE_ERRORS, body="Product", path=("product_id",)),
            "delete": _operation("Delete a product (admin).", _ok(None, "Deleted.", 204),
                                 (401, 403, 404, 429, 503), path=("product_id",))},
        "/mcp": {"post": _operation(
            "The Model Context Protocol server (Streamable HTTP, JSON answers).",
            {**_ok("JsonRpcAnswer", "A JSON-RPC answer (a result, or a JSON-RPC error)."),
             "202": {"description": "A notification, acknowledged."},
             **{str(status): {"description": "A JSON-RPC error or a gateway refusal, as JSON-RPC.",
                              "content": _json("JsonRpcAnswer")} for status in (400, 401, 403, 404, 415, 429)}},
            (413,), body="JsonRpcMessage")},
        "/dashboard": {"get": _operation("The usage dashboard page.",
                                         _ok(None, content={"text/html": {"schema": {"type": "string"}}}), (),
                                         public=True)},
    }


def _served(app) -> set[str]:
    """The paths ``app`` routes, in OpenAPI's ``{name}`` form (a disabled plugin's routes are left out)."""
    return {rule.rule.replace("<", "{").replace(">", "}") for rule in app.url_map.iter_rules()}


def build_document(app) -> dict:
    """The OpenAPI 3.1 document of ``app``'s public routes."""
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    from gateway.catalog import ProductSchema
    from gateway.schemas import (
        ChatCompletionSchema,
        EmbeddingSchema,
        MessageSchema,
        NativeCompletionSchema,
        ResponsesSchema,
        TranslatedRequestSchema,
    )

    class ChatCompletionDocument(ChatCompletionSchema, TranslatedRequestSchema):
        """What the gateway reads, and the chat parameters it knows (others pass on as sent)."""

    class NativeCompletionDocument(NativeCompletionSchema, TranslatedRequestSchema):
        """The native body: the chat request plus the gateway's own options."""

    from plugins.apikey_admin import KeyChangeSchema, KeyCreateSchema

    spec = APISpec(title="AI Model Gateway", version="1", openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin(schema_name_resolver=lambda schema: None)],
                   info={"description": "One OpenAI-compatible API in front of many model providers."})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    spec.components.header("CorrelationId", {"description": "Yours if you sent one, else a new id.",
                                              "schema": {"type": "string"}, "required": True})
    schemas = {
        "Message": MessageSchema, "ErrorEnvelope": ErrorEnvelope, "ChatCompletionRequest": ChatCompletionDocument,
        "NativeCompletionRequest": NativeCompletionDocument, "KeyCreate": KeyCreateSchema(exclude=("active",)),
        "KeyChange": KeyChangeSchema, "Product": ProductSchema(exclude=("product_id",)),
        "ChatCompletionAnswer": ChatCompletionAnswer, "ModelEntry": ModelEntry, "EmbeddingList": EmbeddingList,
        "ResponseObject": ResponseObject, "EmbeddingRequest": EmbeddingSchema, "ResponsesRequest": ResponsesSchema,
        "NativeCompletionAnswer": NativeCompletionAnswer, "ModelList": ModelList, "Health": Health,
        "UsageReport": UsageReport, "MetricsReport": MetricsReport, "KeyView": KeyView, "NewKey": NewKey,
        "KeyListing": KeyListing, "ProductAnswer": ProductAnswer, "JsonRpcMessage": JsonRpcMessage,
        "JsonRpcAnswer": JsonRpcAnswer,
    }
    for name, schema in schemas.items():
        spec.components.schema(name, schema=schema)
    for status, description in ERRORS.items():
        headers = {"X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}}
        if status == 429:
            headers["Retry-After"] = {"description": "Seconds to wait.", "required": True,
                                      "schema": {"type": "string", "pattern": "^[0-9]+$"}}
        spec.components.response(f"Error{status}", {"description": description, "headers": headers,
                                                     "content": _json("ErrorEnvelope")})
    served = _served(app)
    for path, operations in paths().items():
        if path in served:
                spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for name, rules in CROSS_FIELD_RULES.items():
        document["components"]["schemas"][name].update(rules)
    _apply_limits(document["components"]["schemas"], app)
    return document


def _apply_limits(schemas: dict, app) -> None:
    """State this app's limits in the request schemas: body size, upstream URL fields, messages,
    text length, output tokens (the largest tier's; a key of a smaller tier gets a 400 above its own)."""
    settings = app.extensions["gateway"].settings
    largest = max(settings.tier(tier).tokens_per_minute for tier in TIERS)
    bodies = (f"Bodies are limited to {app.config['MAX_CONTENT_LENGTH']} bytes (gzip or deflate accepted, the "
              "limit applies decoded); fields the gateway does not read are passed to the provider as sent, but "
              f"none may be named like an upstream URL ({', '.join(sorted(UPSTREAM_URL_FIELDS))}) at any depth: "
              "400 upstream_url_refused; output tokens are limited to the key's tier's tokens per minute.")
    token_fields = {"ChatCompletionRequest": ("max_tokens", "max_completion_tokens"),
                    "NativeCompletionRequest": ("max_tokens", "max_completion_tokens"),
                    "ResponsesRequest": ("max_output_tokens",), "EmbeddingRequest": ()}
    for name, fields in token_fields.items():
        request = schemas[name]
        request["description"] = bodies
        for field in fields:
            request["properties"][field]["maximum"] = largest
    for name in ("ChatCompletionRequest", "NativeCompletionRequest"):
        schemas[name]["properties"]["messages"]["maxItems"] = settings.max_messages
    content = schemas["Message"]["properties"]["content"]["anyOf"]
    content[0]["maxLength"] = settings.max_message_chars
    content[2]["items"]["then"]["properties"]["text"]["maxLength"] = settings.max_message_chars


def openapi_document():
    """The OpenAPI document, built on the first request and kept for the app's life."""
    extensions = current_app.extensions
    if _DOCUMENT not in extensions:
        extensions[_DOCUMENT] = build_document(current_app)
    return jsonify(extensions[_DOCUMENT])
