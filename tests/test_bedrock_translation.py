"""OpenAI <-> Converse translation: system prompts, multi-turn, tools, stop sequences, stop reasons, usage."""
from __future__ import annotations

import json

import pytest

from gateway.errors import UpstreamRejected
from gateway.types import ChatRequest, Usage
from plugins.bedrock_provider import (
    chunks_from_events,
    from_converse_response,
    to_converse_messages,
    to_converse_request,
    usage_from,
)
from tests.fakes.bedrock_server import converse_answer

WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


def completion(messages, **parameters):
    return ChatRequest(model="anthropic.claude-3-haiku-20240307-v1:0", messages=messages, parameters=parameters)


def test_system_and_developer_messages_become_system_blocks():
    system, messages = to_converse_messages([
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"}])
    assert system == [{"text": "You are terse."}, {"text": "Answer in French."}]
    assert messages == [{"role": "user", "content": [{"text": "Hello"}]}]


def test_multi_turn_keeps_order_and_merges_consecutive_roles():
    _, messages = to_converse_messages([
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": "three"}, {"role": "user", "content": "four"}])
    assert messages == [{"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
                        {"role": "assistant", "content": [{"text": "three"}]},
                        {"role": "user", "content": [{"text": "four"}]}]


def test_tool_calls_and_results_round_trip():
    _, messages = to_converse_messages([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"}])
    assert messages[1] == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Paris"}}},
        {"toolUse": {"toolUseId": "c2", "name": "weather", "input": {"city": "Rome"}}}]}
    assert messages[2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "sunny"}]}},
        {"toolResult": {"toolUseId": "c2", "content": [{"text": "rain"}]}}]}


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"auto": {}}), ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "weather"}}, {"tool": {"name": "weather"}})])
def test_tool_definitions_and_choice(choice, expected):
    request = to_converse_request(completion([{"role": "user", "content": "x"}], tools=[WEATHER],
                                             tool_choice=choice))
    assert request["toolConfig"]["toolChoice"] == expected
    assert request["toolConfig"]["tools"] == [{"toolSpec": {
        "name": "weather", "description": "Weather in a city",
        "inputSchema": {"json": WEATHER["function"]["parameters"]}}}]


def test_tool_choice_none_sends_no_tools():
    request = to_converse_request(completion([{"role": "user", "content": "x"}], tools=[WEATHER],
                                             tool_choice="none"))
    assert "toolConfig" not in request


def test_inference_parameters():
    request = to_converse_request(completion([{"role": "user", "content": "x"}], max_tokens=99,
                                             temperature=0.3, top_p=0.9, stop="END", user="u-1"))
    assert request["inferenceConfig"] == {"maxTokens": 99, "temperature": 0.3, "topP": 0.9,
                                          "stopSequences": ["END"]}
    assert to_converse_request(completion([{"role": "user", "content": "x"}], max_completion_tokens=5,
                                          stop=["a", "b"]))["inferenceConfig"] == {
        "maxTokens": 5, "stopSequences": ["a", "b"]}


@pytest.mark.parametrize("parameters, named", [
    ({"seed": 1}, "seed"), ({"n": 2}, "n"), ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format")])
def test_parameters_bedrock_cannot_honour_are_refused_by_name(parameters, named):
    with pytest.raises(UpstreamRejected, match=named):
        to_converse_request(completion([{"role": "user", "content": "x"}], **parameters))


def test_non_text_content_is_refused_clearly():
    with pytest.raises(UpstreamRejected, match="image_url"):
        to_converse_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("content_filtered", "content_filter"),
    ("guardrail_intervened", "content_filter")])
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish):
    assert from_converse_response(converse_answer("x", stop_reason=stop_reason), "m").finish_reason == finish


def test_response_with_text_and_tool_use():
    result = from_converse_response(converse_answer("", stop_reason="tool_use", content=[
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}}]), "m")
    assert result.text == "Let me check."
    assert result.tool_calls == [{"id": "t1", "type": "function",
                                  "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]
    assert result.usage == Usage(11, 4)


def test_usage_counts_cache_reads_as_cached_prompt_tokens():
    assert usage_from({"inputTokens": 10, "outputTokens": 3, "cacheReadInputTokens": 90,
                       "cacheWriteInputTokens": 5}) == Usage(prompt_tokens=105, completion_tokens=3,
                                                            cached_tokens=90)


def test_stream_events_with_a_tool_call_become_openai_style_chunks():
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Checking"}}},
        {"contentBlockStart": {"contentBlockIndex": 1,
                               "start": {"toolUse": {"toolUseId": "t9", "name": "weather"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ' "Oslo"}'}}}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": 20, "outputTokens": 8}}}]
    chunks = list(chunks_from_events(events))
    assert chunks[0].text == "Checking"
    assert chunks[1].tool_calls == [{"index": 0, "id": "t9", "type": "function",
                                     "function": {"name": "weather", "arguments": ""}}]
    arguments = "".join(c.tool_calls[0]["function"]["arguments"] for c in chunks[2:4])
    assert json.loads(arguments) == {"city": "Oslo"}
    assert chunks[4].finish_reason == "tool_calls"
    assert chunks[5].usage == Usage(20, 8)
