"""The app behind Zappa's real Lambda handler (``zappa.handler.lambda_handler``), driven by API Gateway events.

Settings come from ``zappa save-python-settings-file dev`` and the environment from the
dev stage's ``aws_environment_variables`` — except the store, which is a temporary SQLite
file instead of DynamoDB, and the SSM path and secret, which need AWS (gateway/ssm.py
is tested against moto in test_ssm.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT

AUTHORIZER_CONTEXT = {"principalId": "lambda-user", "userId": "lambda-user", "tier": "free", "integrationLatency": 7}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "Hello from Lambda"}]}


def proxy_event(method: str, path: str, body: dict | None = None, headers: dict | None = None,
                authorizer: dict | None = None) -> dict:
    """A REST API (v1) proxy integration event, as API Gateway sends it to the function."""
    headers = {"Host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", "User-Agent": "pytest",
               "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443",
               **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/dev{path}", "stage": "dev",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "123456789012",
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "pytest"},
            **({"authorizer": authorizer} if authorizer else {})},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


EVENTS = {
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
}


def stage_environment(stage: str) -> dict[str, str]:
    """The stage's ``aws_environment_variables``, following ``extends`` as Zappa does."""
    settings = json.loads((ROOT / "zappa_settings.json").read_text())
    config, name = {}, stage
    while name:
        config = {**settings[name], **config}
        name = settings[name].get("extends") if "aws_environment_variables" not in config else None
    return dict(config["aws_environment_variables"])


@pytest.fixture(scope="module")
def lambda_run(tmp_path_factory):
    """Every event through one fresh Lambda-like process; returns (answers by event name, request-log records)."""
    work = tmp_path_factory.mktemp("lambda")
    fake_aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), **fake_aws}
    subprocess.run([str(Path(sys.executable).with_name("zappa")), "save-python-settings-file", "dev",
                    "-o", str(work / "zappa_settings.py")], cwd=ROOT, env=base, check=True,
                   capture_output=True, timeout=120)
    environment = stage_environment("dev")
    for remote in ("GATEWAY_SSM_PATH", "GATEWAY_SECRET_ID"):
        environment.pop(remote)
    environment.update(GATEWAY_STORE="sqlite", GATEWAY_SQLITE_PATH=str(work / "gateway.db"))
    answers_file = work / "answers.json"
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("lambda_driver.py")), str(work),
                           str(answers_file)],
                          input=json.dumps(list(EVENTS.values())), capture_output=True, text=True, timeout=120,
                          cwd=work, env={**base, **environment, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    output = json.loads(answers_file.read_text())
    return dict(zip(EVENTS, output["answers"], strict=True)), output["records"], done.stdout + done.stderr


def _json(answer: dict) -> dict:
    assert not answer.get("isBase64Encoded")  # text, never base64 (binary_support is off)
    return json.loads(answer["body"])


def _headers(answer: dict) -> dict[str, str]:
    return {name.lower(): values[-1] for name, values in answer["multiValueHeaders"].items()}


def test_settings_file_is_the_dev_stage(lambda_run, tmp_path_factory):
    generated = next(Path(tmp_path_factory.getbasetemp()).glob("lambda*/zappa_settings.py")).read_text()
    assert "APP_MODULE='gateway.wsgi'" in generated and "APP_FUNCTION='app'" in generated
    assert "AUTHORIZER_FUNCTION='gateway.authorizer.handler'" in generated
    assert "DEBUG=False" in generated and "API_STAGE='dev'" in generated


def test_health(lambda_run):
    answers, _, _ = lambda_run
    assert answers["health"]["statusCode"] == 200
    assert _json(answers["health"]) == {"status": "ok"}
    assert _headers(answers["health"])["x-correlation-id"]
    ready = _json(answers["ready"])
    assert answers["ready"]["statusCode"] == 200 and ready["checks"]["store"] == "ok"


def test_completion_with_authorizer_context(lambda_run):
    answers, records, _ = lambda_run
    for name in ("completion", "native"):
        assert answers[name]["statusCode"] == 200, answers[name]["body"]
    chat = _json(answers["completion"])
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"] == "Hello from Lambda"
    assert chat["usage"]["completion_tokens"] == 3
    assert _headers(answers["completion"])["x-gateway-provider"] == "echo"
    assert _headers(answers["completion"])["content-type"] == "application/json"
    assert {"model": "echo", "status": 200, "tokens": 6} in records


def test_unauthenticated_is_401_in_the_envelope(lambda_run):
    answers, _, _ = lambda_run
    for name, message in (("bad_key", "Invalid API key."), ("no_key", "Missing API key")):
        assert answers[name]["statusCode"] == 401
        error = _json(answers[name])["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert error["message"].startswith(message)


def test_unknown_route_and_model_are_404_in_the_envelope(lambda_run):
    answers, records, _ = lambda_run
    assert answers["no_route"]["statusCode"] == 404
    assert _json(answers["no_route"])["error"]["code"] == "not_found"
    assert answers["no_model"]["statusCode"] == 404
    assert _json(answers["no_model"])["error"]["code"] == "model_not_found"
    assert {"model": "no-such-model", "status": 404, "tokens": 0} in records


def test_no_secret_or_traceback_in_the_logs(lambda_run):
    _, _, logs = lambda_run
    assert "Traceback" not in logs
    assert "x" * 40 not in logs
