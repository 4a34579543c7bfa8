"""The Lambda TOKEN authorizer, alone and through Zappa's own handler, with real event shapes."""
from __future__ import annotations

import json
import sys
import time
import uuid

import pytest

from gateway import authorizer
from gateway.testing import issue_key, make_app

METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/POST/v1/chat/completions"


def token_event(token: str) -> dict:
    """The event API Gateway sends a TOKEN authorizer (token_header X-API-Key)."""
    return {"type": "TOKEN", "authorizationToken": token, "methodArn": METHOD_ARN}


def key_id(key: str) -> str:
    return key.split("_")[2]


@pytest.fixture
def lambda_env(tmp_path, monkeypatch):
    """Settings from the environment, as on Lambda; the authorizer's cached app is rebuilt."""
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "gateway.db"))
    authorizer._gateway.cache_clear()
    yield make_app(tmp_path)
    authorizer._gateway.cache_clear()


def test_allow_with_caller_context(lambda_env):
    key = issue_key(lambda_env, "alice", tier="premium", permissions=("completions", "mcp"),
                    requests_per_minute=5, allowed_models=["echo"])
    policy = authorizer.handler(token_event(key), None)
    assert policy["principalId"] == "alice"
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow",
                         "Resource": "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/*/*"}
    assert policy["context"] == {"userId": "alice", "apiKeyId": key_id(key), "tier": "premium",
                                 "permissions": "completions,mcp", "requestsPerMinute": "5",
                                 "allowedModels": '["echo"]'}
    assert all(isinstance(v, str) for v in policy["context"].values())


@pytest.mark.parametrize("make_token", [
    lambda app: "not-a-gateway-key",
    lambda app: "",
    lambda app: issue_key(app)[:-4] + "AAAA",
    lambda app: issue_key(app, expires_at=time.time() - 1),
])
def test_deny_for_bad_keys(lambda_env, make_token):
    policy = authorizer.handler(token_event(make_token(lambda_env)), None)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert "context" not in policy


def test_deny_for_revoked_key(lambda_env):
    key = issue_key(lambda_env)
    lambda_env.extensions["gateway"].store.set_key_active(key_id(key), False)
    assert authorizer.handler(token_event(key))["policyDocument"]["Statement"][0]["Effect"] == "Deny"


@pytest.mark.parametrize("mcp_context", [None, True, False])
def test_context_round_trips_to_the_same_caller(lambda_env, mcp_context):
    from plugins.apikey import verify_key

    key = issue_key(lambda_env, "bob", tier="basic", requests_per_minute=3, requests_per_hour=30,
                    mcp_context=mcp_context)
    caller = verify_key(lambda_env.extensions["gateway"], key)
    assert caller.mcp_context is mcp_context
    context = authorizer.caller_context(caller)
    environ = {"lambda.event": {"requestContext": {"authorizer": {**context, "principalId": "bob"}}}}
    assert authorizer.caller_from_authorizer(environ, key) == caller


@pytest.mark.parametrize("environ", [
    {},
    {"lambda.event": {"requestContext": {}}},
    {"lambda.event": {"requestContext": {"authorizer": {"principalId": "x"}}}},
    {"lambda.event": {"requestContext": {"authorizer": {"userId": "u", "apiKeyId": "other", "tier": "free",
                                                        "permissions": "admin"}}}},
    {"HTTP_X_API_GATEWAY_AUTHORIZER": json.dumps({"userId": "u", "apiKeyId": "k", "tier": "free",
                                                  "permissions": "admin"})},
])
def test_context_is_used_only_from_a_real_lambda_event_for_the_same_key(environ):
    assert authorizer.caller_from_authorizer(environ, "gw_test_k_" + "s" * 40) is None


# Through Zappa's handler

@pytest.fixture
def zappa(tmp_path, monkeypatch, lambda_env):
    """Zappa's LambdaHandler with a settings module as `zappa package` writes it."""
    from zappa.handler import LambdaHandler

    app_module, settings_module = f"zappa_app_{uuid.uuid4().hex[:8]}", f"zappa_settings_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{app_module}.py").write_text("from gateway.app import create_app\napp = create_app()\n")
    (tmp_path / f"{settings_module}.py").write_text(
        f"APP_MODULE = {app_module!r}\nAPP_FUNCTION = 'app'\n"
        "AUTHORIZER_FUNCTION = 'gateway.authorizer.handler'\nAPI_STAGE = 'dev'\nPROJECT_NAME = 'gateway'\n"
        "DEBUG = False\nLOG_LEVEL = 'WARNING'\nENVIRONMENT_VARIABLES = {}\nDJANGO_SETTINGS = None\n"
        "BINARY_SUPPORT = False\nCONTEXT_HEADER_MAPPINGS = {}\nDOMAIN = None\nEXCEPTION_HANDLER = None\n"
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
    policy = handler.handler(token_event(key), None)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"

    store = app.extensions["gateway"].store
    lookups = []
    real_get_key = store.get_key
    monkeypatch.setattr(store, "get_key", lambda kid: lookups.append(kid) or real_get_key(kid))
    answer = handler.handler(proxy_event(key, policy["context"]), None)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["choices"][0]["message"]["content"] == "via lambda"
    assert lookups == []  # the key was not looked up a second time
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
    forged = {"userId": "mallory", "apiKeyId": "someone-else", "tier": "enterprise", "permissions": "admin"}
    bad = handler.handler(proxy_event(key[:-4] + "AAAA", forged), None)
    assert bad["statusCode"] == 401
