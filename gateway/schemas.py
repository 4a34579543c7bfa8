"""Request schemas (marshmallow), compiled once per process.

Rule for fields: the gateway validates what it must understand itself (see
:class:`ChatCompletionSchema`) and passes every other field on as sent: the
upstream is the authority on its own parameters. Translated providers check the
parameters they translate with :data:`TRANSLATED_REQUEST`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, pre_load, validate, validates_schema
from marshmallow import fields as f

from gateway.errors import ConfigError, InvalidRequest
from gateway.types import ChatRequest, EmbeddingRequest

#: The largest token count any provider accepts (a 32-bit integer).
INT32 = 2**31 - 1
ROLES = ("system", "developer", "user", "assistant", "tool")
#: Roles a message may have on the way in: OpenAI's, its legacy ``function`` role included.
MESSAGE_ROLES = (*ROLES, "function")


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
    """One chat message as a translated provider (Bedrock) reads it; other fields are dropped there."""

    class Meta:
        unknown = EXCLUDE

    role = f.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(required=False, allow_none=True, metadata=_CONTENT_DOC)
    name = f.String()
    tool_calls = f.List(f.Nested(ToolCallSchema))
    tool_call_id = f.String(validate=validate.Length(min=1, max=256))
    refusal = f.String(allow_none=True)

    @pre_load
    def _null_is_absent(self, data, **kwargs):
        return without_nulls(data)

    @validates_schema
    def _content_present(self, data, **kwargs):
        if data.get("content") is None and not data.get("tool_calls"):
            raise ValidationError("A message needs content (or tool_calls).", "content")
        if data.get("role") == "tool" and "tool_call_id" not in data:
            raise ValidationError("A tool message needs the tool_call_id it answers.", "tool_call_id")


class ResponseFormatSchema(Schema):
    """``response_format``: text, a JSON object, or a JSON schema."""

    type = f.String(required=True, validate=validate.OneOf(("text", "json_object", "json_schema")))
    json_schema = f.Dict()


class Messages(f.Field):
    """``messages``: a list of objects, each with a string ``role``; ``content`` a string, null or
    a list of typed parts. Nothing else of a message is the gateway's business: other fields
    (``tool_calls``, ``provider_specific_fields``, an SDK's ``model_dump()`` nulls) pass on.

    Checked in place and returned as is: no copy of a long conversation per request.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list) or not value:
            raise ValidationError("Must be a non-empty list of messages.")
        for index, message in enumerate(value):
            if not isinstance(message, dict):
                raise ValidationError({index: ["Must be an object."]})
            role = message.get("role")
            if role not in MESSAGE_ROLES:
                raise ValidationError({index: {"role": [f"Must be one of: {', '.join(MESSAGE_ROLES)}."]}})
            content = message.get("content")
            if not (content is None or isinstance(content, str) or _is_part_list(content)):
                raise ValidationError({index: {"content": [
                    "Must be a string, null or a list of content parts with a 'type' "
                    "(a 'text' part with a string 'text')."]}})
        return value


def _is_part_list(content: Any) -> bool:
    return isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str)) for part in content)


def without_nulls(data: Any) -> Any:
    """A mapping without its null fields: OpenAI reads an explicit null as absent."""
    if isinstance(data, dict) and None in data.values():
        return {key: value for key, value in data.items() if value is not None}
    return data


#: The request fields the gateway itself reads (with the plugins' request options, see
#: :func:`with_request_options`); every other field is passed on to the provider.
GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "provider"})


class ChatCompletionSchema(Schema):
    """``POST /v1/chat/completions``: OpenAI's chat completion body.

    Only what the gateway must understand is validated: the model, the messages, the
    stream switches, ``n`` and the token fields the limits read. Any other field is
    included as sent and passed to OpenAI-compatible upstreams unchanged (the upstream
    is the authority on it; its 400 comes back as a 400); a translated provider refuses
    what it cannot honour, naming it. An explicit null is the same as absent.
    """

    class Meta:
        unknown = INCLUDE

    #: The plugins' request options among the fields (``Declaration.request_options``).
    option_names: frozenset[str] = frozenset()

    model = f.String(required=True, validate=validate.Length(min=1, max=256))
    messages = Messages(required=True, metadata={"type": "array", "minItems": 1,
                                                 "items": {"$ref": "#/components/schemas/Message"}})
    stream = f.Boolean(load_default=False, truthy={True}, falsy={False})
    stream_options = f.Dict()
    n = f.Integer(validate=validate.Range(min=1, max=128))
    max_tokens = f.Integer(validate=validate.Range(min=1, max=INT32))
    max_completion_tokens = f.Integer(validate=validate.Range(min=1, max=INT32))
    metadata = f.Dict(keys=f.String(), values=f.Raw(allow_none=True))


class TranslatedRequestSchema(Schema):
    """The chat parameters a translated provider (Bedrock) reads, checked before it translates them;
    other fields are kept so that the provider refuses them by name. Also documents them."""

    class Meta:
        unknown = INCLUDE

    messages = f.List(f.Nested(MessageSchema), required=True)
    temperature = f.Float(validate=validate.Range(min=0, max=2))
    top_p = f.Float(validate=validate.Range(min=0, max=1))
    stop = StopField(metadata={"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 4,
                                                                "items": {"type": "string"}}]})
    seed = f.Integer(validate=validate.Range(min=-(2**63), max=2**63 - 1))
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


class NativeCompletionSchema(ChatCompletionSchema):
    """``POST /api/v1/completions``: the OpenAI body plus the gateway's own options."""

    provider = f.String(validate=validate.Length(min=1, max=64))


def with_request_options(base: type[ChatCompletionSchema], options: Mapping[str, f.Field]) -> ChatCompletionSchema:
    """An instance of ``base`` that also validates the plugins' request ``options`` (name -> field);
    built once per app. A name the base schema reads already stops start-up."""
    plain = base()
    if not options:
        return plain
    taken = sorted(set(options) & (set(plain.fields) | GATEWAY_FIELDS))
    if taken:
        raise ConfigError(f"request option(s) {', '.join(taken)} would replace the gateway's own field(s)")
    meta = type("Meta", (base.Meta,), {"register": False})
    schema = type(base.__name__, (base,), {**options, "Meta": meta, "option_names": frozenset(options)})
    return schema()


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            where = f"[{key}]" if isinstance(key, int) else f".{key}" if prefix else str(key)
            out.extend(_flatten(value, prefix + where))
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


def load_completion(schema: Schema, body: dict[str, Any], limits: Any = None) -> ChatRequest:
    """Validate ``body`` against ``schema``; a 400 naming the bad fields, else a :class:`ChatRequest`.

    ``limits`` (the settings) bounds the number of messages and each one's length.
    An upstream URL field anywhere in the body is refused (400) before anything else.
    ``parameters`` holds every field the gateway does not read itself, ``metadata``
    included (less the plugins' request options, ``schema.option_names``), to be passed on.
    """
    refuse_upstream_url(body)
    data = load_checked(schema, body)
    if limits is not None:
        check_size(data["messages"], limits.max_messages, limits.max_message_chars)
    options = schema.option_names
    parameters = {name: value for name, value in data.items() if name not in GATEWAY_FIELDS and name not in options}
    metadata = parameters.pop("metadata", None) or {}
    upstream_metadata = {key: value for key, value in metadata.items() if key not in options}
    if upstream_metadata:
        parameters["metadata"] = upstream_metadata
    return ChatRequest(
        model=data["model"],
        messages=data["messages"],
        parameters=parameters,
        stream=data["stream"],
        provider=data.get("provider"),
        options={name: data[name] for name in options if name in data},
        metadata=dict(metadata),
    )


def load_checked(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """``schema.load(data)`` with null fields taken as absent, or a 400 naming every bad field
    (``param``: the first of them)."""
    try:
        return schema.load(without_nulls(data))
    except ValidationError as exc:
        problems = _flatten(exc.messages)
        raise InvalidRequest("Invalid request: " + "; ".join(problems) + ".", code="invalid_request",
                             param=problems[0].split(": ", 1)[0] if problems else None) from None


class EmbeddingInput(f.Field):
    """``input``: a string, a list of strings, a list of token ids, or a list of such lists."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and (
                all(isinstance(item, str) for item in value)
                or all(isinstance(item, int) and not isinstance(item, bool) for item in value)
                or all(isinstance(item, list) and item and all(isinstance(token, int) for token in item)
                       for item in value)):
            return value
        raise ValidationError("Must be a non-empty string, a list of strings, a list of token ids, "
                              "or a list of lists of token ids.")


class EmbeddingSchema(Schema):
    """``POST /v1/embeddings``: the model and its input are the gateway's; other fields
    (``dimensions``, ``encoding_format``, ``user``…) pass on as sent."""

    class Meta:
        unknown = INCLUDE

    model = f.String(required=True, validate=validate.Length(min=1, max=256))
    input = EmbeddingInput(required=True, metadata={"anyOf": [
        {"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {"type": "string"}},
        {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}}}]})


class ResponsesSchema(Schema):
    """``POST /v1/responses`` (OpenAI's Responses API): the gateway reads the model, the stream
    switch and ``max_output_tokens``; everything else passes on as sent."""

    class Meta:
        unknown = INCLUDE

    model = f.String(required=True, validate=validate.Length(min=1, max=256))
    stream = f.Boolean(load_default=False, truthy={True}, falsy={False})
    max_output_tokens = f.Integer(validate=validate.Range(min=1, max=INT32))


def refuse_upstream_url(body: dict[str, Any]) -> None:
    """400 when a field anywhere in ``body`` would name an upstream."""
    where = upstream_url_field(body)
    if where:
        raise InvalidRequest(f"'{where}' may not be set: the gateway chooses the upstream, not the request.",
                             code="upstream_url_refused", param=where)


def load_embedding(body: dict[str, Any]) -> EmbeddingRequest:
    """An embeddings body, checked: a 400 naming a bad field, else an :class:`EmbeddingRequest`."""
    refuse_upstream_url(body)
    data = load_checked(EMBEDDING, body)
    model, value = data.pop("model"), data.pop("input")
    return EmbeddingRequest(model=model, input=value, parameters=data)


def load_responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses API body, checked (400 naming a bad field) and without its null fields."""
    refuse_upstream_url(body)
    return load_checked(RESPONSES, body)


CHAT_COMPLETION = ChatCompletionSchema()
NATIVE_COMPLETION = NativeCompletionSchema()
TRANSLATED_REQUEST = TranslatedRequestSchema()
EMBEDDING = EmbeddingSchema()
RESPONSES = ResponsesSchema()
