"""The app behind Zappa's real Lambda handler (``zappa.handler.lambda_handler``), driven by API Gateway events.

Settings come from ``zappa save-python-settings-file dev`` and the environment from the
dev stage's ``aws_environment_variables`` — except the store, which is a temporary SQLite
file instead of DynamoDB, and the SSM path and secret, which need AWS (gateway/ssm.py
is tested against moto in test_ssm.py).
"""
from __future__ import annotations

import json

import pytest

from gateway.config import load_settings
from gateway.store import open_store
from tests.deploy.lambda_harness import create_key_for, generate_settings, local_environment, proxy_event, run_events

USER = "lambda-user"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/POST/v1/chat/completions"
AUTHORIZER_CONTEXT = {"principalId": USER, "userId": USER, "tier": "free", "integrationLatency": 7}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "Hello from Lambda"}]}
def authorizer_event(headers: dict[str, str]) -> dict:
    """What API Gateway sends api.yaml's REQUEST authorizer: the request itself, with the method's ARN."""
    event = proxy_event("POST", "/v1/chat/completions", CHAT, headers)
    return {"type": "REQUEST", "methodArn": METHOD_ARN,
            **{k: v for k, v in event.items() if k not in ("body", "isBase64Encoded")}}


EVENTS = {
    # First, as when a container's first event is an authorizer call: it builds the one app.
    "authorize": authorizer_event({"X-API-Key": "{KEY}"}),
    "authorize_bearer": authorizer_event({"Authorization": "Bearer {KEY}"}),
    "authorize_bad": authorizer_event({"X-API-Key": "gw_test_0000_" + "y" * 40}),
    "authorize_none": authorizer_event({}),
    "health": proxy_event("GET", "/health"),
    "ready": proxy_event("GET", "/api/v1/health/ready"),
    "completion": proxy_event("POST", "/v1/chat/completions", CHAT, {"X-API-Key": "{KEY}"}, AUTHORIZER_CONTEXT),
    "native": proxy_event("POST", "/api/v1/completions", CHAT, {"X-API-Key": "{KEY}"}, AUTHORIZER_CONTEXT),
    # The authorizer let it through, but the app checks the key itself too (defence in depth).
    "bad_key": proxy_event("POST", "/v1/chat/completions", CHAT, {"X-API-Key": "gw_test_0000_" + "x" * 40},
                           AUTHORIZER_CONTEXT),
    "no_key": proxy_event("POST", "/v1/chat/completions", CHAT),
    "no_route": proxy_event("GET", "/v1/nope", headers={"X-API-Key": "{KEY}"}),
    "no_model": proxy_event("POST", "/v1/chat/completions", {**CHAT, "model": "no-such-model"},
                            {"X-API-Key": "{KEY}"}, AUTHORIZER_CONTEXT),
    "stream": proxy_event("POST", "/v1/chat/completions",
                          {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                          {"X-API-Key": "{KEY}"}, AUTHORIZER_CONTEXT),
}


@pytest.fixture(scope="module")
def lambda_run(tmp_path_factory):
    """Every event through one fresh Lambda-like process: (answers by event, request-log records, output, settings)."""
    work = tmp_path_factory.mktemp("lambda")
    settings_file = generate_settings("dev", work)
    environment = local_environment("dev", work / "gateway.db")
    key = create_key_for(environment, USER)
    events = json.loads(json.dumps(list(EVENTS.values())).replace("{KEY}", key))
    output, logs = run_events(work, events, environment)
    records = open_store(load_settings({}, environ=environment)).records_for_user(USER)
    return (dict(zip(EVENTS, output["answers"], strict=True)), records, logs, settings_file.read_text())


def _json(answer: dict) -> dict:
    assert not answer.get("isBase64Encoded")  # text, never base64 (binary_support is off)
    return json.loads(answer["body"])


def _headers(answer: dict) -> dict[str, str]:
    return {name.lower(): values[-1] for name, values in answer["multiValueHeaders"].items()}


def test_settings_file_is_the_dev_stage(lambda_run):
    generated = lambda_run[3]
    assert "APP_MODULE='gateway.wsgi'" in generated and "APP_FUNCTION='app'" in generated
    assert "AUTHORIZER_FUNCTION" not in generated  # api.yaml's authorizer, reached through lambda_handler
    assert "CONTEXT_HEADER_MAPPINGS={'X-Correlation-Id': 'authorizer.correlationId'}" in generated
    assert "DEBUG=False" in generated and "API_STAGE='dev'" in generated


def test_health(lambda_run):
    answers = lambda_run[0]
    assert answers["health"]["statusCode"] == 200
    assert _json(answers["health"]) == {"status": "ok"}
    assert _headers(answers["health"])["x-correlation-id"]
    ready = _json(answers["ready"])
    assert answers["ready"]["statusCode"] == 200 and ready["checks"]["store"] == "ok"


def test_completion_with_authorizer_context(lambda_run):
    answers, records = lambda_run[:2]
    for name in ("completion", "native"):
        assert answers[name]["statusCode"] == 200, answers[name]["body"]
    chat = _json(answers["completion"])
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"] == "Hello from Lambda"
    assert chat["usage"]["completion_tokens"] == 3
    assert _headers(answers["completion"])["x-gateway-provider"] == "echo"
    assert _headers(answers["completion"])["content-type"] == "application/json"
    assert [(r.model, r.status, r.tokens) for r in records if r.status == 200 and not r.streamed] == [
        ("echo", 200, 6)] * 2


def test_unauthenticated_is_401_in_the_envelope(lambda_run):
    answers = lambda_run[0]
    for name, message in (("bad_key", "Invalid API key."), ("no_key", "Missing API key")):
        assert answers[name]["statusCode"] == 401
        error = _json(answers[name])["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert error["message"].startswith(message)


def test_unknown_route_and_model_are_404_in_the_envelope(lambda_run):
    answers, records = lambda_run[:2]
    assert answers["no_route"]["statusCode"] == 404
    assert _json(answers["no_route"])["error"]["code"] == "not_found"
    assert answers["no_model"]["statusCode"] == 404
    assert _json(answers["no_model"])["error"]["code"] == "model_not_found"
    assert [(r.model, r.status, r.error_code) for r in records if r.status != 200] == [
        ("no-such-model", 404, "model_not_found")]


def test_no_secret_or_traceback_in_the_output(lambda_run):
    logs = lambda_run[2]
    assert "Traceback" not in logs
    assert "x" * 40 not in logs


def test_streamed_completion_arrives_buffered_but_whole(lambda_run):
    answers, records = lambda_run[:2]
    stream = answers["stream"]
    assert stream["statusCode"] == 200
    assert _headers(stream)["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in stream["body"].split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from Lambda"
    assert chunks[-1]["usage"]["completion_tokens"] == 3  # include_usage honoured
    assert [r.streamed for r in records if r.status == 200].count(True) == 1


def test_request_authorizer_through_the_functions_handler_allows_either_header_and_denies(lambda_run):
    answers = lambda_run[0]
    for name in ("authorize", "authorize_bearer"):
        allow = answers[name]
        assert allow["principalId"] == USER
        assert allow["policyDocument"]["Statement"] == [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}]
        assert allow["context"]["userId"] == USER and allow["context"]["tier"] == "free"
    for name in ("authorize_bad", "authorize_none"):
        assert answers[name]["policyDocument"]["Statement"][0]["Effect"] == "Deny"
        assert "context" not in answers[name]


def test_one_app_per_container(lambda_run):
    logs = lambda_run[2]
    # The authorizer ran first and built the app; Zappa's handler served the requests with it.
    assert logs.count('"message": "gateway ready"') == 1
