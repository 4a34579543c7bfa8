"""A first deploy, end to end: the stacks in a moto server in the guide's order, the built package as the
function, API Gateway REST v1 events through api.yaml's authorizer.

docs/deploy.md's order: security, data, access, parameters, observability, then ``zappa deploy`` (here:
the function created in moto's Lambda from ``dist/ai-gateway-dev.zip`` with the settings Zappa would
give it), then api (waf comes last and moto has no WAFv2). The function runs in one long-lived process
from the unzipped package and the runtime's boto3 (``python -S``, as on Lambda), with the dev stage's
own environment: DynamoDB tables, SSM parameters and the secret, all in moto. moto's CloudFormation
skips Secrets Manager secrets, so the secret is created as security.yaml's ``GenerateSecretString``
would make it.
"""
from __future__ import annotations

import ast
import json
import secrets
import time
import zipfile
from pathlib import Path

import pytest

from gateway.metric_names import AUTH_FAILURES, NAMESPACE, REQUESTS
from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS
from tests.deploy.api_gateway import LambdaContainer, RestApi
from tests.deploy.conftest import STAGE, TEMPLATES, resources_of, template
from tests.deploy.lambda_harness import create_key_for, function_environment, stage_setting
from tests.deploy.package import built_package, lambda_layout
from tests.fakes import servers

GUIDE_ORDER = ("security", "data", "access", "parameters", "observability")
ORIGIN = "https://app.example.com"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "Hello through API Gateway"}]}
#: The revocation bound the test holds the deployment to: the stage's key_cache_ttl (5 s by default) is
#: what a revoked key may still be accepted for; the test runs the same mechanism with 1 s.
KEY_CACHE_TTL = 1.0


def _create_stack(cloudformation, name: str, **parameters: str) -> dict[str, str]:
    cloudformation.create_stack(
        StackName=f"ai-gateway-{STAGE}-{name}", TemplateBody=(TEMPLATES / f"{name}.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {"Stage": STAGE, **parameters}.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cloudformation.describe_stacks(StackName=f"ai-gateway-{STAGE}-{name}")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", (name, stack.get("StackStatusReason"))
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _create_secret_as_security_yaml_would(secretsmanager) -> None:
    [secret] = resources_of(template("security"), "AWS::SecretsManager::Secret").values()
    generated = secret["Properties"]["GenerateSecretString"]
    value = {**json.loads(generated["SecretStringTemplate"]),
             generated["GenerateStringKey"]: secrets.token_hex(generated["PasswordLength"] // 2)}
    secretsmanager.create_secret(Name=secret["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", STAGE),
                                 SecretString=json.dumps(value))


def _deploy_function(lambda_client, package: Path, role_arn: str) -> None:
    """What ``zappa deploy`` does for the function (apigateway_enabled is false: it makes no API)."""
    lambda_client.create_function(
        FunctionName=f"ai-gateway-{STAGE}", Runtime=stage_setting(STAGE, "runtime"), Role=role_arn,
        Handler=stage_setting(STAGE, "lambda_handler"), Code={"ZipFile": package.read_bytes()},
        Timeout=stage_setting(STAGE, "timeout_seconds"), MemorySize=stage_setting(STAGE, "memory_size"),
        Environment={"Variables": stage_setting(STAGE, "aws_environment_variables")})


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The dev stage's package of this checkout."""
    return built_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, package):
    """The deployed stage: (api, container, aws clients, keys, stack outputs)."""
    import boto3

    work = tmp_path_factory.mktemp("first-deploy")
    # boto3's default session made here would point at this moto server and lack the hooks mock_aws
    # installs for later tests: it is put back as it was.
    patch_boto3 = pytest.MonkeyPatch()
    patch_boto3.setattr(boto3, "DEFAULT_SESSION", None)
    with servers.moto_server(work) as endpoint, pytest.MonkeyPatch.context() as patch:
        for name in ENDPOINT_VARIABLES:
            patch.delenv(name, raising=False)
        aws = {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}
        for name, value in aws.items():
            patch.setenv(name, value)
        clients = {name: boto3.client(name, region_name="us-east-1") for name in (
            "cloudformation", "secretsmanager", "lambda", "apigateway", "logs", "dynamodb", "iam")}
        outputs = {}
        for name in GUIDE_ORDER:
            extra = {"CorsOrigins": ORIGIN} if name == "parameters" else {}
            outputs[name] = _create_stack(clients["cloudformation"], name, **extra)
            if name == "security":
                _create_secret_as_security_yaml_would(clients["secretsmanager"])
        _deploy_function(clients["lambda"], package, outputs["access"]["RoleArn"])
        outputs["api"] = _create_stack(clients["cloudformation"], "api")

        environment = {**function_environment(STAGE), **aws, "GATEWAY_KEY_CACHE_TTL": str(KEY_CACHE_TTL)}
        keys = {name: create_key_for(environment, user) for name, user in (
            ("x_api_key", "header-user"), ("bearer", "bearer-user"), ("revoked", "revoked-user"))}
        container = LambdaContainer(lambda_layout(package, work), environment, work / "function.log")
        try:
            api = RestApi(clients["apigateway"], outputs["api"]["ApiId"], STAGE, template("api"), container)
            yield api, container, clients, keys, outputs
        finally:
            container.close()
            patch_boto3.undo()


@pytest.fixture(scope="module")
def exchanges(deployment):
    """Every request of the scenario, in order, through API Gateway; returns the answers by name."""
    api, _, _, keys, _ = deployment
    answers = {
        "x_api_key": api.request("POST", "/v1/chat/completions", {"X-API-Key": keys["x_api_key"],
                                                                   "X-Correlation-ID": "first-call"}, CHAT),
        "bearer": api.request("POST", "/v1/chat/completions", {"Authorization": f"Bearer {keys['bearer']}"}, CHAT),
        "models_bearer": api.request("GET", "/v1/models", {"Authorization": f"Bearer {keys['bearer']}"}),
        "health": api.request("GET", "/health"),
        "ready": api.request("GET", "/api/v1/health/ready"),
        "preflight": api.request("OPTIONS", "/v1/chat/completions", {
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"}),
        "no_key": api.request("POST", "/v1/chat/completions", {}, CHAT),
        "wrong_key": api.request("POST", "/v1/chat/completions", {"X-API-Key": keys["x_api_key"][:-4] + "AAAA"}, CHAT),
        "before_revocation": api.request("POST", "/v1/chat/completions", {"X-API-Key": keys["revoked"]}, CHAT),
    }
    _revoke(deployment, keys["revoked"])
    time.sleep(KEY_CACHE_TTL + 0.2)
    answers["after_revocation"] = api.request("POST", "/v1/chat/completions", {"X-API-Key": keys["revoked"]}, CHAT)
    return answers


def _revoke(deployment, key: str) -> None:
    """``gateway keys revoke``: the key's item in the stage's table marked inactive."""
    _, _, clients, _, _ = deployment
    clients["dynamodb"].update_item(
        TableName=f"ai-gateway-{STAGE}-api-keys", Key={"apiKeyId": {"S": key.split("_")[2]}},
        UpdateExpression="SET active = :no", ExpressionAttributeValues={":no": {"BOOL": False}})


def _metric_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()
            if line.startswith("{") and '"_aws"' in line and NAMESPACE in line]


def _total(lines: list[dict], metric: str) -> float:
    values = [line[metric] for line in lines if metric in line]
    return sum(sum(v) if isinstance(v, list) else v for v in values)


def test_both_key_headers_reach_the_app_through_the_authorizer(exchanges):
    for name in ("x_api_key", "bearer"):
        answer = exchanges[name]
        assert (answer.reached, answer.status) == ("function", 200), answer.body
        assert answer.json()["choices"][0]["message"]["content"] == "Hello through API Gateway"
        assert answer.headers["x-gateway-provider"] == "echo"
    assert exchanges["models_bearer"].status == 200
    assert "echo" in {model["id"] for model in exchanges["models_bearer"].json()["data"]}


def test_health_is_public_and_the_store_is_the_stacks_tables(exchanges):
    assert (exchanges["health"].status, exchanges["health"].json()) == (200, {"status": "ok"})
    ready = exchanges["ready"]
    assert ready.status == 200 and ready.json()["checks"]["store"] == "ok"


def test_preflight_is_public_and_answered_with_the_stages_cors_origin(exchanges):
    preflight = exchanges["preflight"]
    assert (preflight.reached, preflight.status) == ("function", 200)
    assert preflight.headers["access-control-allow-origin"] == ORIGIN  # the parameters stack's CorsOrigins
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def test_missing_wrong_and_revoked_keys_are_401_envelopes_from_the_authorizer(exchanges):
    assert exchanges["before_revocation"].status == 200
    for name in ("no_key", "wrong_key", "after_revocation"):
        answer = exchanges[name]
        assert (answer.reached, answer.status) == ("authorizer", 401), name
        error = answer.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("authentication_error", "invalid_api_key", None)
        assert answer.headers["x-request-id"]


def test_denials_are_counted_in_the_security_metric(deployment, exchanges):
    lines = _metric_lines(deployment[1].output())
    assert _total(lines, AUTH_FAILURES) == 3  # no key, wrong key, revoked key: each once
    for line in lines:
        if AUTH_FAILURES in line:
            [directive] = line["_aws"]["CloudWatchMetrics"]
            assert directive["Dimensions"] == [["Stage"]] and line["Stage"] == STAGE  # what the alarm reads
    assert _total(lines, REQUESTS) >= 3


def test_the_request_log_holds_the_completions_and_not_the_refusals(deployment, exchanges):
    _, _, clients, _, _ = deployment
    items = clients["dynamodb"].scan(TableName=f"ai-gateway-{STAGE}-request-analytics")["Items"]
    by_user = {}
    for item in items:
        by_user.setdefault(item["userId"]["S"], []).append(int(item["status"]["N"]))
    assert by_user == {"header-user": [200], "bearer-user": [200], "revoked-user": [200]}


def test_one_app_per_container_and_no_secret_in_the_log(deployment, exchanges):
    output = deployment[1].output()
    assert output.count('"message": "gateway ready"') == 1
    keys = deployment[3]
    for key in keys.values():
        assert key.split("_", 3)[3] not in output
    assert "Traceback" not in output


def test_access_log_lines_are_json_with_the_apps_correlation_id(deployment, exchanges):
    api = deployment[0]
    assert len(api.access_log) == len(exchanges)
    first = api.access_log[0]
    assert first["correlationId"] == exchanges["x_api_key"].headers["x-correlation-id"] == "first-call"
    bearer = api.access_log[1]
    # No correlation id sent: the app uses the one the authorizer chose, API Gateway's request id.
    assert bearer["correlationId"] == bearer["requestId"] == exchanges["bearer"].headers["x-correlation-id"]
    assert [line["status"] for line in api.access_log] == [str(a.status) for a in exchanges.values()]


def test_the_function_log_group_exists_before_the_function_with_its_retention(deployment):
    _, _, clients, _, outputs = deployment
    [group] = clients["logs"].describe_log_groups(logGroupNamePrefix=f"/aws/lambda/ai-gateway-{STAGE}")["logGroups"]
    assert group["logGroupName"] == outputs["observability"]["FunctionLogGroup"]
    assert group["retentionInDays"] == template("observability")["Parameters"]["LogRetentionDays"]["Default"]
    policy = str(clients["iam"].get_role_policy(RoleName=f"ai-gateway-{STAGE}-lambda",
                                                PolicyName="ai-gateway")["PolicyDocument"])
    assert "logs:PutLogEvents" in policy and "logs:CreateLogGroup" not in policy


def test_the_role_lets_the_function_call_every_model_the_table_routes_to_bedrock(deployment):
    from fnmatch import fnmatch

    from gateway.models import DEFAULT_MODELS

    _, _, clients, _, _ = deployment
    document = clients["iam"].get_role_policy(RoleName=f"ai-gateway-{STAGE}-lambda",
                                              PolicyName="ai-gateway")["PolicyDocument"]
    if isinstance(document, str):  # moto keeps a CloudFormation-made inline policy as its Python repr
        document = ast.literal_eval(document)
    # (moto keeps the statement Fn::If dropped, AWS::NoValue, as None.)
    [statement] = [s for s in document["Statement"] if s and s.get("Sid") == "InvokeTableModels"]
    for spec in DEFAULT_MODELS:
        for route in spec.routes:
            if route.provider != "bedrock":
                continue
            # The resources InvokeModel authorizes for this model id, in the function's region.
            if route.upstream.startswith("us."):
                needed = [f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{route.upstream}",
                          f"arn:aws:bedrock:us-west-2::foundation-model/{route.upstream[3:]}"]
            else:
                needed = [f"arn:aws:bedrock:us-east-1::foundation-model/{route.upstream}"]
            for arn in needed:
                assert any(fnmatch(arn, pattern) for pattern in statement["Resource"]), arn


#: The package's budget (docs/deploy.md "Package": 6.7 MiB zipped, 18.7 MiB unzipped when measured):
#: a server, SDK or deploy-time tool slipping back in shows here, not as a slower cold start.
PACKAGE_BUDGET = {"zipped": 8 * 2**20, "unzipped": 24 * 2**20}


def test_the_package_holds_runtime_code_only_within_its_budget(package):
    with zipfile.ZipFile(package) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert package.stat().st_size < PACKAGE_BUDGET["zipped"] and unzipped < PACKAGE_BUDGET["unzipped"], (
        package.stat().st_size, unzipped)
    assert not tops & {"yaml", "pkg_resources", "requests", "cfn_flip", "placebo", "openai", "pydantic", "granian",
                       "gunicorn", "boto3", "botocore", "setuptools", "pip", "tests", "bench", "cloudformation"}
