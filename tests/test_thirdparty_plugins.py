"""The built-in ``apikey`` and ``mcp`` plugins replaced by third-party ones that use only the documented
hooks (``tests/thirdparty``): the gateway serves their keys, routes, switches and OpenAPI document."""
from __future__ import annotations

import openai
import pytest
from openapi_spec_validator import validate

from gateway import authorizer
from gateway.metrics import known_dimensions
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app, serve

REPLACED = {"disable_plugins": ["apikey", "catalog"],
            "plugins": ["tests.thirdparty.token_auth", "tests.thirdparty.hints"]}
CHAT = "/v1/chat/completions"
NATIVE = "/api/v1/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def provider():
    return FakeProvider()


@pytest.fixture
def replaced(tmp_path, provider):
    """An app without ``apikey`` and ``mcp``, with the third-party plugins and a scripted provider."""
    return make_app(tmp_path, {**REPLACED, "cors_origins": ["https://shop.example"]},
                    plugins=(ProviderPlugin(provider),))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_only_the_replacements_are_loaded_and_their_permissions_are_the_apps(replaced):
    gateway = replaced.extensions["gateway"]
    names = {name for name, plugin in gateway.pm.list_name_plugin() if plugin is not None}  # None: blocked
    assert {"apikey", "catalog"}.isdisjoint(names)
    assert {"tests.thirdparty.token_auth", "tests.thirdparty.hints"} <= names
    assert sorted(gateway.permissions) == ["admin", "completions", "health", "hints", "tokens"]


def test_their_tokens_are_keys_for_the_openai_sdk_over_http(replaced, provider):
    token = issue_key(replaced, "carol")  # gateway.testing asks the plugins (gateway_issue_key)
    assert token.startswith("tok-")
    with serve(replaced) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
        answer = client.chat.completions.create(model="fake-model", messages=MESSAGES)
        assert answer.choices[0].message.content == "fake"
        for wrong in (token[:-3] + "xyz", "gw_test_0123456789abcdef_" + "s" * 40):  # the built-in's format too
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key=wrong, max_retries=0).models.list()
    assert provider.calls[0].messages == MESSAGES


def test_their_routes_issue_tokens_under_the_cores_admin_guard(replaced):
    client = replaced.test_client()
    admin = issue_key(replaced, "root", permissions=("admin",))
    user = issue_key(replaced, "dave")
    body = {"user_id": "erin", "permissions": ["completions", "tokens"]}
    assert client.post("/api/v1/admin/tokens", json=body, headers=bearer(user)).status_code == 403
    created = client.post("/api/v1/admin/tokens", json=body, headers=bearer(admin))
    assert created.status_code == 201, created.get_json()
    erin = created.get_json()["token"]
    me = client.get("/api/v1/tokens/me", headers={"X-Token": erin})
    assert me.status_code == 200 and me.get_json()["permissions"] == ["completions", "tokens"]
    assert client.get("/api/v1/tokens/me", headers={"X-Token": user}).status_code == 403  # lacks "tokens"
    refused = client.post("/api/v1/admin/tokens", json={"user_id": "x", "permissions": ["mcp"]}, headers=bearer(admin))
    assert refused.status_code == 400  # "mcp" was the disabled plugin's permission
    assert client.get("/api/v1/admin/keys", headers=bearer(admin)).status_code == 404  # apikey's routes are gone
    assert client.post("/mcp", headers=bearer(admin), json={}).status_code == 404
    assert client.get("/hints", headers=bearer(issue_key(replaced, "fay", permissions=("hints",)))).status_code == 200


def test_their_request_switch_answer_field_and_header(replaced, provider):
    client = replaced.test_client()
    token = issue_key(replaced)
    native = client.post(NATIVE, headers=bearer(token), json={
        "model": "fake-model", "messages": MESSAGES, "hints": {"enabled": True, "style": "long"}})
    assert native.status_code == 200, native.get_json()
    assert native.get_json()["hints"] == {"style": "long"} and "mcp_context" not in native.get_json()
    assert native.headers["X-Hints-Style"] == "long"
    assert provider.calls[-1].messages[0] == {"role": "system", "content": "Answer in a long style."}
    assert "hints" not in provider.calls[-1].parameters

    off = client.post(NATIVE, headers=bearer(token), json={"model": "fake-model", "messages": MESSAGES})
    assert off.get_json()["hints"] is None and "X-Hints-Style" not in off.headers

    chat = client.post(CHAT, headers=bearer(token), json={
        "model": "fake-model", "messages": MESSAGES, "metadata": {"hints": "on", "trace": "t-1"}})
    assert chat.headers["X-Hints-Style"] == "short"
    assert provider.calls[-1].parameters["metadata"] == {"trace": "t-1"}  # the switch is not sent upstream

    bad = client.post(CHAT, headers=bearer(token), json={"model": "fake-model", "messages": MESSAGES, "hints": "yes"})
    assert bad.status_code == 400 and bad.get_json()["error"]["param"].startswith("hints")

    unknown = client.post(NATIVE, headers=bearer(token), json={
        "model": "fake-model", "messages": MESSAGES, "mcp": {"enabled": True}})
    assert unknown.status_code == 200 and provider.calls[-1].parameters["mcp"] == {"enabled": True}


def test_their_switch_by_header_through_the_openai_sdk(replaced, provider):
    with serve(replaced) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=issue_key(replaced), max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES,
                                                               extra_headers={"X-Hints": "on"})
    assert raw.headers["X-Hints-Style"] == "short"
    assert provider.calls[-1].messages[0]["content"] == "Answer in a short style."


def test_the_openapi_document_is_assembled_from_their_declarations(replaced):
    document = replaced.test_client().get("/openapi.json").get_json()
    validate(document)
    paths = set(document["paths"])
    assert {"/api/v1/admin/tokens", "/api/v1/tokens/me", "/hints"} <= paths
    assert not {"/mcp", "/api/v1/admin/keys", "/api/v1/admin/catalog/products/{product_id}"} & paths
    schemas = document["components"]["schemas"]
    assert schemas["NativeCompletionRequest"]["properties"]["hints"]["properties"]["style"]["enum"] == ["short", "long"]
    assert "hints" in schemas["ChatCompletionRequest"]["properties"]
    assert "mcp" not in schemas["NativeCompletionRequest"]["properties"]
    assert "hints" in schemas["NativeCompletionAnswer"]["properties"]
    assert "mcp_context" not in schemas["NativeCompletionAnswer"]["properties"]
    headers = document["paths"][NATIVE]["post"]["responses"]["200"]["headers"]
    assert "X-Hints-Style" in headers and not any(name.startswith("X-Gateway-MCP") for name in headers)
    assert schemas["TokenRequest"]["required"] == ["user_id"]


def test_browsers_may_read_their_headers_and_not_the_disabled_ones(replaced):
    answer = replaced.test_client().post(CHAT, headers={**bearer(issue_key(replaced)), "Origin": "https://shop.example",
                                                        "X-Hints": "on"},
                                         json={"model": "fake-model", "messages": MESSAGES})
    exposed = {name.strip() for name in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert "X-Hints-Style" in exposed and "X-Correlation-ID" in exposed
    assert not {"X-Gateway-MCP-Status", "X-Gateway-MCP-Products"} & exposed


def test_the_lambda_authorizer_asks_them_too(replaced):
    gateway = replaced.extensions["gateway"]
    token = issue_key(replaced, "gina", tier="basic")
    event = {"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:a/dev/POST/v1/chat/completions",
             "path": CHAT, "httpMethod": "POST", "requestContext": {"requestId": "r-1"}}
    allowed = authorizer.authorize(gateway, {**event, "headers": {  # a POST's headers, as API Gateway passes them
        "X-Token": token, "Content-Type": "application/json", "Content-Length": "52", "Host": "a.example"}})
    assert allowed["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert (allowed["context"]["userId"], allowed["context"]["tier"]) == ("gina", "basic")
    denied = authorizer.authorize(gateway, {**event, "headers": {"X-Token": token + "x"}})
    assert denied["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    environ = {"lambda.event": {"requestContext": {"authorizer": allowed["context"]}}}
    assert authorizer.caller_from_authorizer(environ).user_id == "gina"


def test_the_core_enforces_their_callers_allowed_models(replaced):
    client = replaced.test_client()
    token = issue_key(replaced, allowed_models=["echo"])
    refused = client.post(CHAT, headers=bearer(token), json={"model": "fake-model", "messages": MESSAGES})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "model_not_allowed"
    embeddings = client.post("/v1/embeddings", headers=bearer(token), json={"model": "fake-model", "input": "x"})
    assert embeddings.status_code == 403 and embeddings.get_json()["error"]["code"] == "model_not_allowed"
    assert client.post(CHAT, headers=bearer(token), json={"model": "echo", "messages": MESSAGES}).status_code == 200


def test_their_recorded_models_are_metric_dimensions(replaced):
    known = known_dimensions(replaced.extensions["gateway"])
    assert (known.provider("hints"), known.model("hints:lookup")) == ("hints", "hints:lookup")
    assert (known.provider("mcp"), known.model("mcp:search_products")) == ("unknown", "unknown")
