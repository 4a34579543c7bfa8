"""The official openai SDK against the gateway over real HTTP, for OpenAI-, Bedrock- and echo-routed
models, streaming and not, with and without ``include_usage``; the upstreams are local fakes."""
from __future__ import annotations

import httpx
import openai
import pytest

from gateway.testing import issue_key, serve

#: model asked -> (provider, model served, answer text, prompt tokens, completion tokens, price in/out)
ROUTES = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini", "upstream: tell me", 7, 3, (0.15, 0.60)),
    "claude-3-haiku": ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", "bedrock: tell me", 11, 4,
                       (0.25, 1.25)),
    "echo": ("echo", "echo", "tell me", 4, 2, (0.0, 0.0)),
}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me"}]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)


@pytest.fixture
def served(upstreams_app):
    app = upstreams_app()
    key = issue_key(app)
    with serve(app) as url:
        yield app, sdk(url, key), url, key


def assert_logged(app, model: str, streamed: bool) -> None:
    provider, served_model, _, prompt, completion, (price_in, price_out) = ROUTES[model]
    record = app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.provider, record.model, record.status, record.streamed) == (
        provider, served_model, 200, streamed)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, completion)
    assert record.cost == pytest.approx((prompt * price_in + completion * price_out) / 1_000_000)


@pytest.mark.parametrize("model", list(ROUTES))
def test_non_streaming(served, model):
    app, client, _, _ = served
    provider, served_model, text, prompt, completion, _ = ROUTES[model]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == text
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, completion)
    assert (raw.headers["X-Gateway-Provider"], raw.headers["X-Gateway-Model"]) == (provider, served_model)
    assert_logged(app, model, streamed=False)


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", list(ROUTES))
def test_streaming(served, fake_openai, model, include_usage):
    app, client, _, _ = served
    provider, served_model, text, prompt, completion, _ = ROUTES[model]
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=True,
                                                           **options)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert (raw.headers["X-Gateway-Provider"], raw.headers["X-Gateway-Model"]) == (provider, served_model)
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and not chunks[-1].choices
        assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (
            prompt, completion)
    else:
        assert usage_chunks == []
    if provider == "openai":  # the gateway always asks the upstream for usage
        assert fake_openai.requests[-1]["stream_options"] == {"include_usage": True}
    assert_logged(app, model, streamed=True)


def test_native_api_streams_the_same_sse_ending_with_done(served):
    app, _, url, key = served
    with httpx.stream("POST", f"{url}/api/v1/completions", headers={"X-API-Key": key}, timeout=15,
                      json={"model": "nova-micro", "provider": "bedrock", "messages": MESSAGES,
                            "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["X-Gateway-Provider"] == "bedrock"
    assert response.headers["X-Gateway-Model"] == "amazon.nova-micro-v1:0"
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert '"object":"chat.completion.chunk"' in lines[0]


def test_native_api_says_who_served_in_the_body(served):
    _, _, url, key = served
    body = httpx.post(f"{url}/api/v1/completions", headers={"X-API-Key": key}, timeout=15,
                      json={"model": "bedrock/claude-3-haiku", "messages": MESSAGES}).json()
    assert (body["provider"], body["model"]) == ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
    assert body["cost"] == pytest.approx((11 * 0.25 + 4 * 1.25) / 1_000_000)


def test_models_list_comes_from_the_model_table(served):
    _, client, _, _ = served
    models = {m.id: m for m in client.models.list()}
    assert models["anthropic.claude-3-haiku-20240307-v1:0"].owned_by == "bedrock"
    assert "claude-3-haiku" in models["anthropic.claude-3-haiku-20240307-v1:0"].aliases
    assert models["gpt-4o-mini"].owned_by == "openai" and "echo" in models


def test_n_choices_from_openai_and_echo(served, fake_openai):
    from tests.fakes.openai_server import Scripted, chat_completion

    _, client, _, _ = served
    body = chat_completion("gpt-4o-mini", "one")
    body["choices"].append({**body["choices"][0], "index": 1,
                            "message": {"role": "assistant", "content": "two"}})
    fake_openai.push(Scripted(body=body))
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    assert [c.message.content for c in answer.choices] == ["one", "two"]
    echoed = client.chat.completions.create(model="echo", messages=MESSAGES, n=3)
    assert [c.index for c in echoed.choices] == [0, 1, 2]


def test_bedrock_tool_call_through_the_sdk(served, fake_bedrock):
    from tests.fakes.bedrock_server import Scripted, converse_answer

    _, client, _, _ = served
    fake_bedrock.push(Scripted(body=converse_answer("", stop_reason="tool_use", content=[
        {"toolUse": {"toolUseId": "call-1", "name": "find_product", "input": {"brand": "Acme"}}}])))
    answer = client.chat.completions.create(
        model="claude-3-haiku", messages=MESSAGES, tool_choice="required",
        tools=[{"type": "function", "function": {"name": "find_product", "description": "search",
                                                 "parameters": {"type": "object"}}}])
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, call.function.arguments) == ("call-1", "find_product",
                                                                      '{"brand": "Acme"}')
    sent = fake_bedrock.requests[-1]["toolConfig"]
    assert sent["toolChoice"] == {"any": {}}
    assert sent["tools"][0]["toolSpec"]["inputSchema"] == {"json": {"type": "object"}}


def test_cross_region_inference_profile_ids_reach_bedrock_as_they_are(served, fake_bedrock):
    _, client, _, _ = served
    answer = client.chat.completions.create(model="claude-3-5-haiku", messages=MESSAGES)
    assert answer.model == "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert fake_bedrock.models[-1] == "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert fake_bedrock.paths[-1].endswith("/converse")
