"""The Lambda REQUEST authorizer, alone and through Zappa's own handler, with real event shapes."""
from __future__ import annotations

import json
import sys
import time
import uuid

import pytest

from gateway import authorizer
from gateway.metric_names import AUTH_FAILURES
from gateway.testing import issue_key, make_app
from tests.deploy.conftest import ROOT

METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/POST/v1/chat/completions"


def request_event(headers: dict[str, str], path: str = "/v1/chat/completions", method: str = "POST") -> dict:
    """The event API Gateway sends a REQUEST authorizer (api.yaml): the request's headers and path."""
    return {"type": "REQUEST", "methodArn": METHOD_ARN, "resource": "/{proxy+}", "path": path,
            "httpMethod": method, "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": None, "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
            "requestContext": {"stage": "dev", "requestId": "apigw-request-1", "httpMethod": method,
                               "path": f"/dev{path}", "identity": {"sourceIp": "203.0.113.9"}}}


def key_id(key: str) -> str:
    return key.split("_")[2]


def auth_failures(capsys) -> int:
    """AuthFailures values in the EMF lines printed since the last call."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    values = [line[AUTH_FAILURES] for line in lines if AUTH_FAILURES in line]
    return int(sum(sum(v) if isinstance(v, list) else v for v in values))


@pytest.fixture
def app(tmp_path):
    """An app with EMF metrics on, as on Lambda."""
    return make_app(tmp_path, {"metrics_emf": True})


def authorize(app, headers: dict[str, str], **event) -> dict:
    return authorizer.authorize(app.extensions["gateway"], {**request_event(headers), **event})


@pytest.mark.parametrize("header", ["X-API-Key", "x-api-key", "Authorization", "authorization"])
def test_allow_with_caller_context_for_either_header(app, header):
    key = issue_key(app, "alice", tier="premium", permissions=("completions", "mcp"),
                    requests_per_minute=5, allowed_models=["echo"])
    policy = authorize(app, {header: f"Bearer {key}" if header.lower() == "authorization" else key})
    assert policy["principalId"] == "alice"
    (statement,) = policy["policyDocument"]["Statement"]
    # Not cached (TTL 0): the policy allows exactly the method called, nothing else of the API.
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}
    assert policy["context"] == {"userId": "alice", "apiKeyId": key_id(key), "tier": "premium",
                                 "permissions": "completions,mcp", "requestsPerMinute": "5",
                                 "allowedModels": '["echo"]', "correlationId": "apigw-request-1"}
    assert all(isinstance(v, str) for v in policy["context"].values())


def test_correlation_id_is_the_callers_when_the_app_would_accept_it(app):
    key = issue_key(app)
    assert authorize(app, {"X-API-Key": key, "X-Correlation-ID": "order-42"})["context"]["correlationId"] == "order-42"
    spoofed = authorize(app, {"X-API-Key": key, "X-Correlation-ID": 'x", "status": "200'})
    assert spoofed["context"]["correlationId"] == "apigw-request-1"


@pytest.mark.parametrize("make_headers", [
    lambda app: {},
    lambda app: {"X-API-Key": ""},
    lambda app: {"Authorization": "Basic dXNlcjpwYXNz"},
    lambda app: {"X-API-Key": "not-a-gateway-key"},
    lambda app: {"X-API-Key": issue_key(app)[:-4] + "AAAA"},
    lambda app: {"Authorization": "Bearer " + issue_key(app, expires_at=time.time() - 1)},
])
def test_deny_for_missing_or_bad_keys_counts_an_auth_failure(app, capsys, make_headers):
    headers = make_headers(app)
    auth_failures(capsys)
    policy = authorize(app, headers)
    assert policy["principalId"] == "anonymous"
    assert policy["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": METHOD_ARN}]
    assert "context" not in policy
    assert auth_failures(capsys) == 1


def test_deny_for_revoked_key(app, capsys):
    key = issue_key(app)
    app.extensions["gateway"].store.set_key_active(key_id(key), False)
    auth_failures(capsys)
    assert authorize(app, {"Authorization": f"Bearer {key}"})["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert auth_failures(capsys) == 1


def test_allow_counts_nothing_and_never_logs_the_key(app, capsys, caplog):
    key = issue_key(app)
    auth_failures(capsys)
    caplog.set_level("DEBUG")
    assert authorize(app, {"X-API-Key": key})["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    authorize(app, {"X-API-Key": key[:-4] + "AAAA"})
    assert auth_failures(capsys) == 1
    assert key.split("_", 3)[3][:-4] not in caplog.text


@pytest.mark.parametrize("method, path", [("GET", "/health"), ("HEAD", "/api/v1/health/ready"),
                                          ("GET", "/dashboard/static/dashboard.js")])
def test_public_routes_are_allowed_without_a_key_and_count_nothing(app, capsys, method, path):
    auth_failures(capsys)
    policy = authorizer.authorize(app.extensions["gateway"], {**request_event({}), "httpMethod": method,
                                                              "path": path})
    assert policy["principalId"] == "public"
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert policy["context"] == {"correlationId": "apigw-request-1"}  # no caller: the app trusts nothing
    assert auth_failures(capsys) == 0


@pytest.mark.parametrize("event, is_authorizer", [
    (request_event({}), True),
    ({"type": "TOKEN", "authorizationToken": "k", "methodArn": METHOD_ARN}, False),
    ({"httpMethod": "GET", "path": "/health", "requestContext": {}}, False),
    ({"detail-type": "Scheduled Event", "resources": ["arn:x"]}, False),
    ([], False),
])
def test_only_request_authorizer_events_go_to_the_authorizer(event, is_authorizer):
    assert authorizer.is_authorizer_event(event) is is_authorizer


@pytest.mark.parametrize("mcp_context, grounding", [(None, None), (True, "block"), (False, "off")])
def test_context_round_trips_to_the_same_caller(app, mcp_context, grounding):
    from plugins.apikey import verify_key

    key = issue_key(app, "bob", tier="basic", requests_per_minute=3, requests_per_hour=30,
                    mcp_context=mcp_context, concurrent_requests=2, grounding=grounding)
    caller = verify_key(app.extensions["gateway"], key)
    assert caller.attributes.get("mcp_context") is mcp_context
    assert caller.attributes.get("grounding") == grounding
    context = authorizer.caller_context(caller)
    environ = {"lambda.event": {"requestContext": {"authorizer": {**context, "principalId": "bob"}}}}
    assert authorizer.caller_from_authorizer(environ) == caller


@pytest.mark.parametrize("environ", [
    {},
    {"lambda.event": {"requestContext": {}}},
    {"lambda.event": {"requestContext": {"authorizer": {"principalId": "x"}}}},
    {"lambda.event": {"requestContext": {"authorizer": {"correlationId": "c"}}}},  # a public route's
    {"lambda.event": {"requestContext": {"authorizer": {"userId": "u", "apiKeyId": "k", "tier": "free"}}}},
    {"HTTP_X_API_GATEWAY_AUTHORIZER": json.dumps({"userId": "u", "apiKeyId": "k", "tier": "free",
                                                  "permissions": "admin"})},
])
def test_context_is_used_only_from_a_real_lambda_event_with_a_whole_caller(environ):
    assert authorizer.caller_from_authorizer(environ) is None


# Through Zappa's handler

@pytest.fixture
def zappa(tmp_path, monkeypatch):
    """Zappa's LambdaHandler with a settings module as `zappa package` writes it (the authorizer's
    correlation id mapped to the request's X-Correlation-ID header, as zappa_settings.json says)."""
    from zappa.handler import LambdaHandler

    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "gateway.db"))
    monkeypatch.setenv("GATEWAY_REQUEST_LOG_WRITES", "sync")
    mappings = json.loads((ROOT / "zappa_settings.json").read_text())["dev"]["context_header_mappings"]
    app_module, settings_module = f"zappa_app_{uuid.uuid4().hex[:8]}", f"zappa_settings_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{app_module}.py").write_text("from gateway.app import create_app\napp = create_app()\n")
    (tmp_path / f"{settings_module}.py").write_text(
        f"APP_MODULE = {app_module!r}\nAPP_FUNCTION = 'app'\n"
        "API_STAGE = 'dev'\nPROJECT_NAME = 'gateway'\n"
        "DEBUG = False\nLOG_LEVEL = 'WARNING'\nENVIRONMENT_VARIABLES = {}\nDJANGO_SETTINGS = None\n"
        f"BINARY_SUPPORT = False\nCONTEXT_HEADER_MAPPINGS = {mappings!r}\nDOMAIN = None\nEXCEPTION_HANDLER = None\n"
        "AWS_EVENT_MAPPING = {}\nAWS_BOT_EVENT_MAPPING = {}\nCOGNITO_TRIGGER_MAPPING = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(LambdaHandler, "_LambdaHandler__instance", None)
    monkeypatch.setattr(LambdaHandler, "settings", None)
    handler = LambdaHandler(settings_module)
    yield handler, sys.modules[app_module].app
    for name in (app_module, settings_module):
        sys.modules.pop(name, None)


def proxy_event(key: str, authorizer_context: dict | None) -> dict:
    """A REST API (v1) proxy event, as API Gateway sends it after the authorizer allowed it."""
    request_context = {"stage": "dev", "requestId": "r-1", "httpMethod": "POST",
                       "identity": {"sourceIp": "203.0.113.9"}}
    if authorizer_context is not None:
        request_context["authorizer"] = {**authorizer_context, "principalId": "alice",
                                         "integrationLatency": 41}
    return {"resource": "/{proxy+}", "path": "/v1/chat/completions", "httpMethod": "POST",
            "headers": {"Host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
                        "Content-Type": "application/json", "X-API-Key": key,
                        "X-Forwarded-For": "203.0.113.9, 130.176.0.1"},
            "multiValueHeaders": None, "queryStringParameters": None, "pathParameters": {"proxy": "v1"},
            "stageVariables": None, "requestContext": request_context, "isBase64Encoded": False,
            "body": json.dumps({"model": "echo", "messages": [{"role": "user", "content": "via lambda"}]})}


def test_through_zappa_the_app_trusts_the_authorizer_context(zappa, monkeypatch):
    handler, app = zappa
    key = issue_key(app, "alice", requests_per_minute=1)
    policy = authorizer.authorize(app.extensions["gateway"], request_event({"X-API-Key": key,
                                                                             "X-Correlation-ID": "trace-7"}))
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"

    store = app.extensions["gateway"].store
    lookups = []
    real_get_key = store.get_key
    monkeypatch.setattr(store, "get_key", lambda kid: lookups.append(kid) or real_get_key(kid))
    answer = handler.handler(proxy_event(key, policy["context"]), None)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["choices"][0]["message"]["content"] == "via lambda"
    assert lookups == []  # the key was not looked up a second time
    assert answer["headers"]["X-Correlation-ID"] == policy["context"]["correlationId"] == "trace-7"
    assert answer["headers"]["X-RateLimit-Limit"] == "1"
    limited = handler.handler(proxy_event(key, policy["context"]), None)
    assert limited["statusCode"] == 429 and json.loads(limited["body"])["error"]["code"] == "rate_limit_exceeded"


def test_through_zappa_without_authorizer_context_the_key_is_checked(zappa, monkeypatch):
    handler, app = zappa
    key = issue_key(app, "alice")
    store = app.extensions["gateway"].store
    lookups = []
    real_get_key = store.get_key
    monkeypatch.setattr(store, "get_key", lambda kid: lookups.append(kid) or real_get_key(kid))
    assert handler.handler(proxy_event(key, None), None)["statusCode"] == 200
    assert lookups == [key_id(key)]
    public_route_context = {"correlationId": "r-1"}  # no caller in it: the app asks the auth plugins
    bad = handler.handler(proxy_event(key[:-4] + "AAAA", public_route_context), None)
    assert bad["statusCode"] == 401
