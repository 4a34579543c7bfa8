"""zappa_settings.json: three stages that agree with the templates, valid settings, no secrets."""
from __future__ import annotations

import json
import re
import sys

import pytest

from gateway.config import load_settings
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
    assert config["authorizer"] == {"function": "gateway.authorizer.handler", "token_header": "X-API-Key",
                                    "result_ttl": 300}
    assert config["tags"] == {"Project": "ai-gateway", "Stage": stage}
    for left_out in ("tests", "bench", "docs", "cloudformation", "boto3", "botocore"):
        assert left_out in config["exclude"]


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
    settings = load_settings({"key_pepper": "p" * 32}, environ=environment)  # the pepper comes from the secret
    assert (settings.stage, settings.store) == (stage, "dynamodb")
    assert [settings.table(kind) for kind in ("api-keys", "product-catalog", "request-analytics")] == [
        f"ai-gateway-{stage}-{kind}" for kind in ("api-keys", "product-catalog", "request-analytics")]
    [secret] = resources_of(template("security"), "AWS::SecretsManager::Secret").values()
    assert remote == {"GATEWAY_SSM_PATH": f"/ai-gateway/{stage}/",
                      "GATEWAY_SECRET_ID": secret["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", stage)}
    assert settings.provider_timeout < 29
    assert settings.requests_per_minute("free") == 10 and settings.requests_per_minute("premium") == 1000
    assert settings.circuit_breaker_failure_threshold == 5


def test_no_secret_in_the_file():
    text = (ROOT / "zappa_settings.json").read_text()
    assert not re.search(r"sk-[A-Za-z0-9]|gw_(live|test)_|AKIA[0-9A-Z]{16}|KEY_PEPPER|OPENAI_API_KEY", text)
    for stage in STAGES:
        config = stage_config(stage)
        assert "environment_variables" not in config  # those are baked into the package
        assert not {"aws_access_key_id", "aws_secret_access_key", "api_key"} & set(config)
