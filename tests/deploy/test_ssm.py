"""Remote settings (gateway/ssm.py): the stage's SSM parameters and secret, read once per process, in moto."""
from __future__ import annotations

import json

import boto3
import pytest

from gateway import ssm
from gateway.config import Settings, load_all_settings, load_settings, read_sources
from gateway.errors import ConfigError
from plugins.apikey import ApiKeySettings
from plugins.openai_provider import OpenAISettings
from tests.deploy.conftest import create_stacks

PEPPER = "generated-pepper-0123456789abcdefghij"
OPENAI_KEY = "sk-test-from-secrets-manager-0123456789"
ENVIRON = {"GATEWAY_SSM_PATH": "/ai-gateway/dev/", "GATEWAY_SECRET_ID": "ai-gateway/dev/secrets"}


@pytest.fixture
def aws(aws_environment):
    """A fresh moto account, and an empty remote-settings cache before and after."""
    from moto import mock_aws

    ssm.forget_remote_settings()
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        yield
    ssm.forget_remote_settings()


def _put_secret(values: dict | str, name: str = "ai-gateway/dev/secrets") -> None:
    text = values if isinstance(values, str) else json.dumps(values)
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name=name, SecretString=text)


def _put_parameter(name: str, value: str, kind: str = "String") -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


def test_parameters_from_the_stack_and_the_secret_become_settings(aws):
    create_stacks(stacks=("security", "parameters"))
    _put_secret({"key_pepper": PEPPER, "plugin_settings/openai_provider/api_key": OPENAI_KEY})
    sources = read_sources({}, environ={**ENVIRON, "GATEWAY_STAGE": "prod",
                                        "GATEWAY_OPENAI_PROVIDER_ENABLED": "false"})
    settings = sources.load(Settings)
    assert sources.load(OpenAISettings).openai_provider_enabled is True   # the parameter beats the environment
    assert settings.provider_timeout == 25.0
    assert settings.log_level == "INFO"
    assert sources.load(ApiKeySettings).key_pepper == PEPPER  # so stage prod starts without GATEWAY_KEY_PEPPER
    assert settings.plugin_config("openai_provider") == {"base_url": "https://api.openai.com/v1",
                                                         "api_key": OPENAI_KEY}


def test_read_once_per_process(aws):
    _put_parameter("/ai-gateway/dev/log_level", "WARNING")
    calls = []
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-call.ssm.*", lambda model, **kw: calls.append(model.name))
    try:
        first = load_settings({}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/"})
        _put_parameter("/ai-gateway/dev/log_level", "ERROR")
        again = load_settings({}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/"})
    finally:
        boto3.DEFAULT_SESSION.events.unregister("before-call.ssm.*")
    assert (first.log_level, again.log_level) == ("WARNING", "WARNING")
    assert calls == ["GetParametersByPath", "PutParameter"]  # the one read, then the test's own write
    ssm.forget_remote_settings()  # a new process (cold start) sees the change
    assert load_settings({}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/"}).log_level == "ERROR"


def test_secure_strings_are_decrypted_and_nested_paths_read(aws):
    _put_parameter("/ai-gateway/dev/plugin_settings/openai_provider/api_key", OPENAI_KEY, "SecureString")
    _put_parameter("/ai-gateway/staging/log_level", "ERROR")  # another stage's path is not read
    settings = load_settings({}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/",
                                          "GATEWAY_PLUGIN_SETTINGS": '{"openai_provider": {"base_url": "http://x"}}'})
    assert settings.plugin_config("openai_provider") == {"base_url": "http://x", "api_key": OPENAI_KEY}
    assert settings.log_level == "INFO"


def test_explicit_overrides_still_win(aws):
    _put_parameter("/ai-gateway/dev/log_level", "WARNING")
    assert load_settings({"log_level": "DEBUG"}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/"}).log_level == "DEBUG"


def test_off_unless_a_path_or_secret_is_set(aws):
    _put_parameter("/ai-gateway/dev/log_level", "ERROR")
    assert load_settings({}, environ={}).log_level == "INFO"


@pytest.mark.parametrize("secret, fragment", [
    ("not json " + OPENAI_KEY, "must be a JSON object of strings"),
    (json.dumps(["a", OPENAI_KEY]), "must be a JSON object of strings"),
    (json.dumps({"key_pepper": 12345678901234567}), "must be a JSON object of strings"),
    (json.dumps({"nested/name": OPENAI_KEY}), "'nested/name' is not a setting name"),
    (json.dumps({"key_pepper": "tiny-pep"}), "key_pepper (GATEWAY_KEY_PEPPER): Shorter than minimum length 16"),
    (json.dumps({"no_such_setting": OPENAI_KEY}), "no_such_setting (GATEWAY_NO_SUCH_SETTING): unknown setting"),
])
def test_a_bad_secret_stops_start_up_without_showing_its_value(aws, secret, fragment):
    _put_secret(secret)
    with pytest.raises(ConfigError) as raised:
        load_all_settings({}, environ={"GATEWAY_SECRET_ID": "ai-gateway/dev/secrets"})
    assert fragment in str(raised.value)
    assert OPENAI_KEY not in str(raised.value) and "tiny-pep" not in str(raised.value)


def test_a_missing_secret_names_it_and_the_error_code(aws):
    with pytest.raises(ConfigError) as raised:
        load_settings({}, environ={"GATEWAY_SECRET_ID": "ai-gateway/dev/absent"})
    assert str(raised.value) == ("secret ai-gateway/dev/absent (region us-east-1) cannot be read: "
                                 "ResourceNotFoundException")


def test_a_parameter_that_is_no_setting_is_named(aws):
    _put_parameter("/ai-gateway/dev/feature/x", "on")
    with pytest.raises(ConfigError, match=r"SSM parameters under /ai-gateway/dev/: 'feature/x' is not a setting"):
        load_settings({}, environ={"GATEWAY_SSM_PATH": "/ai-gateway/dev/"})


@pytest.mark.parametrize("path", ["ai-gateway/dev/", "/ai-gateway/dev", "/"])
def test_a_malformed_path_is_refused_by_the_schema(aws, path):
    with pytest.raises(ConfigError, match="ssm_path"):
        load_settings({"ssm_path": path}, environ={})
