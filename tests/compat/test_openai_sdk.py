"""The official ``openai`` SDK against the gateway: chat (sync, async, streamed), tools, structured
output, the Responses API, embeddings, models, and the SDK's error classes and retries."""
from __future__ import annotations

import asyncio
import base64
import json
import struct

import openai
import pytest
from pydantic import BaseModel

from tests.fakes.openai_server import (
    Scripted,
    embedding_vector,
    error_body,
    openai_completion,
    tool_call_completion,
)

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_sync_completion_answers_the_upstream_text(served, sdk):
    """A plain create() reaches the upstream with the caller's messages and returns its text."""
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO)
    assert answer.choices[0].message.content == "upstream: hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (19, 5)
    sent = served.upstream_chat_bodies()
    assert len(sent) == 1 and sent[0]["model"] == MODEL and sent[0]["messages"] == HELLO


def test_async_completion_answers_the_upstream_text(served):
    """AsyncOpenAI gets the same answer as the sync client."""
    async def call():
        async with served.async_sdk() as client:
            return await client.chat.completions.create(model=MODEL, messages=HELLO)

    answer = asyncio.run(call())
    assert answer.choices[0].message.content == "upstream: hello there"
    assert served.upstream_chat_bodies()[0]["messages"] == HELLO


def test_stream_without_include_usage_has_no_usage_chunk(served, sdk):
    """stream=True alone: the text word by word, a stop, and no usage chunk for the client."""
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "upstream: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert [c for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks)
    assert served.upstream_chat_bodies()[0]["stream"] is True


def test_stream_with_include_usage_ends_with_the_upstream_usage(served, sdk):
    """stream_options.include_usage: one last chunk without choices carries the upstream's usage."""
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "upstream: hello there"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (19, 5, 24)
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert usage.prompt_tokens_details.cached_tokens == 6
    assert served.upstream_chat_bodies()[0]["stream_options"]["include_usage"] is True


def test_tool_call_answer_has_null_content(served, sdk):
    """A tool call answer reaches the client with content None, the call's id, name and arguments."""
    served.upstream.push(Scripted(body=tool_call_completion(MODEL, "get_weather", {"city": "Paris"})))
    answer = sdk.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER_TOOL],
                                         tool_choice="auto")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("call_upstream_1", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = served.upstream_chat_bodies()[0]
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"


class Capital(BaseModel):
    country: str
    city: str


def test_parse_returns_the_pydantic_model(served, sdk):
    """chat.completions.parse: the json_schema response_format reaches the upstream, .parsed is the model."""
    served.upstream.push(Scripted(body=openai_completion(MODEL, '{"country": "France", "city": "Paris"}')))
    answer = sdk.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Capital)
    assert answer.choices[0].message.parsed == Capital(country="France", city="Paris")
    sent = served.upstream_chat_bodies()[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Capital"
    assert sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"country", "city"}


def test_responses_create_returns_the_upstream_response(served, sdk):
    """responses.create reaches the upstream's /v1/responses and the client reads its output and usage."""
    response = sdk.responses.create(model=MODEL, input="hello there", instructions="be brief")
    assert response.output_text == "upstream: hello there"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 4, 15)
    assert served.upstream.paths[-1] == "/v1/responses"
    sent = served.upstream.requests[-1]
    assert (sent["model"], sent["input"], sent["instructions"]) == (MODEL, "hello there", "be brief")


def test_responses_stream_yields_the_typed_events(served, sdk):
    """responses.create(stream=True): created, text deltas, completed with usage, as typed SDK events."""
    events = list(sdk.responses.create(model=MODEL, input="hello there", stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "upstream: hello there"
    usage = events[-1].response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 4, 15)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert served.upstream.paths[-1] == "/v1/responses" and served.upstream.requests[-1]["stream"] is True


def test_embeddings_float_vectors_reach_the_client(served, sdk):
    """embeddings.create(encoding_format="float"): the upstream's vectors, in order, with usage."""
    answer = sdk.embeddings.create(model="text-embedding-3-small", input=["first text", "second"],
                                   encoding_format="float")
    assert [item.embedding for item in answer.data] == [embedding_vector("first text"), embedding_vector("second")]
    assert [item.index for item in answer.data] == [0, 1]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (3, 3)
    assert served.upstream.paths[-1] == "/v1/embeddings"
    sent = served.upstream.requests[-1]
    assert (sent["input"], sent["encoding_format"]) == (["first text", "second"], "float")


def test_embeddings_base64_reaches_the_client_as_sent(served, sdk):
    """encoding_format="base64": the client gets the upstream's base64 float32 string unchanged."""
    answer = sdk.embeddings.create(model="text-embedding-3-small", input="first text", encoding_format="base64")
    vector = embedding_vector("first text")
    assert answer.data[0].embedding == base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    assert served.upstream.requests[-1]["encoding_format"] == "base64"


def test_embeddings_sdk_default_decodes_the_upstream_base64(served, sdk):
    """Without encoding_format the SDK asks for base64 and decodes it: the upstream's floats come out."""
    answer = sdk.embeddings.create(model="text-embedding-3-small", input="first text")
    assert answer.data[0].embedding == embedding_vector("first text")
    assert served.upstream.requests[-1]["encoding_format"] == "base64"


def test_models_retrieve_names_the_model(sdk):
    """models.retrieve on a served model answers OpenAI's model object."""
    model = sdk.models.retrieve(MODEL)
    assert (model.id, model.object) == (MODEL, "model")
    assert isinstance(model.created, int) and model.owned_by


def test_upstream_400_is_bad_request_with_its_message_and_param(served, sdk):
    """An upstream 400 reaches the client as openai.BadRequestError with the upstream's message and param."""
    message = "Invalid value for 'temperature': must be between 0 and 2."
    served.upstream.push(Scripted(status=400, body=error_body(message, param="temperature", code="invalid_value")))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=HELLO, temperature=1.5)
    assert caught.value.status_code == 400
    assert message in caught.value.message
    assert caught.value.param == "temperature"
    assert len(served.upstream.requests) == 1  # a 400 is not retried


def test_upstream_429_is_rate_limit_error_with_retry_after(served, sdk):
    """Upstream 429 + Retry-After on every attempt: after the gateway's retry, RateLimitError with retry-after."""
    served.upstream.push(*[Scripted(status=429, headers={"Retry-After": "0.2"},
                                    body=error_body("Rate limit reached", type="requests", code="rate_limit_exceeded"))
                           for _ in range(2)])
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 429
    assert float(caught.value.response.headers["retry-after"]) > 0
    assert len(served.upstream.requests) == 2  # the attempt and the gateway's one retry


def test_sdk_retries_honour_the_gateway_retry_after(served):
    """The SDK's own retry waits the Retry-After the gateway passed on (longer than its default backoff)."""
    served.upstream.push(*[Scripted(status=429, headers={"Retry-After": "0.7"},
                                    body=error_body("Rate limit reached", type="requests", code="rate_limit_exceeded"))
                           for _ in range(4)])
    with served.sdk(max_retries=1) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=HELLO)
    times = served.upstream.times
    assert len(times) == 4  # two gateway requests (the SDK's attempt and its retry), two upstream attempts each
    # the SDK's default first backoff is at most 0.5 s; honouring Retry-After it waits at least 0.7 s
    assert times[2] - times[1] >= 0.65
