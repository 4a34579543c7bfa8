"""langchain-openai's ``ChatOpenAI`` pointed at the gateway: invoke, stream, tools, structured output."""
from __future__ import annotations

import pytest
from pydantic import BaseModel

from tests.fakes.openai_server import Scripted, openai_completion, tool_call_completion

MODEL = "gpt-4o-mini"


@pytest.fixture
def chat(served):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=served.api, api_key=served.key, max_retries=0, timeout=15,
                      temperature=0.5)


def test_invoke_returns_the_upstream_text_and_usage(served, chat):
    """invoke(): the AIMessage holds the upstream's text and token usage."""
    message = chat.invoke("hello there")
    assert message.content == "upstream: hello there"
    assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (19, 5)
    assert message.response_metadata["system_fingerprint"] == "fp_upstream_1a2b3c"
    sent = served.upstream_chat_bodies()[0]
    assert sent["messages"] == [{"role": "user", "content": "hello there"}]
    assert (sent["model"], sent["temperature"]) == (MODEL, 0.5)


def test_stream_yields_the_text_then_usage(served, chat):
    """stream() with stream_usage: the chunks add up to the upstream's text and its usage."""
    chunks = list(chat.stream("hello there", stream_usage=True))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == "upstream: hello there"
    assert (total.usage_metadata["input_tokens"], total.usage_metadata["output_tokens"]) == (19, 5)
    sent = served.upstream_chat_bodies()[0]
    assert sent["stream"] is True


def test_bind_tools_returns_the_tool_call(served, chat):
    """bind_tools(): the tool schema reaches the upstream and its tool call comes back parsed."""
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    served.upstream.push(Scripted(body=tool_call_completion(MODEL, "get_weather", {"city": "Paris"})))
    message = chat.bind_tools([get_weather]).invoke("weather in Paris?")
    assert message.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_upstream_1",
                                   "type": "tool_call"}]
    assert message.content == ""
    tools = served.upstream_chat_bodies()[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather"]
    assert tools[0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


class Capital(BaseModel):
    """A country's capital."""

    country: str
    city: str


def test_with_structured_output_returns_the_model(served, chat):
    """with_structured_output(Model): a json_schema response_format upstream, the model instance back."""
    served.upstream.push(Scripted(body=openai_completion(MODEL, '{"country": "France", "city": "Paris"}')))
    result = chat.with_structured_output(Capital).invoke("capital of France?")
    assert result == Capital(country="France", city="Paris")
    response_format = served.upstream_chat_bodies()[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Capital"
