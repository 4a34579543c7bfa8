"""Wire fidelity through the official SDK: what OpenAI answers reaches the client, what the client sends
reaches OpenAI, whatever the field, and shapes real clients produce are accepted."""
from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.openai_server import SYSTEM_FINGERPRINT, Scripted, error_body, token_logprobs, tool_call_completion

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]


def test_logprobs_reach_the_client(served, sdk):
    """logprobs=True, top_logprobs=2: each token's logprob, bytes and alternatives arrive as OpenAI sent them."""
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO, logprobs=True, top_logprobs=2)
    content = [entry.model_dump() for entry in answer.choices[0].logprobs.content]
    assert content == token_logprobs("upstream: hello there", 2)
    sent = served.upstream_chat_bodies()[0]
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)


def test_system_fingerprint_and_service_tier_reach_the_client(served, sdk):
    """The answer's system_fingerprint and service_tier are OpenAI's, and service_tier was sent upstream."""
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO, service_tier="flex")
    assert answer.system_fingerprint == SYSTEM_FINGERPRINT
    assert answer.service_tier == "flex"
    assert served.upstream_chat_bodies()[0]["service_tier"] == "flex"


def test_stream_chunks_keep_logprobs_fingerprint_and_tier(served, sdk):
    """Streamed with logprobs: each chunk keeps OpenAI's system_fingerprint, service_tier and token logprobs."""
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True, logprobs=True))
    assert {(c.system_fingerprint, c.service_tier) for c in chunks} == {(SYSTEM_FINGERPRINT, "default")}
    tokens = [entry.token for c in chunks if c.choices and c.choices[0].logprobs
              for entry in c.choices[0].logprobs.content]
    assert tokens == [entry["token"] for entry in token_logprobs("upstream: hello there")]
    assert served.upstream_chat_bodies()[0]["logprobs"] is True


def test_usage_token_details_reach_the_client(sdk):
    """usage.completion_tokens_details and usage.prompt_tokens_details arrive with OpenAI's numbers."""
    usage = sdk.chat.completions.create(model=MODEL, messages=HELLO).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (19, 5, 24)
    assert usage.completion_tokens_details.model_dump() == {
        "reasoning_tokens": 2, "audio_tokens": 0, "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0, "text_tokens": None}
    assert (usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens_details.audio_tokens) == (6, 0)


def test_message_refusal_and_annotations_reach_the_client(sdk):
    """The message's refusal (null) and annotations ([]) come through as OpenAI sent them."""
    answer = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    message = json.loads(answer.http_response.text)["choices"][0]["message"]
    assert message["refusal"] is None and message["annotations"] == []


def _headers_of_json(served, sdk):
    return sdk.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO).headers


def _headers_of_stream(served, sdk):
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, stream=True)
    list(raw.parse())
    return raw.headers


def _headers_of_upstream_error(served, sdk):
    served.upstream.push(Scripted(status=400, body=error_body("temperature too high", param="temperature")))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=HELLO)
    return caught.value.response.headers


def _headers_of_gateway_error(served, sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="no-such-model", messages=HELLO)
    assert served.upstream.requests == []
    return caught.value.response.headers


def _headers_of_embeddings(served, sdk):
    return sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x").headers


@pytest.mark.parametrize("call", [_headers_of_json, _headers_of_stream, _headers_of_upstream_error,
                                  _headers_of_gateway_error, _headers_of_embeddings],
                         ids=["json", "stream", "upstream_error", "gateway_error", "embeddings"])
def test_every_answer_has_an_x_request_id(served, sdk, call):
    """JSON, streamed, upstream and gateway error, and embeddings answers each carry an x-request-id header."""
    assert call(served, sdk).get("x-request-id")


#: Current chat parameters, each sent through the SDK's own keyword (all exist in the SDK now).
PARAMETERS = {
    "reasoning_effort": {"reasoning_effort": "low"},
    "store": {"store": True},
    "service_tier": {"service_tier": "priority"},
    "prompt_cache_key": {"prompt_cache_key": "compat-suite-v1"},
    "safety_identifier": {"safety_identifier": "user-4f2a9c"},
    "modalities_audio": {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    "prediction": {"prediction": {"type": "content", "content": "upstream: hello there"}},
    "verbosity": {"verbosity": "low"},
    "web_search_options": {"web_search_options": {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"country": "GB", "city": "London"}}}},
    "functions": {"functions": [{"name": "lookup", "description": "Look a word up",
                                 "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
                  "function_call": {"name": "lookup"}},
}


@pytest.mark.parametrize("parameters", list(PARAMETERS.values()), ids=list(PARAMETERS))
def test_current_openai_parameter_reaches_upstream_unchanged(served, sdk, parameters):
    """A current OpenAI chat parameter is accepted and reaches the upstream exactly as sent."""
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO, **parameters)
    assert answer.choices[0].message.content == "upstream: hello there"
    sent = served.upstream_chat_bodies()[0]
    assert {name: sent.get(name) for name in parameters} == parameters


@pytest.mark.parametrize("field", ["max_tokens", "temperature", "stop", "seed"])
def test_explicit_null_optional_field_is_accepted_as_absent(served, sdk, field):
    """An optional field sent as JSON null (extra_body) is accepted like an absent one."""
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO, extra_body={field: None})
    assert answer.choices[0].message.content == "upstream: hello there"
    assert served.upstream_chat_bodies()[0].get(field) is None


def test_sdk_message_model_dump_is_accepted_as_the_next_turn(served, sdk):
    """The SDK's own message.model_dump() (refusal, annotations, audio... as nulls) works as the next turn."""
    first = sdk.chat.completions.create(model=MODEL, messages=HELLO)
    turn = [*HELLO, first.choices[0].message.model_dump(), {"role": "user", "content": "and again"}]
    second = sdk.chat.completions.create(model=MODEL, messages=turn)
    assert second.choices[0].message.content == "upstream: and again"
    sent = served.upstream_chat_bodies()[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "upstream: hello there"


def test_sdk_tool_call_message_model_dump_is_accepted_with_the_tool_result(served, sdk):
    """A tool call answer's model_dump() (content None) then the tool's result works as the next turn."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    served.upstream.push(Scripted(body=tool_call_completion(MODEL, "get_weather", {"city": "Paris"})))
    first = sdk.chat.completions.create(model=MODEL, messages=HELLO, tools=[tool])
    message = first.choices[0].message
    turn = [*HELLO, message.model_dump(),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"}]
    second = sdk.chat.completions.create(model=MODEL, messages=turn, tools=[tool])
    assert second.choices[0].message.content == "upstream: hello there"
    sent = served.upstream_chat_bodies()[1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_upstream_1", "content": "sunny"}


def test_lone_surrogate_is_a_400_and_never_reaches_upstream(served, sdk):
    """A message holding a lone surrogate (JSON "\\ud800", as JavaScript's JSON.stringify writes it) is a
    400 BadRequestError and the upstream is never called."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a\ud800b"}]}).encode()
    assert b"\\ud800" in body
    with pytest.raises(openai.BadRequestError):
        sdk.post("/chat/completions", content=body, cast_to=openai.types.chat.ChatCompletion)
    assert served.upstream.requests == []


def test_n2_answer_is_served_from_the_cache(served, sdk):
    """n=2 at temperature 0, asked twice: the second answer comes from the cache with both choices."""
    calls = [sdk.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, n=2, temperature=0)
             for _ in range(2)]
    answers = [call.parse() for call in calls]
    for answer in answers:
        assert [c.message.content for c in answer.choices] == ["upstream: hello there", "upstream: hello there (2)"]
        assert [c.index for c in answer.choices] == [0, 1]
    assert calls[1].headers.get("X-Cache") == "HIT"
    assert len(served.upstream_chat_bodies()) == 1
