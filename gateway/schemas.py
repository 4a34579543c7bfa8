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

#: The largest token count any provider accepts (a 32-bit integer).
INT32 = 2**31 - 1
ROLES = ("system", "developer", "user", "assistant", "tool")


class MessageContent(f.Field):
    """A message's content: a string, a list of typed parts, or null (assistant tool calls)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str)
                                           and (p["type"] != "text" or isinstance(p.get("text"), str))
                                           for p in value):
            return value
        raise ValidationError("Must be a string or a list of content parts with a 'type' "
                              "(a 'text' part with a string 'text').")


_CONTENT_DOC = {"anyOf": [
    {"type": "string"}, {"type": "null"},
    {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}},
                                "if": {"properties": {"type": {"const": "text"}}},
                                "then": {"required": ["text"], "properties": {"text": {"type": "string"}}}}}]}


class StopField(f.Field):
    """``stop``: one string or up to four strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value):
            return value
        raise ValidationError("Must be a string or a list of at most 4 strings.")


class FunctionCallSchema(Schema):
    """The function an assistant's tool call names, with its arguments as a JSON string."""

    name = f.String(required=True, validate=validate.Length(min=1, max=256))
    arguments = f.String(load_default="{}")


class ToolCallSchema(Schema):
    """One tool call in an assistant message (OpenAI's form)."""

    id = f.String(required=True, validate=validate.Length(min=1, max=256))
    type = f.String(load_default="function", validate=validate.Equal("function"))
    function = f.Nested(FunctionCallSchema, required=True)


class FunctionSchema(Schema):
    """A function a tool offers: its name, description and JSON Schema of parameters."""

    name = f.String(required=True, validate=validate.Length(min=1, max=256))
    description = f.String()
    parameters = f.Dict()
    strict = f.Boolean(allow_none=True)


class ToolSchema(Schema):
    """One tool in ``tools``."""

    class Meta:
        unknown = RAISE

    type = f.String(required=True, validate=validate.Equal("function"))
    function = f.Nested(FunctionSchema, required=True)


class ToolChoice(f.Field):
    """``tool_choice``: none, auto, required, or ``{"type": "function", "function": {"name": ...}}``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if (isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict)
                and isinstance(value["function"].get("name"), str) and value["function"]["name"]):
            return value
        raise ValidationError("Must be 'none', 'auto', 'required' or "
                              "{'type': 'function', 'function': {'name': ...}}.")


class MessageSchema(Schema):
    """One chat message."""

    class Meta:
        unknown = RAISE

    role = f.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(required=False, allow_none=True, metadata=_CONTENT_DOC)
    name = f.String()
    tool_calls = f.List(f.Nested(ToolCallSchema))
    tool_call_id = f.String(validate=validate.Length(min=1, max=256))
    refusal = f.String(allow_none=True)

    @validates_schema
    def _content_present(self, data, **kwargs):
        if data.get("content") is None and not data.get("tool_calls"):
            raise ValidationError("A message needs content (or tool_calls).", "content")
        if data.get("role") == "tool" and "tool_call_id" not in data:
            raise ValidationError("A tool message needs the tool_call_id it answers.", "tool_call_id")


#: Parameters passed through to the provider unchanged.
PASSTHROUGH = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n",
    "presence_penalty", "frequency_penalty", "tools", "tool_choice", "response_format", "user",
    "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "stream_options",
)


class ResponseFormatSchema(Schema):
    """``response_format``: text, a JSON object, or a JSON schema."""

    type = f.String(required=True, validate=validate.OneOf(("text", "json_object", "json_schema")))
    json_schema = f.Dict()


class ChatCompletionSchema(Schema):
    """``POST /v1/chat/completions``: OpenAI's chat completion body."""

    class Meta:
        unknown = RAISE

    model = f.String(required=True, validate=validate.Length(min=1, max=256))
    messages = f.List(f.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=2048))
    stream = f.Boolean(load_default=False)
    temperature = f.Float(validate=validate.Range(min=0, max=2))
    top_p = f.Float(validate=validate.Range(min=0, max=1))
    max_tokens = f.Integer(validate=validate.Range(min=1, max=INT32))
    max_completion_tokens = f.Integer(validate=validate.Range(min=1, max=INT32))
    stop = StopField(metadata={"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 4,
                                                                "items": {"type": "string"}}]})
    seed = f.Integer(validate=validate.Range(min=-(2**63), max=2**63 - 1))
    n = f.Integer(validate=validate.Range(min=1, max=16))
    presence_penalty = f.Float(validate=validate.Range(min=-2, max=2))
    frequency_penalty = f.Float(validate=validate.Range(min=-2, max=2))
    tools = f.List(f.Nested(ToolSchema))
    tool_choice = ToolChoice(metadata={"anyOf": [
        {"enum": ["none", "auto", "required"]},
        {"type": "object", "required": ["type", "function"],
         "properties": {"type": {"const": "function"},
                        "function": {"type": "object", "required": ["name"],
                                     "properties": {"name": {"type": "string", "minLength": 1}}}}}]})
    response_format = f.Nested(ResponseFormatSchema)
    user = f.String(validate=validate.Length(max=256))
    logit_bias = f.Dict(keys=f.String(), values=f.Float())
    logprobs = f.Boolean()
    top_logprobs = f.Integer(validate=validate.Range(min=0, max=20))
    parallel_tool_calls = f.Boolean()
    stream_options = f.Dict()
    metadata = f.Dict(keys=f.String(), values=f.Raw(allow_none=True))


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
        return [f"{prefix}: {'unknown field' if text == 'Unknown field.' else text.rstrip('.')}"]
    return [f"{prefix}: {messages}"]


#: Body fields that would name an upstream; the gateway alone decides where requests go.
UPSTREAM_URL_FIELDS = frozenset({"base_url", "api_base", "azure_endpoint", "endpoint_url", "api_url",
                                 "base_path", "upstream_url"})
#: Subtrees that are the caller's own data, not options: a tool may well take a ``base_url`` argument.
_DATA_SUBTREES = frozenset({"content", "parameters", "json_schema", "arguments"})


def upstream_url_field(value: Any, path: str = "") -> str | None:
    """The path of the first upstream URL field anywhere in ``value`` (options, metadata, extras)."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in UPSTREAM_URL_FIELDS:
                return where
            if key not in _DATA_SUBTREES and isinstance(item, dict | list):
                found = upstream_url_field(item, where)
                if found:
                    return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                found = upstream_url_field(item, f"{path}[{index}]")
                if found:
                    return found
    return None


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    return sum(len(part.get("text", "")) for part in content or () if part.get("type") == "text")


def check_size(messages: list[dict], max_messages: int, max_message_chars: int) -> None:
    """400 when there are more than ``max_messages`` messages or one's text is over ``max_message_chars``."""
    if len(messages) > max_messages:
        raise InvalidRequest(f"Too many messages: {len(messages)}; the limit is {max_messages}.",
                             code="too_many_messages")
    for index, message in enumerate(messages):
        if _content_chars(message.get("content")) > max_message_chars:
            raise InvalidRequest(f"messages[{index}].content is longer than the limit of {max_message_chars} "
                                 "characters.", code="content_too_long")


def load_completion(schema: Schema, body: dict[str, Any], limits: Any = None) -> Completion:
    """Validate ``body`` against ``schema``; a 400 naming every bad field, else a :class:`Completion`.

    ``limits`` (the settings) bounds the number of messages and each one's length.
    An upstream URL field anywhere in the body is refused (400) before anything else.
    """
    where = upstream_url_field(body)
    if where:
        raise InvalidRequest(f"'{where}' may not be set: the gateway chooses the upstream, not the request.",
                             code="upstream_url_refused")
    try:
        data = schema.load(body)
    except ValidationError as exc:
        raise InvalidRequest("Invalid request: " + "; ".join(_flatten(exc.messages)) + ".",
                             code="invalid_request") from None
    if limits is not None:
        check_size(data["messages"], limits.max_messages, limits.max_message_chars)
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
