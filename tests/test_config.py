"""Settings: defaults < config file < environment < explicit overrides, validated at start.

The core declares its settings, each plugin its own (``gateway_declare_settings``); all are
read from the same sources and a bad one stops start-up naming it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from marshmallow import fields as f
from marshmallow import validate

from gateway import hookimpl
from gateway.app import create_app
from gateway.cli import build_cli
from gateway.config import Settings, load_all_settings, load_settings
from gateway.errors import ConfigError
from gateway.plugins import build_plugin_manager
from gateway.setting_fields import setting
from gateway.testing import make_app
from plugins.apikey import DEV_PEPPER, ApiKeySettings
from plugins.catalog import CatalogSettings
from plugins.openai_provider import OpenAISettings

ROOT = Path(__file__).resolve().parents[1]


def load_all(environ: dict[str, str]) -> dict[type, object]:
    """Every setting, the core's and the plugins', by declaration class, as ``create_app`` loads them."""
    settings, _, declared = load_all_settings(environ=environ)
    return {Settings: settings, **declared}


def test_defaults():
    settings = load_settings({}, environ={})
    assert settings.stage == "dev" and settings.store == "sqlite"
    assert settings.table("api-keys") == "ai-gateway-dev-api-keys"
    assert settings.requests_per_minute("free") == 10
    assert settings.requests_per_minute("premium") == 1000
    assert settings.tier("no-such-tier").requests_per_hour == 100  # an unknown tier gets the free tier's


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
    assert load_all(environ)[ApiKeySettings].key_pepper == "p" * 20  # a plugin's setting, from the same file


def test_toml_config_file(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('stage = "dev"\ncors_origins = ["https://shop.example"]\n')
    assert load_settings({}, environ={"GATEWAY_CONFIG": str(config)}).cors_origins == ["https://shop.example"]


def test_original_deployment_variable_names_are_aliases():
    loaded = load_all({
        "ENVIRONMENT": "prod", "GATEWAY_KEY_PEPPER": "q" * 20, "API_KEY_TABLE_NAME": "keys-table",
        "OPENAI_PROVIDER_ENABLED": "false", "RATE_LIMIT_FREE_TIER_RPM": "25",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "7"})
    settings = loaded[Settings]
    assert settings.stage == "prod"
    assert settings.table("api-keys") == "keys-table"
    assert loaded[OpenAISettings].openai_provider_enabled is False  # a plugin's alias, in its declaration
    assert settings.requests_per_minute("free") == 25
    assert settings.circuit_breaker_failure_threshold == 7


def test_gateway_name_wins_over_alias():
    settings = load_settings({}, environ={"ENVIRONMENT": "staging", "GATEWAY_STAGE": "dev"})
    assert settings.stage == "dev"
    loaded = load_all({"OPENAI_PROVIDER_ENABLED": "false", "GATEWAY_OPENAI_PROVIDER_ENABLED": "true"})
    assert loaded[OpenAISettings].openai_provider_enabled is True


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


def test_plugin_settings_come_from_the_same_environment_variables_as_before():
    loaded = load_all({"GATEWAY_KEY_PEPPER": "k" * 20, "GATEWAY_KEY_CACHE_TTL": "0.5",
                       "GATEWAY_FAILED_AUTH_LIMIT": "3/minute", "GATEWAY_MCP_MAX_PRODUCTS": "2",
                       "GATEWAY_CATALOG_CACHE_TTL": "7"})
    assert (loaded[ApiKeySettings].key_pepper, loaded[ApiKeySettings].key_cache_ttl) == ("k" * 20, 0.5)
    assert loaded[ApiKeySettings].failed_auth_limit == "3/minute"
    assert (loaded[CatalogSettings].mcp_max_products, loaded[CatalogSettings].catalog_cache_ttl) == (2, 7.0)
    assert not any(hasattr(loaded[Settings], name) for name in ("key_pepper", "mcp_max_products",
                                                                 "openai_provider_enabled"))


@pytest.mark.parametrize("environ, fragment", [
    ({"GATEWAY_STAGEE": "dev"}, "stagee"),
    ({"GATEWAY_STAGE": "qa"}, "(GATEWAY_STAGE) = 'qa'"),
    ({"GATEWAY_MAX_BODY_BYTES": "lots"}, "(GATEWAY_MAX_BODY_BYTES) = 'lots'"),
    ({"GATEWAY_STORE": "postgres"}, "sqlite, dynamodb"),
    ({"GATEWAY_TIER_LIMITS": "{oops"}, "tier_limits"),
    ({"GATEWAY_TIER_LIMITS": '{"gold": 5}'}, "free, basic, premium, enterprise"),
    ({"GATEWAY_CONFIG": "/nonexistent/gateway.json"}, "cannot be read"),
    ({"GATEWAY_FAILED_AUTH_LIMIT": "lots"}, "failed_auth_limit (GATEWAY_FAILED_AUTH_LIMIT) = 'lots': not a limit"),
    ({"GATEWAY_MCP_MAX_PRODUCTS": "50"}, "mcp_max_products (GATEWAY_MCP_MAX_PRODUCTS) = '50'"),
    ({"OPENAI_PROVIDER_ENABLED": "maybe"}, "openai_provider_enabled (GATEWAY_OPENAI_PROVIDER_ENABLED) = 'maybe'"),
])
def test_bad_settings_stop_start_up_naming_the_setting(environ, fragment):
    with pytest.raises(ConfigError) as info:
        load_all(environ)
    assert fragment in str(info.value)


def test_unknown_setting_is_named_as_unknown():
    with pytest.raises(ConfigError, match=r"stagee \(GATEWAY_STAGEE\): unknown setting"):
        load_all({"GATEWAY_STAGEE": "dev"})


def test_a_disabled_built_in_plugins_settings_are_ignored_not_unknown():
    loaded = load_all({"GATEWAY_KEY_PEPPER": "k" * 20, "GATEWAY_DISABLE_PLUGINS": "apikey"})
    assert ApiKeySettings not in loaded  # a deployment replacing apikey keeps its secret as it is
    with pytest.raises(ConfigError, match=r"key_peper \(GATEWAY_KEY_PEPER\): unknown setting"):
        load_all({"GATEWAY_KEY_PEPER": "k" * 20, "GATEWAY_DISABLE_PLUGINS": "apikey"})


def test_a_secret_plugin_setting_is_never_repeated_in_an_error():
    with pytest.raises(ConfigError) as info:
        load_all({"GATEWAY_KEY_PEPPER": "short-secret"})
    assert "key_pepper (GATEWAY_KEY_PEPPER): Shorter than minimum length 16" in str(info.value)
    assert "short-secret" not in str(info.value)


def test_non_dev_stage_refuses_the_development_pepper(tmp_path):
    with pytest.raises(ConfigError, match=r"plugin 'apikey': key_pepper: stage 'prod' .*GATEWAY_KEY_PEPPER"):
        make_app(tmp_path, {"stage": "prod"})
    gateway = make_app(tmp_path, {"stage": "prod", "key_pepper": "s" * 32}).extensions["gateway"]
    assert gateway.plugin_settings[ApiKeySettings].key_pepper != DEV_PEPPER


def test_settings_never_print_their_secrets():
    loaded = load_all({"GATEWAY_KEY_PEPPER": "a-pepper-that-must-stay-hidden"})
    for settings in loaded.values():
        assert "a-pepper-that-must-stay-hidden" not in repr(settings) + str(settings)


# A plugin's own settings, and its start-up check.

@dataclass(frozen=True)
class WordLimitSettings:
    word_limit: int = setting(500, f.Integer(validate=validate.Range(min=1)), "words per prompt")
    word_limit_mode: str = setting("refuse", f.String(), "what to do beyond the limit: refuse or cut")


class WordLimit:
    """A plugin with two settings, checked together at start-up."""

    @hookimpl
    def gateway_declare_settings(self):
        return WordLimitSettings

    @hookimpl
    def gateway_startup(self, gateway):
        if gateway.plugin_settings[WordLimitSettings].word_limit_mode not in ("refuse", "cut"):
            raise ConfigError("word_limit_mode must be refuse or cut (GATEWAY_WORD_LIMIT_MODE)")


def test_a_plugin_reads_its_declared_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_WORD_LIMIT", "20")
    gateway = make_app(tmp_path, {"word_limit_mode": "cut"}, plugins=(WordLimit(),)).extensions["gateway"]
    assert gateway.plugin_settings[WordLimitSettings] == WordLimitSettings(word_limit=20, word_limit_mode="cut")


def test_a_bad_plugin_setting_stops_start_up_with_the_plugins_message(tmp_path):
    with pytest.raises(ConfigError, match=r"^plugin 'WordLimit': word_limit_mode must be refuse or cut"):
        make_app(tmp_path, {"word_limit_mode": "shout"}, plugins=(WordLimit(),))
    with pytest.raises(ConfigError, match=r"word_limit \(GATEWAY_WORD_LIMIT\) = 0: Must be greater"):
        make_app(tmp_path, {"word_limit": 0}, plugins=(WordLimit(),))


def test_a_plugin_cannot_declare_a_setting_someone_else_declares(tmp_path):
    @dataclass(frozen=True)
    class Clash:
        log_level: str = setting("INFO", f.String(), "mine")

    class Clashing:
        @hookimpl
        def gateway_declare_settings(self):
            return Clash

    with pytest.raises(ConfigError, match=r"plugin 'Clashing' declares the setting 'log_level', which the core"):
        make_app(tmp_path, plugins=(Clashing(),))


def test_reading_undeclared_settings_says_how_to_declare_them(tmp_path):
    gateway = make_app(tmp_path).extensions["gateway"]
    with pytest.raises(ConfigError, match="WordLimitSettings is not declared: return it from a gateway_declare"):
        gateway.plugin_settings[WordLimitSettings]


def test_create_app_refuses_an_unknown_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"key_peper \(GATEWAY_KEY_PEPER\): unknown setting"):
        create_app({"sqlite_path": str(tmp_path / "g.db"), "key_peper": "x" * 20})


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["init"]])
def test_the_cli_prints_a_start_up_refusal_and_exits_non_zero(tmp_path, command):
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    environ.update(PYTHONPATH=str(ROOT), GATEWAY_STAGE="prod", GATEWAY_SQLITE_PATH=str(tmp_path / "g.db"))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *command], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Error: plugin 'apikey': key_pepper: stage 'prod' needs its own pepper" in done.stderr
    assert "Traceback" not in done.stderr


def test_gateway_settings_shows_every_setting_but_never_a_secret(monkeypatch):
    monkeypatch.setenv("GATEWAY_KEY_PEPPER", "a-pepper-that-must-stay-hidden")
    monkeypatch.setenv("GATEWAY_MCP_MAX_PRODUCTS", "3")
    cli = build_cli(build_plugin_manager(load_settings()))
    text = CliRunner().invoke(cli, ["settings"])
    rows = json.loads(CliRunner().invoke(cli, ["settings", "--json"]).output)
    assert text.exit_code == 0 and "a-pepper-that-must-stay-hidden" not in text.output + json.dumps(rows)
    values = {row["name"]: (row["value"], row["owner"]) for row in rows}
    assert values["key_pepper"] == ("***", "apikey") and values["mcp_max_products"] == (3, "catalog")
    assert values["stage"] == ("dev", "core")
    assert CliRunner().invoke(cli, ["settings", "--markdown"]).output.startswith("| setting | default | owner |")
