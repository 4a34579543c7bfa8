"""Remote settings on AWS: the stage's SSM parameters and its Secrets Manager secret, read once per process.

Enabled by ``ssm_path`` (e.g. ``/ai-gateway/prod/``) and/or ``secret_id`` (e.g.
``ai-gateway/prod/secrets``). Every parameter under the path is a setting, the core's
or one a plugin declares, named by the rest of its name
(``/ai-gateway/prod/openai_provider_enabled``); the secret is a JSON object whose keys
name settings the same way (``key_pepper``). Plugin settings nest:
``plugin_settings/openai_provider/api_key``. Values are strings, validated like
environment variables.

A Lambda process reads them at cold start and keeps them for its life
(``remote_settings`` is cached), so a request never waits on SSM. boto3 is
imported only when remote settings are enabled.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from gateway import aws
from gateway.errors import ConfigError

#: The only setting whose remote names may nest (``plugin_settings/<plugin>/<name>``).
NESTED = "plugin_settings"


def read_parameters(client: Any, path: str) -> dict[str, str]:
    """Every parameter under ``path`` (recursive, SecureStrings decrypted), by name relative to it."""
    prefix = path if path.endswith("/") else path + "/"
    found: dict[str, str] = {}
    for page in client.get_paginator("get_parameters_by_path").paginate(
            Path=prefix.rstrip("/") or "/", Recursive=True, WithDecryption=True):
        for parameter in page["Parameters"]:
            found[parameter["Name"][len(prefix):]] = parameter["Value"]
    return found


def read_secret(client: Any, secret_id: str) -> dict[str, str]:
    """The secret's JSON object; its values are never put in an error message."""
    text = client.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError(f"secret {secret_id}: must be a JSON object of strings "
                          '(e.g. {"key_pepper": "...", "plugin_settings/openai_provider/api_key": "..."})')
    return values


def nest(flat: Mapping[str, str], source: str) -> dict[str, Any]:
    """``{"plugin_settings/p/k": v, "log_level": w}`` -> ``{"plugin_settings": {"p": {"k": v}}, "log_level": w}``.

    Empty values are skipped (an unset secret field means "not configured").
    """
    settings: dict[str, Any] = {}
    for name, value in flat.items():
        if value == "":
            continue
        parts = name.split("/")
        if len(parts) == 1:
            settings[name] = value
        elif len(parts) == 3 and parts[0] == NESTED and all(parts):
            settings.setdefault(NESTED, {}).setdefault(parts[1], {})[parts[2]] = value
        else:
            raise ConfigError(f"{source}: {name!r} is not a setting name "
                              f"(use NAME, or {NESTED}/PLUGIN/NAME)")
    return settings


def _read(source: str, region: str, read) -> dict[str, str]:
    """``read()``, with AWS failures turned into a ConfigError naming ``source`` and the error code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
    except BotoCoreError as exc:
        code = type(exc).__name__
    raise ConfigError(f"{source} (region {region}) cannot be read: {code}")


@functools.cache
def _remote(ssm_path: str, secret_id: str, region: str) -> str:
    settings: dict[str, Any] = {}
    if ssm_path:
        source = f"SSM parameters under {ssm_path}"
        parameters = _read(source, region, lambda: read_parameters(aws.client("ssm", region), ssm_path))
        settings = nest(parameters, source)
    if secret_id:
        source = f"secret {secret_id}"
        secret = _read(source, region, lambda: read_secret(aws.client("secretsmanager", region), secret_id))
        settings = merge(settings, nest(secret, source))
    return json.dumps(settings)  # cached as text, so no caller can mutate the cached copy


def remote_settings(ssm_path: str, secret_id: str, region: str) -> dict[str, Any]:
    """The settings in the SSM path and the secret (the secret wins), read once per process."""
    return json.loads(_remote(ssm_path, secret_id, region))


def forget_remote_settings() -> None:
    """Drop what was read, so the next ``remote_settings`` reads again (as a new process would)."""
    _remote.cache_clear()


def _as_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{NESTED}: not valid JSON ({exc})") from None
    return dict(value) if isinstance(value, Mapping) else {}


def merge(base: Mapping[str, Any], remote: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``remote`` on top; ``plugin_settings`` merge per plugin rather than replace."""
    merged = {**base, **remote}
    if NESTED in remote and NESTED in base:
        plugins = _as_mapping(base[NESTED])
        for plugin, values in _as_mapping(remote[NESTED]).items():
            plugins[plugin] = {**_as_mapping(plugins.get(plugin, {})), **values}
        merged[NESTED] = plugins
    return merged
