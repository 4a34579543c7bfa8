"""The OpenAI provider: parameters pass through, tool calls, Azure, several upstreams, keys from
the environment or AWS Secrets Manager (moto), and a missing key's 503."""
from __future__ import annotations

import json

import openai
import pytest

import plugins.openai_provider as openai_provider
from gateway.testing import issue_key, make_app, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted, chat_completion

MESSAGES = [{"role": "user", "content": "hi"}]
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
PARAMETERS = {
    "temperature": 0.4, "top_p": 0.8, "max_tokens": 40, "max_completion_tokens": 40, "stop": ["\n\n"],
    "seed": 42, "n": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2, "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}}, "response_format": SCHEMA_FORMAT,
    "user": "end-user-7", "logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 2,
    "parallel_tool_calls": False,
}


def post(app, body, key=None):
    return app.test_client().post("/v1/chat/completions", headers={"X-API-Key": key or issue_key(app)},
                                  json={"model": "gpt-4o-mini", "messages": MESSAGES, **body})


def test_every_chat_parameter_reaches_the_upstream_unchanged(openai_app, fake_openai):
    assert post(openai_app, PARAMETERS).status_code == 200
    sent = fake_openai.requests[-1]
    for name, value in PARAMETERS.items():
        assert sent[name] == value, name


def test_an_unknown_field_reaches_the_upstream_and_its_400_comes_back_with_its_message(openai_app, fake_openai):
    refusal = {"error": {"message": "Unrecognized request argument supplied: temprature",
                         "type": "invalid_request_error", "param": "temprature", "code": None}}
    fake_openai.push(Scripted(status=400, body=refusal))
    response = post(openai_app, {"temprature": 0.2})
    assert fake_openai.requests[-1]["temprature"] == 0.2
    error = response.get_json()["error"]
    assert response.status_code == 400 and "Unrecognized request argument supplied: temprature" in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "temprature")


def test_an_upstream_4xx_keeps_its_status_and_is_scrubbed_of_keys_and_urls(openai_app, fake_openai):
    refusal = {"error": {"message": "Model not found; key sk-proj-abcdef123456 see https://upstream.example/x",
                         "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    fake_openai.push(Scripted(status=404, body=refusal))
    response = post(openai_app, {})
    error = response.get_json()["error"]
    assert response.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert "sk-proj" not in error["message"] and "upstream.example" not in error["message"]
    assert "[redacted]" in error["message"]


def test_tool_calls_come_back_whole_and_streamed(openai_app, fake_openai):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    body = chat_completion("gpt-4o-mini", "")
    body["choices"][0].update(message={"role": "assistant", "content": None, "tool_calls": [call]},
                              finish_reason="tool_calls")
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                  {"index": 0, **call, "function": {"name": "lookup", "arguments": ""}}]}}]},
              {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                  {"index": 0, "function": {"arguments": '{"q": 1}'}}]}}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
              {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}}]
    fake_openai.push(Scripted(body=body), Scripted(events=events))
    key = issue_key(openai_app)
    with serve(openai_app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[TOOL])
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[TOOL],
                                                     stream=True))
    assert answer.choices[0].message.tool_calls[0].model_dump() == call
    streamed = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert streamed[0].id == "call_1" and streamed[0].function.name == "lookup"
    assert "".join(t.function.arguments or "" for t in streamed) == '{"q": 1}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    record = openai_app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.prompt_tokens, record.completion_tokens) == (5, 6)


def table_file(tmp_path, models):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models}))
    return str(path)


def test_azure_openai_uses_deployment_paths_api_version_and_api_key(tmp_path, fake_openai):
    app = make_app(tmp_path, {
        "plugin_settings": {"openai_provider": {"upstreams": {"azure": {
            "azure_endpoint": fake_openai.base_url, "api_version": "2024-10-21", "api_key": "azure-key-123"}}}},
        "model_table_path": table_file(tmp_path, {"gpt-4o-eu": {"provider": "azure", "model": "prod-4o",
                                                                "input": 2.5, "output": 10}})})
    response = post(app, {"model": "gpt-4o-eu"})
    assert response.status_code == 200 and response.headers["X-Gateway-Provider"] == "azure"
    assert fake_openai.paths[-1] == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    assert fake_openai.headers[-1]["api-key"] == "azure-key-123"


def test_several_named_upstreams_are_providers_of_their_own(tmp_path, fake_openai, monkeypatch):
    monkeypatch.setenv("LOCAL_LLM_KEY", "local-key-456")
    with FakeOpenAI() as local:
        app = make_app(tmp_path, {
            "plugin_settings": {"openai_provider": {"upstreams": {
                "openai": {"base_url": fake_openai.url, "api_key": "sk-openai"},
                "local": {"base_url": local.url, "api_key": {"$env": "LOCAL_LLM_KEY"}}}}},
            "model_table_path": table_file(tmp_path, {"llama-local": {"provider": "local", "model": "llama3"}})})
        key = issue_key(app)
        assert post(app, {"model": "llama-local"}, key).headers["X-Gateway-Provider"] == "local"
        assert post(app, {}, key).headers["X-Gateway-Provider"] == "openai"
    assert [r["model"] for r in local.requests] == ["llama3"]
    assert local.headers[0]["authorization"] == "Bearer local-key-456"
    assert [r["model"] for r in fake_openai.requests] == ["gpt-4o-mini"]


def test_a_missing_key_is_a_503_saying_which_setting_to_set(tmp_path, fake_openai):
    app = make_app(tmp_path)  # the test environment has no OPENAI_API_KEY
    response = post(app, {})
    error = response.get_json()["error"]
    assert response.status_code == 503 and error["code"] == "provider_not_configured"
    assert "OPENAI_API_KEY" in error["message"]
    record = app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.status, record.error_code) == (503, "provider_not_configured")


@pytest.fixture
def secrets_manager(monkeypatch):
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        import boto3

        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_the_key_comes_from_secrets_manager_fetched_once(tmp_path, fake_openai, secrets_manager, monkeypatch):
    secrets_manager.create_secret(Name="gateway/openai", SecretString=json.dumps({"api_key": "sk-from-sm"}))
    fetches = []
    real_fetch = openai_provider.fetch_secret
    monkeypatch.setattr(openai_provider, "fetch_secret", lambda *a: fetches.append(a) or real_fetch(*a))
    app = make_app(tmp_path, {"plugin_settings": {"openai_provider": {
        "api_key_secret": "gateway/openai", "base_url": fake_openai.url}}})
    key = issue_key(app)
    assert [post(app, {}, key).status_code for _ in range(3)] == [200] * 3
    assert fetches == [("gateway/openai", "us-east-1")]
    assert {h["authorization"] for h in fake_openai.headers} == {"Bearer sk-from-sm"}


def test_an_unreadable_secret_is_a_503_naming_it(tmp_path, fake_openai, secrets_manager):
    app = make_app(tmp_path, {"plugin_settings": {"openai_provider": {
        "api_key_secret": "gateway/missing", "base_url": fake_openai.url}}})
    response = post(app, {})
    error = response.get_json()["error"]
    assert response.status_code == 503
    assert "gateway/missing" in error["message"] and "ResourceNotFoundException" in error["message"]
