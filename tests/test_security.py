"""The security list, one test (or more) per item. Items already proven elsewhere are named here
and not repeated:

1. no/malformed/unknown/revoked/expired key -> 401, upstream never called: here (and the 401s
   alone in tests/test_errors.py, tests/test_keys.py).
2. key in a query string refused: tests/test_keys.py::test_key_in_query_string_is_not_accepted.
3. wrong permission 403: tests/test_keys.py::test_wrong_permission_is_403; admin routes under every
   method 403: here, for every route under /api/v1/admin the app serves (keys in detail:
   tests/test_admin_keys.py::test_every_method_needs_the_admin_permission).
4. another user's usage or key -> 404: tests/test_usage_api.py::test_bola_*.
5. fields a caller may not set: key bodies in tests/test_admin_keys.py::test_*_refuses_bad_or_forbidden_fields;
   completion bodies here.
6. upstream URL fields in bodies -> 400, configured upstreams https or allowed hosts: here.
7. oversized body 413: tests/test_errors.py::test_body_over_the_limit_is_413; max_tokens over the tier cap:
   tests/test_ratelimit.py; too many messages, over-long content: here.
8. catalog text only inside the delimited data block: tests/test_context_injection.py
   (test_the_exact_messages_sent_upstream_quote_the_injection_attempt_as_data,
   test_markup_in_catalog_text_cannot_close_the_block).
9. errors never carry a stack trace, provider URL, provider key or internal hostname: here.
10. debug off in non-dev stages, CORS never * with credentials, unknown methods 405: here.
11. no key, pepper or provider secret in any log line under the whole suite: tests/conftest.py
    (``_no_secret_in_any_log_line``), plus tests/test_keys.py and tests/test_secrets.py.
12. security headers on every answer: here.
"""
from __future__ import annotations

import socket
import time

import pytest

from gateway.errors import ConfigError
from gateway.testing import issue_key, make_app
from tests.fakes.openai_server import Scripted
from tests.test_errors import assert_envelope

CHAT = "/v1/chat/completions"
UPSTREAM_SECRET = "sk-test-upstream-secret-0123456789"


def chat_body(**fields):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], **fields}


# 1 ------------------------------------------------------------------------------------------

def test_every_kind_of_bad_key_is_401_and_the_upstream_is_never_called(openai_app, fake_openai):
    gateway = openai_app.extensions["gateway"]
    client = openai_app.test_client()
    revoked = issue_key(openai_app, "rita")
    gateway.store.set_key_active(revoked.split("_")[2], False)
    expired = issue_key(openai_app, "eve", expires_at=time.time() - 1)
    valid = issue_key(openai_app, "val")
    unknown = valid.replace(valid.split("_")[2], "0" * 16)
    wrong_secret = valid[:-4] + "abcd"
    attempts = {
        "none": {}, "empty": {"X-API-Key": ""}, "malformed": {"X-API-Key": "not-a-key"},
        "malformed bearer": {"Authorization": "Bearer gw_"}, "basic scheme": {"Authorization": f"Basic {valid}"},
        "unknown": {"X-API-Key": unknown}, "wrong secret": {"Authorization": f"Bearer {wrong_secret}"},
        "revoked": {"X-API-Key": revoked}, "expired": {"X-API-Key": expired},
    }
    for name, headers in attempts.items():
        response = client.post(CHAT, json=chat_body(), headers=headers)
        assert response.status_code == 401, name
        assert response.get_json()["error"]["type"] == "authentication_error", name
    assert fake_openai.requests == []
    assert client.post(CHAT, json=chat_body(), headers={"X-API-Key": valid}).status_code == 200
    assert len(fake_openai.requests) == 1  # the same route does reach the upstream with a good key


# 3 ------------------------------------------------------------------------------------------

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND")


def admin_paths(app) -> list[str]:
    """Every route under /api/v1/admin the app serves, with its parameters filled in."""
    return sorted({rule.rule.replace("<key_id>", "k1").replace("<product_id>", "p1")
                   for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/admin")})


def test_every_admin_route_under_every_method_is_403_for_a_non_admin_key(app, client):
    user = issue_key(app, "mallory", permissions=("completions", "mcp", "health"))
    paths = admin_paths(app)
    assert len(paths) >= 6
    for path in [*paths, "/api/v1/admin", "/api/v1/admin/no-such-route"]:
        for method in ALL_METHODS:
            response = client.open(path, method=method, headers={"X-API-Key": user}, json={"user_id": "mallory"})
            assert response.status_code == 403, (method, path, response.status_code)
            if method != "HEAD":
                assert response.get_json()["error"]["code"] == "permission_denied"
            no_key = client.open(path, method=method, json={})
            assert no_key.status_code == 401, (method, path)


# 5 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("tier", "enterprise"), ("owner", "root"), ("user_id", "root"), ("key_hash", "0" * 64),
    ("api_key_id", "k1"), ("permissions", ["admin"]), ("cost", 0),
])
def test_a_completion_cannot_set_identity_or_accounting_fields(app, client, field, value):
    """Fields the gateway does not read pass on to the upstream; none of them changes who is
    calling or what is recorded."""
    key = issue_key(app, user="alice", tier="free")
    response = client.post(CHAT, json={**chat_body(model="echo"), field: value}, headers={"X-API-Key": key})
    assert response.status_code == 200
    record = app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.user_id, record.tier, record.status) == ("alice", "free", 200)
    assert record.api_key_id != "k1" and not app.extensions["gateway"].store.records_for_user("root")


# 6 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, where", [
    ({"base_url": "http://169.254.169.254/latest"}, "base_url"),
    ({"api_base": "http://10.0.0.1"}, "api_base"),
    ({"metadata": {"base_url": "http://127.0.0.1:6379"}}, "metadata.base_url"),
    ({"metadata": {"extra": {"provider": {"api_base": "http://internal"}}}}, "metadata.extra.provider.api_base"),
    ({"metadata": {"hops": [{"azure_endpoint": "https://x"}]}}, "metadata.hops[0].azure_endpoint"),
    ({"stream_options": {"endpoint_url": "http://internal"}}, "stream_options.endpoint_url"),
    ({"messages": [{"role": "user", "content": "hi", "base_url": "http://internal"}]}, "messages[0].base_url"),
])
@pytest.mark.parametrize("path", [CHAT, "/api/v1/completions"])
def test_upstream_url_fields_anywhere_in_a_body_are_400(openai_app, fake_openai, extra, where, path):
    key = issue_key(openai_app)
    response = openai_app.test_client().post(path, json={**chat_body(), **extra}, headers={"X-API-Key": key})
    error = assert_envelope(response, 400, "upstream_url_refused")
    assert where in error["message"]
    assert fake_openai.requests == []


def test_a_tool_may_still_take_a_base_url_argument(app, client):
    """The caller's own data (a tool's parameter schema, message text) is not an option."""
    key = issue_key(app)
    tool = {"type": "function", "function": {"name": "fetch", "parameters": {
        "type": "object", "properties": {"base_url": {"type": "string"}}}}}
    response = client.post(CHAT, headers={"X-API-Key": key}, json=chat_body(
        model="echo", tools=[tool], messages=[{"role": "user", "content": "set base_url to x"}]))
    assert response.status_code == 200, response.get_json()


def app_with_upstream(tmp_path, monkeypatch, url: str, **settings):
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    return make_app(tmp_path, {"key_pepper": "p" * 20, **settings})


@pytest.mark.parametrize("url, settings", [
    ("http://127.0.0.1:9/v1", {"stage": "staging"}),
    ("http://localhost:9/v1", {"stage": "prod"}),
    ("http://api.example.com/v1", {"stage": "dev"}),
    ("https://169.254.169.254/v1", {"stage": "prod"}),
    ("https://10.1.2.3/v1", {"stage": "dev"}),
    ("ftp://api.example.com/v1", {"stage": "dev"}),
])
def test_configured_upstreams_must_be_https_public_or_allowed(tmp_path, monkeypatch, url, settings):
    with pytest.raises(ConfigError, match="openai_provider openai base_url"):
        app_with_upstream(tmp_path, monkeypatch, url, **settings)


@pytest.mark.parametrize("url, settings", [
    ("https://api.openai.com/v1", {"stage": "prod"}),
    ("http://127.0.0.1:9/v1", {"stage": "dev"}),
    ("http://ollama.internal:11434/v1", {"stage": "prod", "allowed_upstream_hosts": "ollama.internal"}),
    ("http://127.0.0.1:9/v1", {"stage": "staging", "allowed_upstream_hosts": ["127.0.0.1"]}),
])
def test_allowed_upstreams_start(tmp_path, monkeypatch, url, settings):
    app = app_with_upstream(tmp_path, monkeypatch, url, **settings)
    assert "openai" in app.extensions["gateway"].providers


def test_bedrock_endpoint_override_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="bedrock_provider AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        make_app(tmp_path, {"stage": "prod", "key_pepper": "p" * 20})


# 7 ------------------------------------------------------------------------------------------

def test_too_many_messages_is_400(tmp_path, gateway_environment):
    app = make_app(tmp_path, {"max_messages": 3})
    key = issue_key(app)
    messages = [{"role": "user", "content": str(n)} for n in range(4)]
    response = app.test_client().post(CHAT, json=chat_body(model="echo", messages=messages),
                                      headers={"X-API-Key": key})
    assert "limit is 3" in assert_envelope(response, 400, "too_many_messages")["message"]
    assert app.test_client().post(CHAT, json=chat_body(model="echo", messages=messages[:3]),
                                  headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("content", ["x" * 101,
                                     [{"type": "text", "text": "x" * 60}, {"type": "text", "text": "y" * 60}]])
def test_over_long_content_is_400(tmp_path, gateway_environment, content):
    app = make_app(tmp_path, {"max_message_chars": 100})
    key = issue_key(app)
    messages = [{"role": "system", "content": "short"}, {"role": "user", "content": content}]
    response = app.test_client().post(CHAT, json=chat_body(model="echo", messages=messages),
                                      headers={"X-API-Key": key})
    assert "messages[1].content" in assert_envelope(response, 400, "content_too_long")["message"]


def test_the_document_states_the_limits(tmp_path, gateway_environment):
    app = make_app(tmp_path, {"max_messages": 7, "max_message_chars": 99})
    request = app.test_client().get("/openapi.json").get_json()["components"]["schemas"]["ChatCompletionRequest"]
    assert request["properties"]["messages"]["maxItems"] == 7
    assert request["properties"]["max_tokens"]["maximum"] == 5_000_000  # the largest tier's cap


# 9 ------------------------------------------------------------------------------------------

def test_errors_never_carry_a_trace_upstream_url_key_or_hostname(upstreams_app, fake_openai, fake_bedrock):
    app = upstreams_app({"retry_attempts": 1, "provider_timeout": 0.5, "circuit_breaker_failure_threshold": 100})
    key = issue_key(app)
    client = app.test_client()
    fake_openai.push(
        Scripted(status=500, body={"error": {"message": "boom"}}), Scripted(status=500, body="<html>oops</html>"),
        Scripted(status=401, body={"error": {"message": "bad key"}}),
        Scripted(delay=2), Scripted(delay=2),
        Scripted(status=200, body="{not json"), Scripted(status=200, body="{not json"),
        Scripted(events=[{"choices": []}] * 3, reset_after=0), Scripted(events=[{"choices": []}] * 3, reset_after=0))
    fake_bedrock.push(*[Scripted(status=500, body={"message": "internal"}, headers={
        "x-amzn-ErrorType": "InternalServerException:http://internal.amazon.com/coral/"})] * 2)
    bodies = [client.post(CHAT, json=chat_body(), headers={"X-API-Key": key}) for _ in range(5)]
    bodies.append(client.post(CHAT, json=chat_body(model="bedrock/claude-3-haiku"), headers={"X-API-Key": key}))
    statuses = [response.status_code for response in bodies]
    assert all(status >= 500 for status in statuses), statuses
    forbidden = [fake_openai.url, fake_openai.base_url, fake_bedrock.base_url, UPSTREAM_SECRET, "Traceback",
                 'File "', socket.gethostname(), "internal.amazon.com", "127.0.0.1"]
    for response in bodies:
        text = response.get_data(as_text=True)
        assert response.get_json()["error"]["message"]
        assert [word for word in forbidden if word and word in text] == [], text


# 10 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["staging", "prod"])
def test_debug_is_off_in_every_non_dev_stage(tmp_path, gateway_environment, monkeypatch, stage):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_app(tmp_path, {"stage": stage, "key_pepper": "p" * 20})
    assert app.debug is False and app.config["PROPAGATE_EXCEPTIONS"] is not True


@pytest.mark.parametrize("origins", ["https://shop.example", "*"])
def test_cors_never_allows_credentials(tmp_path, gateway_environment, origins):
    app = make_app(tmp_path, {"cors_origins": origins})
    response = app.test_client().options(CHAT, headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key, Content-Type"})
    allowed = response.headers.get("Access-Control-Allow-Origin")
    assert allowed in ("https://shop.example", "*")
    assert response.headers.get("Access-Control-Allow-Credentials") is None


def test_no_cors_headers_without_configured_origins(client):
    response = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("method", ["PROPFIND", "TRACE", "FOO", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [CHAT, "/v1/models", "/api/v1/completions", "/health", "/openapi.json"])
def test_unknown_methods_are_405(client, method, path):
    response = client.open(path, method=method)
    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


# 12 -----------------------------------------------------------------------------------------

def test_security_headers_on_every_answer(app, client):
    key = issue_key(app, "hal", permissions=("completions", "admin", "mcp"))
    auth = {"X-API-Key": key}
    answers = {
        "health": client.get("/health"), "ready": client.get("/api/v1/health/ready"),
        "openapi": client.get("/openapi.json"), "dashboard": client.get("/dashboard"),
        "completion": client.post(CHAT, json=chat_body(model="echo"), headers=auth),
        "stream": client.post(CHAT, json=chat_body(model="echo", stream=True), headers=auth),
        "models": client.get("/v1/models", headers=auth), "usage": client.get("/api/v1/usage", headers=auth),
        "keys": client.get("/api/v1/admin/keys", headers=auth),
        "mcp": client.post("/mcp", headers=auth, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        "401": client.get("/v1/models"), "403": client.get("/api/v1/admin/keys", headers={
            "X-API-Key": issue_key(app, "low")}),
        "404": client.get("/nowhere"), "405": client.delete("/health"),
        "413": client.post(CHAT, data=b"x" * (2 * 1024 * 1024), headers=auth, content_type="application/json"),
        "415": client.post(CHAT, data="x", headers=auth, content_type="text/plain"),
    }
    for name, response in answers.items():
        response.get_data()
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        assert response.headers.get("X-Correlation-ID"), name
        if name not in ("dashboard",):  # the public page holds no data
            assert "no-store" in response.headers.get("Cache-Control", ""), name
