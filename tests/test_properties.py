"""Property tests (hypothesis): whatever JSON arrives, the request validator and the Bedrock
translation answer with a valid upstream request or a 400, never another exception.

"Valid upstream request" is judged by botocore's own parameter validator against the
``bedrock-runtime`` Converse model shipped with boto3, the check boto3 runs before sending.
"""
from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.errors import GatewayError, InvalidRequest
from gateway.schemas import CHAT_COMPLETION, GATEWAY_FIELDS, NATIVE_COMPLETION, ROLES, load_completion
from plugins.bedrock_provider import to_converse_request

LIMITS = Settings()
PROPERTY_SETTINGS = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)

names = st.text(min_size=1, max_size=8)
content = st.text(min_size=1, max_size=30) | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), min_size=1, max_size=3) \
    | st.just("") | st.none()
tool_calls = st.lists(st.fixed_dictionaries({
    "id": names, "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": names},
                                      optional={"arguments": st.text(max_size=20) | st.just('{"a": 1}')})}),
    max_size=2)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": content},
    optional={"tool_calls": tool_calls, "tool_call_id": names}), min_size=1, max_size=4)
tools = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": names}, optional={"description": st.text(max_size=8), "parameters": st.just({"type": "object"})})}),
    max_size=2)
tool_choice = st.sampled_from(["none", "auto", "required"]) | st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": names})})
parameters = st.fixed_dictionaries({}, optional={
    "max_tokens": st.integers(min_value=1, max_value=100_000),
    "max_completion_tokens": st.integers(min_value=1, max_value=100_000),
    "temperature": st.floats(min_value=0, max_value=2), "top_p": st.floats(min_value=0, max_value=1),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=4),
    "tools": tools, "tool_choice": tool_choice,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    "n": st.integers(min_value=1, max_value=2), "user": names, "seed": st.integers(min_value=0, max_value=2**32),
    "stream_options": st.just({"include_usage": True}), "parallel_tool_calls": st.booleans(),
    "stream": st.booleans(), "metadata": st.dictionaries(names, json_values, max_size=2),
})
valid_shaped_bodies = st.builds(lambda model, msgs, params: {"model": model, "messages": msgs, **params},
                                names, messages, parameters)


@st.composite
def near_valid_bodies(draw):
    """A body of the valid shape, half the time with one spot (a field of the body, of one message,
    or a new field) replaced by any JSON: many get past validation and reach the translation, the
    rest probe each field's edges."""
    body = draw(valid_shaped_bodies)
    if draw(st.booleans()):
        target = draw(st.sampled_from([body, *body["messages"]]))
        target[draw(st.sampled_from([*sorted(target), "extra"]))] = draw(json_values)
    return body


any_json = json_values | near_valid_bodies()


@functools.cache
def converse_input_shape():
    """botocore's model of the Converse request."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    return model.operation_model("Converse").input_shape


def assert_valid_converse(request: dict) -> None:
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(request, converse_input_shape())
    assert not report.has_errors(), report.generate_report()


def validated(body):
    """The ChatRequest of ``body``, or None when the validator refused it with a 400."""
    if not isinstance(body, dict):
        return None  # read_json_body refuses a body that is not an object (400) before validation
    try:
        return load_completion(CHAT_COMPLETION, body, LIMITS)
    except InvalidRequest as exc:
        assert exc.status == 400
        return None


@PROPERTY_SETTINGS
@given(any_json)
def test_any_json_is_a_completion_or_a_400(body):
    completion = validated(body)
    if completion is not None:
        assert completion.messages and isinstance(completion.model, str)
        assert not set(completion.parameters) & GATEWAY_FIELDS
        sent = {name: value for name, value in body.items() if value is not None and name not in GATEWAY_FIELDS}
        sent.pop("metadata", None)
        assert {name: value for name, value in completion.parameters.items() if name != "metadata"} == sent


@PROPERTY_SETTINGS
@given(any_json)
def test_native_schema_is_a_completion_or_a_400(body):
    if isinstance(body, dict):
        try:
            load_completion(NATIVE_COMPLETION, body, LIMITS)
        except InvalidRequest as exc:
            assert exc.status == 400


@PROPERTY_SETTINGS
@given(near_valid_bodies())
def test_any_valid_completion_becomes_a_valid_converse_request_or_a_400(body):
    completion = validated(body)
    if completion is None:
        return
    try:
        request = to_converse_request(completion)
    except GatewayError as exc:
        assert exc.status == 400, exc
        return
    assert_valid_converse(request)


def test_the_generator_reaches_the_translation():
    """The properties above are only as good as their inputs: many must pass validation."""
    passed = []

    @settings(max_examples=200, derandomize=True, deadline=None, database=None)
    @given(near_valid_bodies())
    def count(body):
        if validated(body) is not None:
            passed.append(body)

    count()
    assert len(passed) >= 20, len(passed)
