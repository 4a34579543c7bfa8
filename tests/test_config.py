"""Settings: defaults < config file < environment < explicit overrides, validated at start."""
from __future__ import annotations

import json

import pytest

from gateway.config import DEV_PEPPER, load_settings
from gateway.errors import ConfigError


def test_defaults():
    settings = load_settings({}, environ={})
    assert settings.stage == "dev" and settings.store == "sqlite"
    assert settings.table("api-keys") == "ai-gateway-dev-api-keys"
    assert settings.requests_per_minute("free") == 10
    assert settings.requests_per_minute("premium") == 1000


def test_file_then_environment_then_overrides(tmp_path):
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"stage": "staging", "key_pepper": "p" * 20, "log_level": "DEBUG",
                                  "max_body_bytes": 4096}))
    environ = {"GATEWAY_CONFIG": str(config), "GATEWAY_LOG_LEVEL": "WARNING"}
    settings = load_settings({"max_body_bytes": 8192}, environ=environ)
    assert settings.stage == "staging"          # from the file
    assert settings.log_level == "WARNING"      # the environment beats the file
    assert settings.max_body_bytes == 8192      # overrides beat both
    assert settings.table("request-analytics") == "ai-gateway-staging-request-analytics"


def test_toml_config_file(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('stage = "dev"\ncors_origins = ["https://shop.example"]\n')
    assert load_settings({}, environ={"GATEWAY_CONFIG": str(config)}).cors_origins == ["https://shop.example"]


def test_original_deployment_variable_names_are_aliases():
    settings = load_settings({}, environ={
        "ENVIRONMENT": "prod", "GATEWAY_KEY_PEPPER": "q" * 20, "API_KEY_TABLE_NAME": "keys-table",
        "OPENAI_PROVIDER_ENABLED": "false", "RATE_LIMIT_FREE_TIER_RPM": "25",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "7"})
    assert settings.stage == "prod"
    assert settings.table("api-keys") == "keys-table"
    assert settings.openai_provider_enabled is False
    assert settings.requests_per_minute("free") == 25
    assert settings.circuit_breaker_failure_threshold == 7


def test_gateway_name_wins_over_alias():
    settings = load_settings({}, environ={"ENVIRONMENT": "staging", "GATEWAY_STAGE": "dev"})
    assert settings.stage == "dev"


def test_comma_lists_and_json_from_the_environment():
    settings = load_settings({}, environ={
        "GATEWAY_DISABLE_PLUGINS": "echo_provider, analytics",
        "GATEWAY_TIER_LIMITS": '{"basic": 250}',
        "GATEWAY_PLUGIN_SETTINGS": '{"openai_provider": {"api_key": {"$env": "MY_KEY"}}}'})
    assert settings.disable_plugins == ["echo_provider", "analytics"]
    assert settings.requests_per_minute("basic") == 250


def test_env_references_in_plugin_settings(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    settings = load_settings({"plugin_settings": {"openai_provider": {"api_key": {"$env": "MY_KEY"}}}},
                             environ={})
    assert settings.plugin_config("openai_provider") == {"api_key": "sk-from-env"}


@pytest.mark.parametrize("environ, fragment", [
    ({"GATEWAY_STAGEE": "dev"}, "stagee"),
    ({"GATEWAY_STAGE": "qa"}, "(GATEWAY_STAGE) = 'qa'"),
    ({"GATEWAY_MAX_BODY_BYTES": "lots"}, "(GATEWAY_MAX_BODY_BYTES) = 'lots'"),
    ({"GATEWAY_STORE": "postgres"}, "sqlite, dynamodb"),
    ({"GATEWAY_TIER_LIMITS": "{oops"}, "tier_limits"),
    ({"GATEWAY_CONFIG": "/nonexistent/gateway.json"}, "cannot be read"),
])
def test_bad_settings_stop_start_up_naming_the_setting(environ, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ=environ)
    assert fragment in str(info.value)


def test_unknown_setting_is_named_as_unknown():
    with pytest.raises(ConfigError, match=r"stagee \(GATEWAY_STAGEE\): unknown setting"):
        load_settings({}, environ={"GATEWAY_STAGEE": "dev"})


def test_non_dev_stage_refuses_the_development_pepper():
    with pytest.raises(ConfigError, match="GATEWAY_KEY_PEPPER"):
        load_settings({"stage": "prod"}, environ={})
    assert load_settings({"stage": "prod", "key_pepper": "s" * 32}, environ={}).key_pepper != DEV_PEPPER


def test_settings_never_print_their_secrets():
    settings = load_settings({"key_pepper": "a-pepper-that-must-stay-hidden"}, environ={})
    assert "a-pepper-that-must-stay-hidden" not in repr(settings) + str(settings)
