"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the marshmallow schemas (apispec).

Request bodies come from the schemas that validate them (``gateway/schemas.py``, with the
plugins' request options), so the document and the validation cannot drift apart. Answers are
described by the small schemas below, which exist only for the document. Plugins document their
own routes (``gateway_openapi``) with :func:`operation` and :func:`ok`; the answer fields and
headers they declared (``gateway_declare``) are added to the completion routes here.
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
from gateway.types import TIERS

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
    502: "The provider failed, or an answer check refused its answer (type answer_refused; e.g. code "
         "grounding_mismatch).",
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


class CheckFigures(Schema):
    """One answer check's figures (``gateway_check_response``; the catalog's ``grounding``)."""

    checked = f.Integer(required=True, metadata={"description": "Answers the check ran on."})
    flagged = f.Integer(required=True, metadata={"description": "Of those, the answers it flagged, replaced or "
                                                                "blocked (for grounding: mismatches)."})
    rate = f.Float(required=True, metadata={"description": "flagged / checked, rounded to 4 places."})


class Figures(Open):
    """What every usage row counts."""

    requests = f.Integer(required=True)
    errors = f.Integer(required=True)
    tokens = f.Integer(required=True)
    cost = f.Float(required=True, metadata={"description": "USD."})
    saved_cost = f.Float(required=True, metadata={"description": "USD the cache saved."})
    rate_limited = f.Integer(required=True)
    checks = f.Dict(keys=f.String(), values=f.Nested(CheckFigures), required=True, metadata={
        "description": "Each answer check's figures, by the check's name; a check that never ran here is absent."})


class UsageFigures(Figures):
    """Totals of a window, group or user."""

    prompt_tokens = f.Integer(required=True)
    completion_tokens = f.Integer(required=True)
    cache_hits = f.Integer(required=True)


class ProviderModelFigures(Figures):
    """One provider and model of the admin metrics."""

    provider = f.String(required=True)
    model = f.String(required=True)
    errors_by_type = f.Dict(keys=f.String(), values=f.Integer(), required=True)
    latency_ms = f.Dict(required=True, metadata={"description": "p50, p95 and p99."})
    cache_hit_rate = f.Float(required=True)


class UsageReport(Schema):
    """Usage over a window: totals and groups."""

    user = f.String(required=True)
    group_by = f.String(required=True)
    totals = f.Nested(UsageFigures, required=True)
    groups = f.List(f.Nested(UsageFigures), required=True,
                    metadata={"description": "Each group's totals, with its model, provider or day."})
    from_ = f.String(required=True, data_key="from")
    to = f.String(required=True)


class MetricsReport(Schema):
    """What the dashboard draws."""

    totals = f.Nested(UsageFigures, required=True)
    by_provider_model = f.List(f.Nested(ProviderModelFigures), required=True)
    timeseries = f.Raw(required=True, metadata={"description": (
        "bucket_seconds, buckets (their start times) and series: per provider/model, a value per bucket of "
        "requests, tokens, cost, latency_p50, latency_p95, and flagged: per answer check that ran in the "
        "series, the answers it flagged in each bucket.")})
    top_users = f.List(f.Dict(), required=True)
    recent_errors = f.List(f.Dict(), required=True)
    circuits = f.Dict(required=True, metadata={"description": "Each circuit breaker by provider/model."})
    answer_checks = f.List(f.String(), required=True, metadata={
        "description": "The answer checks the plugins declare (their figures are under each row's checks)."})
    from_ = f.String(required=True, data_key="from")
    to = f.String(required=True)


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


#: What the schemas check across fields (``@validates_schema``), in JSON Schema's words.
CROSS_FIELD_RULES = {
    "Message": {"anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"], "properties": {"tool_calls": {"minItems": 1}}}],
        "if": {"properties": {"role": {"const": "tool"}}}, "then": {"required": ["tool_call_id"]}},
}


def json_content(schema: str) -> dict:
    """A JSON ``content`` of the component schema named ``schema``."""
    return {"application/json": {"schema": schema}}


def _errors(statuses: tuple[int, ...]) -> dict:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def operation(summary: str, answers: dict, errors: tuple[int, ...], *, public: bool = False,
              body: str | None = None, query: str | None = None, path: tuple[str, ...] = ()) -> dict:
    """One operation: its ``answers`` (see :func:`ok`), its ``errors`` (statuses, all answered with the
    error envelope), security (a key unless ``public``), the component schema of its JSON ``body``
    and of its ``query``, and its ``path`` parameters (names)."""
    described: dict[str, Any] = {"summary": summary, "responses": {**answers, **_errors(errors)}}
    described["security"] = [] if public else [{"ApiKey": []}, {"Bearer": []}]
    if body:
        described["requestBody"] = {"required": True, "content": json_content(body)}
    parameters: list[dict] = [{"in": "path", "name": name, "required": True,
                               "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}
                              for name in path]
    if query:
        parameters.append({"in": "query", "schema": query})
    if parameters:
        described["parameters"] = parameters
    return described


def ok(schema: str | None, description: str = "OK", status: int = 200, content: dict | None = None,
       headers: dict | None = None) -> dict:
    """A successful answer: ``status`` with the component ``schema`` (or ``content``) and the
    correlation id header (plus ``headers``)."""
    answer: dict[str, Any] = {"description": description, "headers": {
        "X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}, **(headers or {})}}
    if content is not None or schema is not None:
        answer["content"] = content if content is not None else json_content(schema)
    return {str(status): answer}


def _completion_answer(schema: str, headers: dict) -> dict:
    return ok(None, "The completion; with stream: true, Server-Sent Events ending with [DONE]. When answer "
                    "checks ran, the event before [DONE] is a chunk without choices whose `gateway` member holds "
                    "their verdict ({\"checks\": {name: outcome}, ...their answer fields}); a check's refusal "
                    "then ends the stream with an error event instead of [DONE].",
              content={**json_content(schema), "text/event-stream": {"schema": {"type": "string"}}}, headers=headers)


def paths(answer_headers: dict) -> dict[str, dict[str, dict]]:
    """The core's routes and their operations; ``answer_headers``: the headers plugins may add to a
    completion's answer (documented on both completion routes)."""
    admin = "/api/v1/admin"
    return {
        "/v1/chat/completions": {"post": operation(
            "Create a chat completion (OpenAI-compatible).", _completion_answer("ChatCompletionAnswer", answer_headers),
            COMPLETION_ERRORS, body="ChatCompletionRequest")},
        "/v1/models": {"get": operation("The models this key may use.", ok("ModelList"), READ_ERRORS)},
        "/v1/models/{model_id}": {"get": operation(
            "One model this key may use, by name or alias.", ok("ModelEntry"), (401, 403, 404, 429, 503),
            path=("model_id",))},
        "/v1/embeddings": {"post": operation(
            "Create embeddings (OpenAI-compatible; Bedrock Titan and Cohere models too).", ok("EmbeddingList"),
            COMPLETION_ERRORS, body="EmbeddingRequest")},
        "/v1/responses": {"post": operation(
            "Create a model response (OpenAI's Responses API, passed to OpenAI-compatible providers).",
            ok(None, "The response; with stream: true, its typed Server-Sent Events.",
               content={**json_content("ResponseObject"), "text/event-stream": {"schema": {"type": "string"}}}),
            COMPLETION_ERRORS, body="ResponsesRequest")},
        "/api/v1/completions": {"post": operation(
            "Create a completion in the gateway's own form.",
            _completion_answer("NativeCompletionAnswer", answer_headers), COMPLETION_ERRORS,
            body="NativeCompletionRequest")},
        "/health": {"get": operation("Liveness.", ok("Health"), (), public=True)},
        "/api/v1/health/live": {"get": operation("Liveness.", ok("Health"), (), public=True)},
        "/api/v1/health/ready": {"get": operation(
            "Readiness: store, providers, circuit breakers.",
            {**ok("Health"), "503": {"description": "Not ready.", "content": json_content("Health")}}, (),
            public=True)},
        "/api/v1/usage": {"get": operation("Your own usage.", ok("UsageReport"), (400, 401, 403, 404, 429, 503),
                                           query="OwnUsageQuery")},
        f"{admin}/usage": {"get": operation("Any user's usage (admin).", ok("UsageReport"), READ_ERRORS,
                                            query="AdminUsageQuery")},
        f"{admin}/metrics": {"get": operation("Gateway metrics (admin).", ok("MetricsReport"), READ_ERRORS,
                                              query="WindowQuery")},
        "/dashboard": {"get": operation("The usage dashboard page.",
                                        ok(None, content={"text/html": {"schema": {"type": "string"}}}), (),
                                        public=True)},
    }


def build_document(app) -> dict:
    """The OpenAPI 3.1 document of ``app``'s public routes: the core's, then each plugin's
    (``gateway_openapi``)."""
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    from gateway.schemas import EmbeddingSchema, MessageSchema, ResponsesSchema, TranslatedRequestSchema

    gateway = app.extensions["gateway"]
    declared = gateway.declared

    class ChatCompletionDocument(type(gateway.chat_schema), TranslatedRequestSchema):
        """What the gateway reads, and the chat parameters it knows (others pass on as sent)."""

    class NativeCompletionDocument(type(gateway.native_schema), TranslatedRequestSchema):
        """The native body: the chat request plus the gateway's own options."""

    spec = APISpec(title="AI Model Gateway", version="1", openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin(schema_name_resolver=lambda schema: None)],
                   info={"description": "One OpenAI-compatible API in front of many model providers."})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    spec.components.header("CorrelationId", {"description": "Yours if you sent one, else a new id.",
                                              "schema": {"type": "string"}, "required": True})
    schemas = {
        "Message": MessageSchema, "ErrorEnvelope": ErrorEnvelope, "ChatCompletionRequest": ChatCompletionDocument,
        "NativeCompletionRequest": NativeCompletionDocument,
        "ChatCompletionAnswer": ChatCompletionAnswer, "ModelEntry": ModelEntry, "EmbeddingList": EmbeddingList,
        "ResponseObject": ResponseObject, "EmbeddingRequest": EmbeddingSchema, "ResponsesRequest": ResponsesSchema,
        "NativeCompletionAnswer": NativeCompletionAnswer.from_dict(dict(declared.answer_fields),
                                                                   name="NativeCompletionAnswer"),
        "ModelList": ModelList, "Health": Health, "UsageReport": UsageReport, "MetricsReport": MetricsReport,
    }
    for name, schema in schemas.items():
        spec.components.schema(name, CROSS_FIELD_RULES.get(name), schema=schema)
    for status, description in ERRORS.items():
        headers = {"X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}}
        if status == 429:
            headers["Retry-After"] = {"description": "Seconds to wait.", "required": True,
                                      "schema": {"type": "string", "pattern": "^[0-9]+$"}}
        spec.components.response(f"Error{status}", {"description": description, "headers": headers,
                                                     "content": json_content("ErrorEnvelope")})
    answer_headers = {name: {"description": description, "schema": {"type": "string"}}
                      for name, description in declared.response_headers.items()}
    for path, operations in paths(answer_headers).items():
        spec.path(path=path, operations=operations)
    gateway.hook.gateway_openapi(spec=spec, gateway=gateway)
    document = spec.to_dict()
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
