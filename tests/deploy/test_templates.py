"""The CloudFormation templates: cfn-lint clean, and the properties moto cannot check (WAF, alarms, dashboards).

moto's CloudFormation skips web ACLs, secrets and alarms and ignores PITR and SSE,
so those are asserted here, on the templates themselves.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import limit_storage
from gateway.cache import DynamoDBBackend
from gateway.config import STAGES, Settings
from gateway.metric_names import ALL, DIMENSIONS, NAMESPACE, STAGE
from gateway.store.dynamodb import tables
from tests.deploy.conftest import TEMPLATES, resources_of, template

ALL_TEMPLATES = sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


def test_every_template_passes_cfn_lint_without_any_finding_informational_included():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    paths = [str(TEMPLATES / f"{name}.yaml") for name in ALL_TEMPLATES]
    assert len(paths) == 7
    done = subprocess.run([str(cfn_lint), "--include-checks", "I", "--", *paths], capture_output=True, text=True,
                          timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_every_template_is_parameterised_by_stage(name):
    stage = template(name)["Parameters"]["Stage"]
    assert stage["AllowedValues"] == list(STAGES)


# Security

def test_kms_key_rotates_and_encrypts_the_secret():
    security = template("security")
    [(key_id, key)] = resources_of(security, "AWS::KMS::Key").items()
    assert key["Properties"]["EnableKeyRotation"] is True
    [secret] = resources_of(security, "AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["KmsKeyId"] == {"Ref": key_id}
    assert secret["Properties"]["Name"] == {"Fn::Sub": "ai-gateway/${Stage}/secrets"}
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "key_pepper"
    assert generated["PasswordLength"] >= 16  # the key_pepper setting's minimum
    assert json.loads(generated["SecretStringTemplate"]) == {"plugin_settings/openai_provider/api_key": ""}
    # key_pepper hashes every issued key: deleting or replacing the stack must not lose it.
    assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_waf_rate_limits_2000_per_5_minutes_per_ip():
    waf = template("waf")
    [acl] = resources_of(waf, "AWS::WAFv2::WebACL").values()
    assert acl["Properties"]["Scope"] == "REGIONAL"
    rules = {rule["Name"]: rule for rule in acl["Properties"]["Rules"]}
    rate = rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]
    assert rate["Limit"] == {"Ref": "RateLimitPer5Minutes"}
    assert waf["Parameters"]["RateLimitPer5Minutes"]["Default"] == 2000
    assert (rate["EvaluationWindowSec"], rate["AggregateKeyType"]) == (300, "IP")
    assert "Block" in rules["RateLimitPerIp"]["Action"]


def test_waf_managed_rule_groups_and_body_size_rule():
    [acl] = resources_of(template("waf"), "AWS::WAFv2::WebACL").values()
    rules = acl["Properties"]["Rules"]
    managed = {r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in rules
               if "ManagedRuleGroupStatement" in r["Statement"]}
    assert managed == {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                       "AWSManagedRulesSQLiRuleSet"}
    [size] = [r for r in rules if "SizeConstraintStatement" in r["Statement"]]
    statement = size["Statement"]["SizeConstraintStatement"]
    assert (statement["ComparisonOperator"], statement["Size"]) == ("GT", {"Ref": "MaxBodyBytes"})
    assert statement["FieldToMatch"]["Body"]["OversizeHandling"] == "MATCH"  # unreadable rest counts as too large
    # WAF reads at most 64 KB of an API Gateway body: the limit cannot be set above what it can see.
    limit = template("waf")["Parameters"]["MaxBodyBytes"]
    assert limit["Default"] == limit["MaxValue"] == 64 * 1024 <= Settings().max_body_bytes
    assert acl["Properties"]["AssociationConfig"]["RequestBody"]["API_GATEWAY"] == {
        "DefaultSizeInspectionLimit": "KB_64"}
    assert "Block" in size["Action"]
    assert len({r["Priority"] for r in rules}) == len(rules)


def test_waf_is_associated_with_the_api_stage_parameter():
    waf = template("waf")
    [association] = resources_of(waf, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"] == {"ResourceArn": {"Ref": "ApiStageArn"},
                                         "WebACLArn": {"Fn::GetAtt": ["WebAcl", "Arn"]}}
    pattern = waf["Parameters"]["ApiStageArn"]["AllowedPattern"]
    assert re.match(pattern, "arn:aws:apigateway:us-east-1::/restapis/a1b2c3d4e5/stages/dev")
    assert not re.match(pattern, "arn:aws:lambda:us-east-1:123456789012:function:x")


# Data

def test_tables_are_on_demand_recoverable_and_encrypted_with_the_stage_key():
    tables = resources_of(template("data"), "AWS::DynamoDB::Table")
    assert len(tables) == 5
    for name, table in tables.items():
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST", name
        assert properties["SSESpecification"] == {
            "SSEEnabled": True, "SSEType": "KMS",
            "KMSMasterKeyId": {"Fn::ImportValue": {"Fn::Sub": "ai-gateway-${Stage}-KeyArn"}}}, name
        if name not in ("RateLimitsTable", "ResponseCacheTable"):  # rebuilt by traffic; no backups needed
            assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
            assert table["DeletionPolicy"] == "Retain", name


def test_tables_are_exactly_the_ones_the_code_creates():
    """Names, keys, attribute types, indexes and TTLs of the five tables equal gateway's ``aws.Table``s."""
    declared = {t["Properties"]["TableName"]["Fn::Sub"]: t["Properties"]
                for t in resources_of(template("data"), "AWS::DynamoDB::Table").values()}
    name = "ai-gateway-${{Stage}}-{}".format
    code = [*tables(name("api-keys"), name("product-catalog"), name("request-analytics")),
            limit_storage.counters_table(name("rate-limits")), DynamoDBBackend.table_named(name("response-cache"))]
    assert set(declared) == {table.name for table in code}
    for table in code:
        properties, created = declared[table.name], table.create_arguments()
        assert properties["KeySchema"] == created["KeySchema"], table.name
        assert sorted(properties["AttributeDefinitions"], key=str) == sorted(created["AttributeDefinitions"], key=str)
        assert properties.get("GlobalSecondaryIndexes") == created.get("GlobalSecondaryIndexes"), table.name
        ttl = {"AttributeName": table.ttl_attribute, "Enabled": True} if table.ttl_attribute else None
        assert properties.get("TimeToLiveSpecification") == ttl, table.name


# Access

def _statements() -> dict[str, dict]:
    """The role's statements by Sid, a conditional one (``Fn::If``) as it is when its condition holds."""
    [role] = resources_of(template("access"), "AWS::IAM::Role").values()
    [policy] = role["Properties"]["Policies"]
    statements = [s["Fn::If"][1] if "Fn::If" in s else s for s in policy["PolicyDocument"]["Statement"]]
    return {s["Sid"]: s for s in statements}


def test_role_grants_nothing_on_every_resource():
    statements = _statements()
    for sid, statement in statements.items():
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources, sid
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith("*") for a in actions), sid


def test_role_reaches_exactly_the_stage_tables_secret_parameters_models_and_logs():
    statements = _statements()
    assert set(statements) == {"Tables", "TableIndexes", "DecryptWithTheStageKey", "ReadTheSecret",
                               "ReadTheStageParameters", "InvokeTableModels", "InvokeExtraModels", "OwnLogs"}
    assert len(statements["Tables"]["Resource"]) == 5
    assert statements["TableIndexes"]["Action"] == "dynamodb:Query"
    assert "CreateTable" not in json.dumps(statements) and "DeleteTable" not in json.dumps(statements)
    for sid in ("InvokeTableModels", "InvokeExtraModels"):
        assert statements[sid]["Action"] == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    assert statements["InvokeExtraModels"]["Resource"] == {"Ref": "ExtraBedrockModelArns"}
    # The log group is the observability stack's (with its retention): the function cannot make its own.
    assert statements["OwnLogs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statements["ReadTheSecret"]["Action"] == "secretsmanager:GetSecretValue"
    assert "ai-gateway/${Stage}/secrets-??????" in statements["ReadTheSecret"]["Resource"]["Fn::Sub"]
    parameters = [r["Fn::Sub"] for r in statements["ReadTheStageParameters"]["Resource"]]
    assert all(p.split(":parameter")[1] in ("/ai-gateway/${Stage}", "/ai-gateway/${Stage}/*") for p in parameters)


# Observability

def _alarms() -> dict[str, dict]:
    return {body["Properties"]["AlarmName"]["Fn::Sub"].removeprefix("ai-gateway-${Stage}-"): body["Properties"]
            for body in resources_of(template("observability"), "AWS::CloudWatch::Alarm").values()}


def test_alarm_thresholds():
    alarms = _alarms()
    parameters = template("observability")["Parameters"]

    def shape(name):
        alarm = alarms[name]
        threshold = alarm["Threshold"]
        if isinstance(threshold, dict):
            threshold = parameters[threshold["Ref"]]["Default"]
        return (alarm.get("MetricName"), alarm.get("Statistic"), alarm.get("Period"), alarm["EvaluationPeriods"],
                threshold, alarm["ComparisonOperator"])

    assert shape("api-5xx") == ("5XXError", "Sum", 300, 2, 10, "GreaterThanThreshold")
    assert alarms["api-5xx"]["DatapointsToAlarm"] == 2
    assert shape("api-latency") == ("Latency", "Average", 300, 3, 5000, "GreaterThanThreshold")
    assert shape("lambda-errors") == ("Errors", "Sum", 300, 1, 0, "GreaterThanThreshold")
    assert shape("lambda-throttles") == ("Throttles", "Sum", 300, 1, 0, "GreaterThanThreshold")
    assert shape("auth-failures") == ("AuthFailures", "Sum", 300, 1, 50, "GreaterThanThreshold")
    assert shape("cost-per-hour") == ("Cost", "Sum", 3600, 1, 100, "GreaterThanThreshold")
    assert shape("grounding-mismatch") == (None, None, None, 1, 0.1, "GreaterThanThreshold")
    grounding = {m["Id"]: m for m in alarms["grounding-mismatch"]["Metrics"]}
    assert {(m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Stat"], m["MetricStat"]["Period"])
            for m in grounding.values() if "MetricStat" in m} == {("GroundingMismatch", "Average", 3600),
                                                                  ("GroundingMismatch", "SampleCount", 3600)}
    # An hour with too few checked answers is not judged (one mismatch in two answers is no trend).
    assert grounding["judged"]["Expression"] == {"Fn::Sub": "IF(answers >= ${GroundingMinimumAnswers}, rate, 0)"}
    assert [m["Id"] for m in grounding.values() if m["ReturnData"]] == ["judged"]
    assert parameters["GroundingMinimumAnswers"]["Default"] == 20
    assert (parameters["GroundingMismatchRate"]["MinValue"], parameters["GroundingMismatchRate"]["MaxValue"]) == (0, 1)
    throttles = alarms["dynamodb-throttles"]["Metrics"]
    tables = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::Sub"] for m in throttles if "MetricStat" in m}
    assert tables == {f"ai-gateway-${{Stage}}-{t}" for t in
                      ("api-keys", "product-catalog", "request-analytics", "rate-limits", "response-cache")}


def test_every_alarm_notifies_a_topic():
    topics = set(resources_of(template("observability"), "AWS::SNS::Topic"))
    assert topics == {"OperationalAlerts", "SecurityAlerts"}
    for name, alarm in _alarms().items():
        targets = {action["Ref"] for action in alarm["AlarmActions"]}
        assert targets and targets <= topics, name
    assert {a["Ref"] for a in _alarms()["auth-failures"]["AlarmActions"]} == {"SecurityAlerts"}


def _gateway_metrics_in_alarms() -> list[tuple[str, tuple[str, ...]]]:
    metrics = [alarm for alarm in _alarms().values() if "MetricName" in alarm]
    metrics += [m["MetricStat"]["Metric"] for alarm in _alarms().values() for m in alarm.get("Metrics", ())
                if "MetricStat" in m]
    return [(metric["MetricName"], tuple(d["Name"] for d in metric["Dimensions"]))
            for metric in metrics if metric.get("Namespace") == NAMESPACE]


def _dashboards() -> dict[str, dict]:
    found = {}
    for body in resources_of(template("observability"), "AWS::CloudWatch::Dashboard").values():
        sub = body["Properties"]["DashboardBody"]["Fn::Sub"]
        text = sub[0] if isinstance(sub, list) else sub
        text = re.sub(r"\$\{[^}]+\}", "x", text)
        found[body["Properties"]["DashboardName"]["Fn::Sub"]] = json.loads(text)
    return found


def _gateway_metrics_in_dashboards() -> list[tuple[str, tuple[str, ...]]]:
    used = []
    for dashboard in _dashboards().values():
        for widget in dashboard["widgets"]:
            for line in widget["properties"]["metrics"]:
                if isinstance(line[0], dict):  # SEARCH('{Namespace,Dim,...} MetricName="X"'), or a Metrics
                    expression = line[0]["expression"]  # Insights query: SELECT SUM(X) FROM SCHEMA(Namespace, Dim...)
                    search = re.search(r"\{([^}]+)\} MetricName=\"(\w+)\"", expression)
                    schema, metric = search.groups() if search else reversed(
                        re.search(r"SELECT \w+\((\w+)\) FROM SCHEMA\(([^)]+)\)", expression).groups())
                    namespace, *dimensions = (part.strip() for part in schema.split(","))
                    if namespace == NAMESPACE:
                        used.append((metric, tuple(sorted(dimensions))))
                elif line[0] == NAMESPACE:
                    names = [v for v in line[2:] if isinstance(v, str)][::2]
                    used.append((line[1], tuple(sorted(names))))
    return used


def test_three_dashboards_operational_security_business():
    assert set(_dashboards()) == {"ai-gateway-${Stage}-operational", "ai-gateway-${Stage}-security",
                                  "ai-gateway-${Stage}-business"}


#: The dimension sets gateway/metrics.py publishes: every completion under all four dimensions, and
#: rolled up under Stage alone (the set the stage-wide alarms read). CloudWatch matches them exactly.
EMITTED_DIMENSION_SETS = {(STAGE,), tuple(sorted(DIMENSIONS))}
#: The metrics of the built-in plugins' answer checks (``Declaration.answer_checks``), emitted under the
#: same dimension sets: the catalog plugin's grounding check counts its mismatches in GroundingMismatch.
ANSWER_CHECK_METRICS = ("GroundingMismatch",)


def test_alarms_and_dashboards_use_only_the_metrics_the_gateway_emits():
    used = _gateway_metrics_in_alarms() + _gateway_metrics_in_dashboards()
    assert len(used) > 10
    for metric, dimensions in used:
        assert metric in ALL + ANSWER_CHECK_METRICS, metric
        assert tuple(sorted(dimensions)) in EMITTED_DIMENSION_SETS, (metric, dimensions)
    assert {metric for metric, _ in used} == set(ALL + ANSWER_CHECK_METRICS), \
        "every emitted metric is on a dashboard or alarm"


def test_metric_names_module_is_the_documented_list():
    assert NAMESPACE == "AiModelGateway"
    assert ALL == ("Requests", "Errors", "Latency", "ProviderLatency", "Tokens", "Cost", "CacheHits",
                   "RateLimited", "AuthFailures")
    assert DIMENSIONS == ("Stage", "Provider", "Model", "Tier")
