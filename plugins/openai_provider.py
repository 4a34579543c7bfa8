"""OpenAI (and any OpenAI-compatible endpoint) through the official ``openai`` SDK.

Settings (``plugin_settings.openai_provider``): ``api_key`` (default
``OPENAI_API_KEY``), ``base_url`` (default ``OPENAI_BASE_URL``), ``models``
(name -> [input, output, cached input] USD per million tokens). The SDK is
imported on the first call, and one client per app is reused; its own retries
are off because the gateway keeps the one retry loop.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from gateway import hookimpl
from gateway.errors import ProviderError, ProviderTimeout, UpstreamRejected
from gateway.types import Chunk, Completion, Price, Result, Usage

#: USD per million tokens: input, output, cached input.
DEFAULT_MODELS = {
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "o4-mini": (1.10, 4.40, 0.275),
}


class OpenAIProvider:
    """One OpenAI-compatible upstream."""

    def __init__(self, name: str, api_key: str | None, base_url: str | None,
                 models: dict[str, Price], timeout: float):
        self.name = name
        self._api_key = api_key
        self._base_url = base_url
        self._models = models
        self._timeout = timeout
        self._client = None
        self._lock = threading.Lock()

    def models(self) -> dict[str, Price]:
        """The models this upstream serves, with prices."""
        return self._models

    def client(self):
        """The SDK client, built on first use and reused."""
        if self._client is None:
            if not self._api_key:
                raise ProviderError(f"Provider '{self.name}' has no API key: set OPENAI_API_KEY "
                                    f"(or plugin_settings.{self.name}.api_key).",
                                    code="provider_not_configured", status=503)
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(
                        api_key=self._api_key, base_url=self._base_url, max_retries=0,
                        timeout=openai.Timeout(self._timeout, connect=min(5.0, self._timeout)))
        return self._client

    def complete(self, completion: Completion) -> Result:
        """One chat completion, translated to a :class:`Result`."""
        client = self.client()
        try:
            response = client.chat.completions.create(
                model=completion.model, messages=completion.messages, **completion.parameters)
        except Exception as exc:
            raise self._translate(exc) from None
        choice = response.choices[0]
        usage = response.usage
        cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0
        tool_calls = ([call.model_dump(exclude_none=True) for call in choice.message.tool_calls]
                      if choice.message.tool_calls else None)
        return Result(text=choice.message.content or "", model=response.model,
                      finish_reason=choice.finish_reason or "stop", tool_calls=tool_calls,
                      usage=Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                                  completion_tokens=usage.completion_tokens if usage else 0,
                                  cached_tokens=cached))

    def stream(self, completion: Completion) -> Iterator[Chunk]:
        """Streaming arrives with the providers issue; until then it is refused plainly."""
        raise ProviderError(f"Provider '{self.name}' does not stream yet.", code="stream_unsupported")

    def _translate(self, exc: Exception) -> ProviderError:
        import openai

        name = self.name
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(f"Provider '{name}' did not answer in time.")
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(f"Provider '{name}' could not be reached.", retryable=True,
                                 code="provider_unreachable")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                retry_after = exc.response.headers.get("retry-after")
                return ProviderError(f"Provider '{name}' answered {status}.", retryable=True,
                                     retry_after=_seconds(retry_after),
                                     code="provider_rate_limited" if status == 429 else "provider_error")
            if status in (401, 403):
                return ProviderError(f"Provider '{name}' refused the gateway's credentials.",
                                     code="provider_auth_failed")
            return UpstreamRejected(f"Provider '{name}' rejected the request: {_upstream_message(exc)}")
        return ProviderError(f"Provider '{name}' returned an answer the gateway could not read.",
                             code="provider_bad_response")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _upstream_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") or "no details"
    return str(message)[:500]


@hookimpl
def gateway_register_providers(gateway):
    """Register the OpenAI provider unless ``openai_provider_enabled`` is off."""
    if not gateway.settings.openai_provider_enabled:
        return None
    config = gateway.settings.plugin_config("openai_provider")
    models = {name: Price(*prices) for name, prices in config.get("models", DEFAULT_MODELS).items()}
    return [OpenAIProvider(
        name="openai",
        api_key=config.get("api_key") or os.environ.get("OPENAI_API_KEY"),
        base_url=config.get("base_url") or os.environ.get("OPENAI_BASE_URL"),
        models=models,
        timeout=gateway.settings.provider_timeout)]
