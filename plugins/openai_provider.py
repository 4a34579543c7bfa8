"""OpenAI, Azure OpenAI and any OpenAI-compatible endpoint, through the official ``openai`` SDK.

Settings (``plugin_settings.openai_provider``). One upstream named ``openai``::

    {"api_key": ..., "base_url": ..., "api_key_secret": "name-in-secrets-manager"}

(defaults: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``), or several, each a provider of its own::

    {"upstreams": {
        "openai": {"api_key": {"$env": "OPENAI_API_KEY"}},
        "groq": {"base_url": "https://api.groq.com/openai/v1", "api_key": {"$env": "GROQ_API_KEY"}},
        "azure": {"azure_endpoint": "https://x.openai.azure.com", "api_version": "2024-10-21",
                  "api_key_secret": "prod/azure-openai"}}}

Which models each serves, and at what price, is the model table's business
(``gateway/models.py``); for Azure the table's upstream model id is the deployment name.
A key in Secrets Manager is fetched once, on first use (a string, or JSON with
``api_key``). Every chat parameter the gateway accepts is passed on unchanged
(unknown fields were already refused with a 400 by the schema). The SDK loads on
first use; one client per upstream is reused; its own retries are off.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from gateway import hookimpl
from gateway.errors import ProviderError, ProviderTimeout, UpstreamRejected
from gateway.resilience import time_left
from gateway.types import Chunk, Completion, Price, Result, Usage


def fetch_secret(secret_id: str, region: str) -> str:
    """An API key from AWS Secrets Manager: the secret string, or its JSON ``api_key`` field."""
    import boto3

    value = boto3.client("secretsmanager", region_name=region).get_secret_value(
        SecretId=secret_id)["SecretString"]
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed.get("api_key", value) if isinstance(parsed, dict) else value


class OpenAIProvider:
    """One OpenAI-compatible upstream (OpenAI itself, Azure OpenAI, or any compatible server)."""

    def __init__(self, name: str, config: dict[str, Any], gateway):
        self.name = name
        self._config = config
        self._gateway = gateway
        self._client = None
        self._lock = threading.Lock()

    def models(self) -> dict[str, Price]:
        """The upstream model ids the model table routes here, with prices."""
        return self._gateway.models.served_by(self.name)

    def _api_key(self) -> str:
        config = self._config
        if config.get("api_key"):
            return config["api_key"]
        secret = config.get("api_key_secret")
        if secret:
            try:
                return fetch_secret(secret, self._gateway.settings.aws_region)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                raise ProviderError(f"Provider '{self.name}': its API key could not be read from "
                                    f"AWS Secrets Manager secret '{secret}' ({code}).",
                                    code="provider_not_configured", status=503) from None
        raise ProviderError(f"Provider '{self.name}' has no API key: set "
                            + ("OPENAI_API_KEY, or " if self.name == "openai" else "")
                            + f"plugin_settings.openai_provider ({self.name}) api_key or api_key_secret.",
                            code="provider_not_configured", status=503)

    def client(self):
        """The SDK client, built on first use and reused."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client(self._api_key())
        return self._client

    def _build_client(self, api_key: str):
        import openai

        settings = self._gateway.settings
        common = {"api_key": api_key, "max_retries": 0, "default_headers": self._config.get("headers"),
                  "timeout": openai.Timeout(settings.provider_timeout,
                                            connect=settings.provider_connect_timeout)}
        if self._config.get("azure_endpoint"):
            return openai.AzureOpenAI(azure_endpoint=self._config["azure_endpoint"],
                                      api_version=self._config.get("api_version", "2024-10-21"), **common)
        return openai.OpenAI(base_url=self._config.get("base_url"), **common)

    def _timeout(self):
        import openai

        settings = self._gateway.settings
        left = time_left()
        total = settings.provider_timeout if left is None else max(0.1, min(settings.provider_timeout, left))
        return openai.Timeout(total, connect=min(settings.provider_connect_timeout, total))

    def complete(self, completion: Completion) -> Result:
        """One chat completion, translated to a :class:`Result` (``n`` > 1: ``extra_choices``).

        The request goes through the SDK's own client (base URL, Azure deployment paths,
        auth, timeouts, its error types) but with ``client.post(..., cast_to=object)``, its
        documented way to send a body as is and get the decoded JSON back: the typed
        ``create`` would walk every message through its TypedDict transform and build
        pydantic models of the answer, most of the gateway's CPU per request, only for the
        gateway to read five fields of it.
        """
        client = self.client()
        try:
            answer = client.post("/chat/completions", cast_to=object, options={"timeout": self._timeout()},
                                 body={"model": completion.model, "messages": completion.messages,
                                       **completion.parameters})
            model = answer.get("model") or completion.model
            results = [_result(choice, model) for choice in answer.get("choices") or ()]
            usage = _usage(answer.get("usage"))
        except Exception as exc:
            raise self._translate(exc) from None
        if not results:
            raise ProviderError(f"Provider '{self.name}' answered without a choice.",
                                code="provider_bad_response")
        first = results[0]
        first.usage, first.extra_choices = usage or Usage(), results[1:]
        return first

    def stream(self, completion: Completion) -> Iterator[Chunk]:
        """Stream the answer; usage is always requested (and forwarded last).

        As :meth:`complete`, through ``client.post``: the SDK's ``Stream`` parses the
        Server-Sent Events and raises an error event, each event's JSON is read as is.
        """
        import openai

        client = self.client()
        parameters = dict(completion.parameters)
        parameters["stream_options"] = {**parameters.get("stream_options", {}), "include_usage": True}
        upstream = None
        try:
            upstream = client.post("/chat/completions", cast_to=object, stream=True,
                                   stream_cls=openai.Stream[object], options={"timeout": self._timeout()},
                                   body={"model": completion.model, "messages": completion.messages,
                                         "stream": True, **parameters})
            for event in upstream:
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    tool_calls = delta.get("tool_calls")
                    yield Chunk(text=delta.get("content") or "", index=choice.get("index", 0),
                                finish_reason=choice.get("finish_reason"),
                                tool_calls=[_without_none(call) for call in tool_calls] if tool_calls else None)
                usage = _usage(event.get("usage"))
                if usage is not None:
                    yield Chunk(usage=usage)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self._translate(exc) from None
        finally:
            if upstream is not None:
                upstream.close()

    def _translate(self, exc: Exception) -> ProviderError:
        import openai

        name = self.name
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(f"Provider '{name}' did not answer in time.")
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(f"Provider '{name}' could not be reached or dropped the connection.",
                                 retryable=True, code="provider_unreachable")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                return ProviderError(f"Provider '{name}' answered {status}.", retryable=True,
                                     retry_after=_seconds(exc.response.headers.get("retry-after")),
                                     code="provider_rate_limited" if status == 429 else "provider_error")
            if status in (401, 403):
                return ProviderError(f"Provider '{name}' refused the gateway's credentials.",
                                     code="provider_auth_failed")
            return UpstreamRejected(f"Provider '{name}' rejected the request: {_upstream_message(exc)}")
        if isinstance(exc, openai.APIError):  # an error event inside a stream
            return ProviderError(f"Provider '{name}' failed mid-stream: {str(exc.message)[:200]}",
                                 code="provider_error")
        return ProviderError(f"Provider '{name}' returned an answer the gateway could not read.",
                             code="provider_bad_response")


def _result(choice: dict[str, Any], model: str) -> Result:
    """One choice of an answer's JSON."""
    message = choice["message"]
    tool_calls = message.get("tool_calls")
    return Result(text=message.get("content") or "", model=model,
                  finish_reason=choice.get("finish_reason") or "stop",
                  tool_calls=[_without_none(call) for call in tool_calls] if tool_calls else None)


def _without_none(value: Any) -> Any:
    """``value`` without null fields, at any depth (as the SDK's ``model_dump(exclude_none=True)``)."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _usage(usage: dict[str, Any] | None) -> Usage | None:
    """The ``usage`` object of an answer or of a stream's last event."""
    if usage is None:
        return None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                 completion_tokens=usage.get("completion_tokens") or 0, cached_tokens=cached)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _upstream_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") or "no details"
    return str(message)[:500]


def upstream_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each upstream's settings by provider name: ``upstreams``, or the one ``openai`` upstream."""
    if "upstreams" in config:
        return dict(config["upstreams"])
    return {"openai": {"api_key": config.get("api_key") or os.environ.get("OPENAI_API_KEY"),
                       "base_url": config.get("base_url") or os.environ.get("OPENAI_BASE_URL"),
                       "api_key_secret": config.get("api_key_secret")}}


@hookimpl
def gateway_register_providers(gateway):
    """Register one provider per configured upstream unless ``openai_provider_enabled`` is off;
    an upstream URL the settings do not allow stops start-up (``gateway/upstreams.py``)."""
    if not gateway.settings.openai_provider_enabled:
        return None
    from gateway.upstreams import check_upstream_url

    config = gateway.settings.plugin_config("openai_provider")
    upstreams = upstream_configs(config)
    for name, upstream in upstreams.items():
        for setting in ("base_url", "azure_endpoint"):
            if upstream.get(setting):
                check_upstream_url(upstream[setting], gateway.settings, f"openai_provider {name} {setting}")
    return [OpenAIProvider(name, upstream, gateway) for name, upstream in upstreams.items()]
