"""Every error the gateway answers: status and the one JSON envelope, never HTML or a traceback."""
from __future__ import annotations

import time

import pytest

from gateway.errors import ProviderError, ProviderTimeout
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app

CHAT = "/v1/chat/completions"


def body(**overrides):
    return {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **overrides}


def assert_envelope(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"] and "<html" not in response.get_data(as_text=True)
    assert response.headers["X-Correlation-ID"]
    return error


def test_malformed_json_is_400(client, key):
    response = client.post(CHAT, data="{not json", headers={"X-API-Key": key},
                           content_type="application/json")
    assert_envelope(response, 400, "invalid_json")


def test_json_that_is_not_an_object_is_400(client, key):
    response = client.post(CHAT, json=[1, 2], headers={"X-API-Key": key})
    assert_envelope(response, 400, "invalid_json")


def test_wrong_content_type_is_415(client, key):
    response = client.post(CHAT, data="model=echo", headers={"X-API-Key": key},
                           content_type="application/x-www-form-urlencoded")
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


def test_body_over_the_limit_is_413(tmp_path, gateway_environment):
    app = make_app(tmp_path, {"max_body_bytes": 2048})
    key = issue_key(app)
    big = body(messages=[{"role": "user", "content": "x" * 4096}])
    response = app.test_client().post(CHAT, json=big, headers={"X-API-Key": key})
    error = assert_envelope(response, 413, "request_too_large")
    assert "2048" in error["message"]


def test_default_body_limit_is_one_mebibyte(gateway):
    assert gateway.settings.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize("payload, fields", [
    ({"messages": [{"role": "user", "content": "hi"}]}, ["model"]),
    ({"model": "echo"}, ["messages"]),
    ({"model": "echo", "messages": []}, ["messages"]),
    ({"model": "echo", "messages": [{"role": "wizard", "content": "hi"}]}, ["messages[0].role"]),
    ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, ["messages[0].content"]),
    (body(n=0, max_tokens="x"), ["max_tokens", "n"]),
    (body(stream="yes"), ["stream"]),
])
def test_schema_violation_is_400_naming_the_fields(client, key, payload, fields):
    error = assert_envelope(client.post(CHAT, json=payload, headers={"X-API-Key": key}),
                            400, "invalid_request")
    for name in fields:
        assert name in error["message"]
    assert error["param"] in fields


def test_unknown_model_is_404_model_not_found(client, key):
    error = assert_envelope(client.post(CHAT, json=body(model="no-such-model"),
                                        headers={"X-API-Key": key}), 404, "model_not_found")
    assert "no-such-model" in error["message"] and error["param"] == "model"


def test_unknown_route_is_404(client):
    assert_envelope(client.get("/v2/anything"), 404, "not_found")


def test_wrong_method_is_405_with_allow(client):
    response = client.put(CHAT, json=body())
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_missing_key_is_401(client):
    error = assert_envelope(client.post(CHAT, json=body()), 401, "invalid_api_key")
    assert "X-API-Key" in error["message"]


def test_unauthenticated_caller_gets_401_before_body_errors(client):
    response = client.post(CHAT, data="{broken", content_type="application/json",
                           headers={"X-API-Key": "gw_test_nope_" + "x" * 40})
    assert_envelope(response, 401, "invalid_api_key")


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_unknown_key_is_401(client, key, header):
    forged = key[:-4] + "AAAA"
    value = forged if header == "X-API-Key" else f"Bearer {forged}"
    assert_envelope(client.post(CHAT, json=body(), headers={header: value}), 401, "invalid_api_key")


def test_revoked_key_is_401(app, gateway, client):
    key = issue_key(app)
    key_id = key.split("_")[2]
    gateway.store.set_key_active(key_id, False)
    gateway.state.clear()  # drop the in-process key cache
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 401, "revoked_api_key")


def test_expired_key_is_401(app, client):
    key = issue_key(app, expires_at=time.time() - 1)
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 401, "expired_api_key")


def test_key_without_permission_is_403(app, client):
    key = issue_key(app, permissions=("health",))
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 403, "permission_denied")


def test_rate_limit_is_429_with_retry_after(app, client):
    key = issue_key(app, requests_per_minute=2)
    for _ in range(2):
        assert client.post(CHAT, json=body(), headers={"X-API-Key": key}).status_code == 200
    response = client.post(CHAT, json=body(), headers={"X-API-Key": key})
    assert_envelope(response, 429, "rate_limit_exceeded")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("failure, status, code", [
    (ProviderError("Provider 'fake' answered 500.", retryable=True), 502, "provider_error"),
    (ProviderTimeout("Provider 'fake' did not answer in time."), 504, "provider_timeout"),
])
def test_provider_failure_is_502_or_504(tmp_path, gateway_environment, failure, status, code):
    provider = FakeProvider(outcomes=[failure])
    app = make_app(tmp_path, {"retry_attempts": 0}, plugins=(ProviderPlugin(provider),))
    key = issue_key(app)
    response = app.test_client().post(CHAT, json=body(model="fake-model"), headers={"X-API-Key": key})
    assert_envelope(response, status, code)
    records = app.extensions["gateway"].store.records_for_user("alice")
    assert [(r.status, r.error_code) for r in records] == [(status, code)]


def test_unexpected_exception_is_500_envelope_without_details(tmp_path, gateway_environment):
    class Broken(FakeProvider):
        def complete(self, completion):
            raise RuntimeError("secret internal detail at /srv/internal-host")

    app = make_app(tmp_path, plugins=(ProviderPlugin(Broken()),))
    key = issue_key(app)
    response = app.test_client().post(CHAT, json=body(model="fake-model"), headers={"X-API-Key": key})
    error = assert_envelope(response, 500, "internal_error")
    assert "internal-host" not in error["message"]
    assert response.headers["X-Correlation-ID"] in error["message"]


def test_correlation_id_is_taken_from_the_request(client):
    response = client.get("/health", headers={"X-Correlation-ID": "abc-123"})
    assert response.headers["X-Correlation-ID"] == "abc-123"


@pytest.mark.parametrize("given", ["bad id with spaces", "x" * 200, "<script>"])
def test_bad_correlation_id_is_replaced(client, given):
    response = client.get("/health", headers={"X-Correlation-ID": given})
    assert response.headers["X-Correlation-ID"] != given
    assert len(response.headers["X-Correlation-ID"]) == 32
