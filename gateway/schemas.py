"""Request schemas (marshmallow), compiled once per process.

Rule for fields: every OpenAI chat parameter the gateway knows is validated and
passed to the provider; any other field is rejected with a 400 naming it, so a
typo is never silently dropped.
"""
from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as f

from gateway.errors import InvalidRequest
from gateway.types import Completion

ROLES = ("system", "developer", "user", "assistant", "tool")


class MessageContent(f.Field):
    """A message's content: a string, a list of typed parts, or null (assistant tool calls)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str)
                                           for p in value):
            return value
        raise ValidationError("Must be a string or a list of content parts with a 'type'.")


class StopField(f.Field):
    """``stop``: one string or up to four strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value):
            return value
        raise ValidationError("Must be a string or a list of at most 4 strings.")


class MessageSchema(Schema):
    """One chat message."""

    class Meta:
        unknown = RAISE

    role = f.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(required=False, allow_none=True)
    name = f.String()
    tool_calls = f.List(f.Dict())
    tool_call_id = f.String()
    refusal = f.String(allow_none=True)

    @validates_schema
    def _content_present(self, data, **kwargs):
        if data.get("content") is None and not data.get("tool_calls"):
            raise ValidationError("A message needs content (or tool_calls).", "content")


#: Parameters passed through to the provider unchanged.
PASSTHROUGH = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n",
    "presence_penalty", "frequency_penalty", "tools", "tool_choice", "response_format", "user",
    "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "stream_options",
)


class ChatCompletionSchema(Schema):
    """``POST /v1/chat/completions``: OpenAI's chat completion body."""

    class Meta:
        unknown = RAISE

    model = f.String(required=True, validate=validate.Length(min=1, max=256))
    messages = f.List(f.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=2048))
    stream = f.Boolean(load_default=False)
    temperature = f.Float(validate=validate.Range(min=0, max=2))
    top_p = f.Float(validate=validate.Range(min=0, max=1))
    max_tokens = f.Integer(validate=validate.Range(min=1))
    max_completion_tokens = f.Integer(validate=validate.Range(min=1))
    stop = StopField()
    seed = f.Integer()
    n = f.Integer(validate=validate.Range(min=1, max=16))
    presence_penalty = f.Float(validate=validate.Range(min=-2, max=2))
    frequency_penalty = f.Float(validate=validate.Range(min=-2, max=2))
    tools = f.List(f.Dict())
    tool_choice = f.Raw()
    response_format = f.Dict()
    user = f.String(validate=validate.Length(max=256))
    logit_bias = f.Dict(keys=f.String(), values=f.Float())
    logprobs = f.Boolean()
    top_logprobs = f.Integer(validate=validate.Range(min=0, max=20))
    parallel_tool_calls = f.Boolean()
    stream_options = f.Dict()
    metadata = f.Dict(keys=f.String(), values=f.Raw())


class McpOptionsSchema(Schema):
    """The native API's ``mcp`` option: catalog context injection for this request."""

    class Meta:
        unknown = RAISE

    enabled = f.Boolean(required=True)
    max_products = f.Integer(validate=validate.Range(min=1, max=20))


class NativeCompletionSchema(ChatCompletionSchema):
    """``POST /api/v1/completions``: the OpenAI body plus the gateway's own options."""

    provider = f.String(validate=validate.Length(min=1, max=64))
    mcp = f.Nested(McpOptionsSchema)


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        text = " ".join(messages)
        return [f"{prefix}: {'unknown field' if text == 'Unknown field.' else text}"]
    return [f"{prefix}: {messages}"]


def load_completion(schema: Schema, body: dict[str, Any]) -> Completion:
    """Validate ``body`` against ``schema``; a 400 naming every bad field, else a :class:`Completion`."""
    try:
        data = schema.load(body)
    except ValidationError as exc:
        raise InvalidRequest("Invalid request: " + "; ".join(_flatten(exc.messages)) + ".",
                             code="invalid_request") from None
    return Completion(
        model=data["model"],
        messages=data["messages"],
        parameters={name: data[name] for name in PASSTHROUGH if name in data},
        stream=data["stream"],
        provider=data.get("provider"),
        options={"mcp": data["mcp"]} if "mcp" in data else {},
        metadata=dict(data.get("metadata", {})),
    )


CHAT_COMPLETION = ChatCompletionSchema()
NATIVE_COMPLETION = NativeCompletionSchema()
