"""zappa_settings.json: three stages that agree with the templates, valid settings, no secrets."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gateway.config import Settings, read_sources
from plugins.apikey import ApiKeySettings
from tests.deploy.conftest import ROOT, resources_of, template
from tests.deploy.lambda_harness import stage_environment

ZAPPA = json.loads((ROOT / "zappa_settings.json").read_text())
STAGES = ("dev", "staging", "prod")


def stage_config(stage: str) -> dict:
    """A stage's settings with ``extends`` applied (shallowly, as Zappa does)."""
    own = ZAPPA[stage]
    return {**(stage_config(own["extends"]) if "extends" in own else {}), **own}


def test_stages_share_a_base_through_extends():
    assert set(ZAPPA) == set(STAGES)
    assert (ZAPPA["staging"]["extends"], ZAPPA["prod"]["extends"]) == ("dev", "staging")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_the_app_on_this_runtime_within_api_gateway_limits(stage):
    config = stage_config(stage)
    assert config["app_function"] == "gateway.wsgi.app"
    # The package carries this interpreter's compiled wheels, so the runtime must be the same Python.
    assert config["runtime"] == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert config["memory_size"] >= 1024
    assert 29 <= config["timeout_seconds"] <= 30
    assert config["debug"] is False and config["keep_warm"] is True
    assert config["tags"] == {"Project": "ai-gateway", "Stage": stage}
    for left_out in ("tests", "bench", "docs", "cloudformation", "boto3", "botocore"):
        assert left_out in config["exclude"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_leaves_the_api_to_api_yaml_and_its_authorizer_events_to_the_gateway(stage):
    config = stage_config(stage)
    # api.yaml makes the API with a REQUEST authorizer; Zappa's own would be a TOKEN one (one header).
    assert config["apigateway_enabled"] is False and "authorizer" not in config
    # Zappa's handler would serve a REQUEST authorizer event as a request (it carries httpMethod).
    assert config["lambda_handler"] == "gateway.authorizer.lambda_handler"
    # The correlation id the authorizer chose (and the access log records) is the one the app uses.
    assert config["context_header_mappings"] == {"X-Correlation-Id": "authorizer.correlationId"}
    assert config.get("xray_tracing", False) is (stage != "dev")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_has_nothing_that_fails_on_a_fresh_account_or_pins_a_region(stage):
    config = stage_config(stage)
    # Reserved concurrency above the account's unreserved quota (a fresh account has 10 in all) fails.
    assert "lambda_concurrency" not in config
    assert "aws_region" not in config and "GATEWAY_AWS_REGION" not in stage_environment(stage)
    # Bucket names are global: the account id makes them unique (docs/deploy.md substitutes it).
    assert config["s3_bucket"] == f"ai-gateway-{stage}-deployments-ACCOUNT_ID"
    named = config["s3_bucket"].replace("ACCOUNT_ID", "123456789012")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", named)



def test_the_guides_bucket_step_makes_every_stages_bucket_name_unique(tmp_path):
    [command] = [line.strip() for line in (ROOT / "docs" / "deploy.md").read_text().splitlines()
                 if line.strip().startswith("sed -i") and "ACCOUNT_ID" in line]
    (tmp_path / "zappa_settings.json").write_text((ROOT / "zappa_settings.json").read_text())
    subprocess.run(["bash", "-c", command], cwd=tmp_path, env={"ACCOUNT": "123456789012", "PATH": "/usr/bin:/bin"},
                   check=True, timeout=30)
    edited = json.loads((tmp_path / "zappa_settings.json").read_text())
    assert {stage: edited[stage]["s3_bucket"] for stage in STAGES} == {
        stage: f"ai-gateway-{stage}-deployments-123456789012" for stage in STAGES}
    assert {stage: {**edited[stage], "s3_bucket": None} for stage in STAGES} == {
        stage: {**ZAPPA[stage], "s3_bucket": None} for stage in STAGES}  # nothing else changed


def test_no_deploy_time_package_is_shipped():
    excluded = set(stage_config("dev")["exclude"])
    deploy_time = {"yaml", "_yaml", "pkg_resources", "requests", "cfn_flip", "placebo", "hjson", "toml", "slugify",
                   "troposphere", "setuptools", "pip", "wheel", "tqdm", "argcomplete", "gunicorn", "granian"}
    # The openai SDK and its stack: the gateway forwards bytes to OpenAI-compatible upstreams itself.
    sdk = {"openai", "pydantic", "pydantic_core", "jiter", "anyio", "httpx2", "httpcore2", "h11", "sniffio"}
    assert deploy_time | sdk <= excluded
    for name in (deploy_time | sdk) - {"yaml", "_yaml", "pkg_resources", "slugify"}:
        assert f"{name}-*.dist-info" in excluded, name


def test_stage_log_levels_are_not_overridden_by_the_parameters_stack():
    parameters = template("parameters")
    assert parameters["Parameters"]["LogLevel"]["Default"] == ""
    [level] = [r for r in resources_of(parameters, "AWS::SSM::Parameter").values()
               if r["Properties"]["Name"]["Fn::Sub"].endswith("/log_level")]
    assert level["Condition"] == "SetLogLevel"
    assert stage_environment("dev")["GATEWAY_LOG_LEVEL"] == "DEBUG"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_uses_the_role_from_the_access_stack(stage):
    config = stage_config(stage)
    [role] = resources_of(template("access"), "AWS::IAM::Role").values()
    assert config["manage_roles"] is False
    assert config["role_name"] == role["Properties"]["RoleName"]["Fn::Sub"].replace("${Stage}", stage)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_environment_is_valid_settings_naming_the_stage_resources(stage):
    environment = stage_environment(stage)
    remote = {name: environment.pop(name) for name in ("GATEWAY_SSM_PATH", "GATEWAY_SECRET_ID")}
    sources = read_sources({"key_pepper": "p" * 32}, environ=environment)  # the pepper comes from the secret
    settings = sources.load(Settings)
    assert (settings.stage, settings.store) == (stage, "dynamodb")
    assert [settings.table(kind) for kind in ("api-keys", "product-catalog", "request-analytics")] == [
        f"ai-gateway-{stage}-{kind}" for kind in ("api-keys", "product-catalog", "request-analytics")]
    [secret] = resources_of(template("security"), "AWS::SecretsManager::Secret").values()
    assert remote == {"GATEWAY_SSM_PATH": f"/ai-gateway/{stage}/",
                      "GATEWAY_SECRET_ID": secret["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", stage)}
    assert settings.provider_timeout < 29
    assert settings.requests_per_minute("free") == 10 and settings.requests_per_minute("premium") == 1000
    assert settings.circuit_breaker_failure_threshold == 5
    # The authorizer caches nothing (api.yaml), so this is how long a revoked key may still pass.
    assert sources.load(ApiKeySettings).key_cache_ttl <= 5.0


def test_no_secret_in_the_file():
    text = (ROOT / "zappa_settings.json").read_text()
    assert not re.search(r"sk-[A-Za-z0-9]|gw_(live|test)_|AKIA[0-9A-Z]{16}|KEY_PEPPER|OPENAI_API_KEY", text)
    for stage in STAGES:
        config = stage_config(stage)
        assert "environment_variables" not in config  # those are baked into the package
        assert not {"aws_access_key_id", "aws_secret_access_key", "api_key"} & set(config)
