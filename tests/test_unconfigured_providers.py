"""Models whose provider is not configured are left out of /v1/models, and readiness says
``degraded``, naming the setting each provider needs (never a value)."""
from __future__ import annotations

import pytest

from gateway.testing import issue_key, make_app
from plugins.bedrock_provider import CREDENTIAL_VARIABLES

SECRET = "sk-test-upstream-secret-0123456789"
READY = "/api/v1/health/ready"


@pytest.fixture(autouse=True)
def no_aws_credentials(tmp_path, monkeypatch):
    """No AWS credentials anywhere botocore looks: variables, files, the EC2 metadata service."""
    for name in (*CREDENTIAL_VARIABLES, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def listed(app) -> dict[str, str]:
    key = issue_key(app, permissions=("completions",))
    answer = app.test_client().get("/v1/models", headers={"X-API-Key": key}).get_json()
    return {model["id"]: model["owned_by"] for model in answer["data"]}


def test_without_credentials_only_echo_is_listed_and_readiness_names_what_is_missing(tmp_path):
    app = make_app(tmp_path)
    assert listed(app) == {"echo": "echo"}
    client, key = app.test_client(), issue_key(app)
    assert client.get("/v1/models/gpt-4o-mini", headers={"X-API-Key": key}).status_code == 404
    ready = client.get(READY)
    assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"
    unconfigured = ready.get_json()["checks"]["unconfigured"]
    assert set(unconfigured) == {"openai", "bedrock"}
    assert "OPENAI_API_KEY" in unconfigured["openai"] and "AWS credentials" in unconfigured["bedrock"]
    asked = client.post("/v1/chat/completions", headers={"X-API-Key": key},
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert asked.status_code == 503 and "OPENAI_API_KEY" in asked.get_json()["error"]["message"]


def test_with_credentials_every_model_is_listed_and_readiness_is_ok(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    app = make_app(tmp_path)
    models = listed(app)
    assert models["gpt-4o-mini"] == "openai" and models["anthropic.claude-3-haiku-20240307-v1:0"] == "bedrock"
    assert len(models) > 10
    ready = app.test_client().get(READY)
    assert ready.get_json() == {"status": "ok", "checks": {
        "store": "ok", "providers": ["bedrock", "echo", "openai"], "circuits": "ok"}}
    assert SECRET not in ready.get_data(as_text=True)


def test_credentials_in_an_aws_file_are_found_through_botocore(tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    app = make_app(tmp_path)
    assert listed(app)["amazon.nova-micro-v1:0"] == "bedrock" and "gpt-4o-mini" not in listed(app)
    assert set(app.test_client().get(READY).get_json()["checks"]["unconfigured"]) == {"openai"}


def test_a_model_with_a_configured_fallback_route_is_listed_under_it(tmp_path, monkeypatch):
    table = tmp_path / "models.json"
    table.write_text('{"models": {"duo": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"},'
                     ' {"provider": "echo", "model": "echo"}]}}}')
    app = make_app(tmp_path, {"model_table_path": str(table)})
    assert listed(app)["duo"] == "echo"


def test_readiness_is_unavailable_when_no_provider_can_answer(tmp_path):
    app = make_app(tmp_path, {"disable_plugins": ["echo_provider"]})
    ready = app.test_client().get(READY)
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
