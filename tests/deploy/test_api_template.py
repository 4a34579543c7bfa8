"""api.yaml, and what the other templates owe a first real deploy: Bedrock access for every model the
table routes there, log groups with retention made before the function, tracing, dashboards.

(The API is also created in moto and driven end to end in test_first_deploy.py.)
"""
from __future__ import annotations

import json
import re

import pytest

from gateway.models import DEFAULT_MODELS
from tests.deploy.conftest import resources_of, template

#: Prefixes of Bedrock's cross-region inference profiles (``us.anthropic…``): the model id follows.
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")


def _methods() -> dict[str, dict]:
    return {name: body["Properties"] for name, body in resources_of(template("api"), "AWS::ApiGateway::Method").items()}


def test_authorizer_is_request_type_uncached_and_needs_no_identity_source():
    [authorizer] = resources_of(template("api"), "AWS::ApiGateway::Authorizer").values()
    properties = authorizer["Properties"]
    assert properties["Type"] == "REQUEST"  # sees every header: X-API-Key and Authorization: Bearer
    # No identity source: a request without either header still reaches the authorizer (and is counted);
    # TTL 0: a revoked key is refused within the app's key_cache_ttl, and no identity source is required.
    assert properties["AuthorizerResultTtlInSeconds"] == 0 and "IdentitySource" not in properties


def test_every_method_but_the_preflight_is_behind_the_authorizer_and_proxied_to_the_function():
    methods = _methods()
    assert {(m["HttpMethod"], m["AuthorizationType"]) for m in methods.values()} == {
        ("ANY", "CUSTOM"), ("OPTIONS", "NONE")}
    for name, method in methods.items():
        assert method["Integration"]["Type"] == "AWS_PROXY", name
        assert method["Integration"]["IntegrationHttpMethod"] == "POST", name
        if method["AuthorizationType"] == "CUSTOM":
            assert method["AuthorizerId"] == {"Ref": "KeyAuthorizer"}, name


def test_the_authorizers_deny_is_the_contracts_401_envelope():
    responses = {r["Properties"]["ResponseType"]: r["Properties"]
                 for r in resources_of(template("api"), "AWS::ApiGateway::GatewayResponse").values()}
    assert set(responses) == {"ACCESS_DENIED", "AUTHORIZER_FAILURE", "DEFAULT_4XX", "DEFAULT_5XX"}
    denied = responses["ACCESS_DENIED"]
    assert denied["StatusCode"] == "401"
    error = json.loads(denied["ResponseTemplates"]["application/json"])["error"]
    assert (error["type"], error["code"], error["param"]) == ("authentication_error", "invalid_api_key", None)
    assert "X-API-Key" in error["message"] and "Authorization: Bearer" in error["message"]
    for response in responses.values():
        assert response["ResponseParameters"]["gatewayresponse.header.x-request-id"] == "context.requestId"


def test_access_logs_are_json_with_the_correlation_id_and_tracing_is_on_outside_dev():
    api = template("api")
    [stage] = resources_of(api, "AWS::ApiGateway::Stage").values()
    access = stage["Properties"]["AccessLogSetting"]
    line = json.loads(re.sub(r"\$context\.[\w.]+", "v", access["Format"]))  # one JSON object per request
    assert {"requestId", "correlationId", "status", "path", "principalId"} <= set(line)
    assert '"correlationId":"$context.authorizer.correlationId"' in access["Format"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["AccessLogs", "Arn"]}
    assert stage["Properties"]["TracingEnabled"] == {"Fn::If": ["Tracing", True, False]}
    assert api["Conditions"]["Tracing"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "Stage"}, "dev"]}]}


@pytest.mark.parametrize("name, log_group", [("api", "/aws/apigateway/ai-gateway-${Stage}/access"),
                                             ("observability", "/aws/lambda/${Name}")])
def test_log_groups_have_a_retention(name, log_group):
    loaded = template(name)
    [group] = resources_of(loaded, "AWS::Logs::LogGroup").values()
    given = group["Properties"]["LogGroupName"]
    assert (given["Fn::Sub"] if isinstance(given["Fn::Sub"], str) else given["Fn::Sub"][0]) == log_group
    retention = loaded["Parameters"][group["Properties"]["RetentionInDays"]["Ref"]]
    assert retention["Default"] in retention["AllowedValues"] and retention["Default"] >= 7


def test_routes_the_authorizer_lets_through_without_a_key_are_the_apps_public_ones(tmp_path):
    from gateway.authorizer import PUBLIC_PATHS, is_public
    from gateway.testing import make_app

    client = make_app(tmp_path).test_client()
    health = {rule.rule for rule in client.application.url_map.iter_rules() if rule.endpoint.startswith("health.")}
    assert health <= PUBLIC_PATHS
    for path in sorted(PUBLIC_PATHS) + ["/dashboard/static/dashboard.js"]:
        assert is_public({"httpMethod": "GET", "path": path}), path
        assert client.get(path).status_code == 200, path  # the app serves it without a key
    for method, path in (("POST", "/health"), ("GET", "/v1/models"), ("GET", "/api/v1/usage"),
                         ("GET", "/dashboard/static/../../v1/models"), ("GET", "/health/")):
        assert not is_public({"httpMethod": method, "path": path}), (method, path)
    assert client.get("/v1/models").status_code == 401


def _bedrock_upstreams() -> set[str]:
    return {route.upstream for spec in DEFAULT_MODELS for route in spec.routes if route.provider == "bedrock"}


def test_role_allows_every_model_the_table_routes_to_bedrock_and_its_inference_profiles():
    [role] = resources_of(template("access"), "AWS::IAM::Role").values()
    [policy] = role["Properties"]["Policies"]
    [statement] = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "InvokeTableModels"]
    granted = set()
    for resource in statement["Resource"]:
        granted.add(resource["Fn::Sub"])
    upstreams = _bedrock_upstreams()
    profiles = {u for u in upstreams if u.startswith(PROFILE_PREFIXES)}
    models = {u for u in upstreams - profiles} | {p.split(".", 1)[1] for p in profiles}
    assert len(upstreams) == 14 and profiles == {"us.anthropic.claude-3-5-haiku-20241022-v1:0"}
    assert granted == (
        {f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{m}" for m in models}
        | {f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/{p}"
           for p in profiles})
    # Nothing names a region: the profile's is the stack's, where the function runs and calls Bedrock.
    assert "us-east-1" not in json.dumps(template("access"))


def test_dashboards_show_lambda_duration_dynamodb_capacity_and_api_requests():
    [operational] = [body for body in resources_of(template("observability"), "AWS::CloudWatch::Dashboard").values()
                     if body["Properties"]["DashboardName"]["Fn::Sub"].endswith("-operational")]
    text = json.dumps(operational)
    for metric in ('\\"AWS/Lambda\\", \\"Duration\\"', '\\"ConsumedReadCapacityUnits\\"',
                   '\\"ConsumedWriteCapacityUnits\\"', '\\"AWS/ApiGateway\\", \\"Count\\"'):
        assert metric in text, metric
