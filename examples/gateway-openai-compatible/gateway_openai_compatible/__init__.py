"""gateway-openai-compatible: serve models of any OpenAI-compatible server through the gateway.

Ollama, vLLM, LM Studio and llama.cpp's server all speak OpenAI's chat completion
API. Each server configured in ``plugin_settings.openai_compatible.servers``
becomes one provider, named as you choose::

    {"plugin_settings": {"openai_compatible": {"servers": [
        {"name": "ollama", "base_url": "http://127.0.0.1:11434/v1", "models": ["llama3.2", "qwen2.5"]},
        {"name": "vllm", "base_url": "http://127.0.0.1:8000/v1", "api_key": {"$env": "VLLM_API_KEY"},
         "models": {"Qwen/Qwen2.5-7B-Instruct": [0.0, 0.0]}}]}}}

``models`` is a list of names (free: they run on your hardware) or a mapping of
name to ``[input, output]`` USD per million tokens. ``api_key`` is optional (local
servers usually ignore it). Callers pick a server with ``"provider": "ollama"`` or
the model name ``ollama/llama3.2``.
"""
from __future__ import annotations

from gateway import hookimpl
from gateway.errors import ConfigError
from gateway.types import Price
from gateway_openai_compatible.provider import NO_KEY, OpenAICompatibleServer

NAME = "openai_compatible"


def parse_servers(config: dict, timeout: float) -> list[OpenAICompatibleServer]:
    """One provider per configured server; a malformed entry raises :class:`ConfigError` naming it."""
    servers = config.get("servers", [])
    if not isinstance(servers, list):
        raise ConfigError(f"plugin_settings.{NAME}.servers must be a list of servers")
    providers = []
    for index, server in enumerate(servers):
        where = f"plugin_settings.{NAME}.servers[{index}]"
        if not isinstance(server, dict) or set(server) - {"name", "base_url", "models", "api_key"}:
            raise ConfigError(f"{where} must be an object with name, base_url, models and optionally api_key")
        name, base_url, models = server.get("name"), server.get("base_url"), server.get("models")
        if not (isinstance(name, str) and name and isinstance(base_url, str)
                and base_url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where} needs a name and an http(s) base_url such as http://127.0.0.1:11434/v1")
        if not models or not isinstance(models, list | dict):
            raise ConfigError(f"{where}.models must list the models the server serves")
        prices = ({model: Price(*price) for model, price in models.items()} if isinstance(models, dict)
                  else {model: Price() for model in models})
        providers.append(OpenAICompatibleServer(name=name, base_url=base_url, prices=prices, timeout=timeout,
                                                api_key=server.get("api_key") or NO_KEY))
    return providers


@hookimpl
def gateway_register_providers(gateway):
    """One provider per configured OpenAI-compatible server (none configured: none registered)."""
    return parse_servers(gateway.settings.plugin_config(NAME), gateway.settings.provider_timeout)
