"""OpenAI, Azure OpenAI and any OpenAI-compatible endpoint: the caller's JSON forwarded over a pooled connection.

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
``api_key``).

This is a proxy: the request body is the caller's JSON (every field the gateway does
not read passes unchanged, the model swapped for the upstream's id), serialized once
and sent over a pooled urllib3 connection; the answer is the upstream's own bytes,
parsed once for usage and the request log. The openai SDK's request machinery (its
typed models, httpx) cost more CPU than the rest of the gateway per request, so it is
not on this path (``gateway/upstream_http.py`` says why not urllib3 either); the SDK
is what the compatibility tests drive against the gateway.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any
from urllib.parse import urlsplit

from marshmallow import fields as f

from gateway import hookimpl
from gateway.errors import ProviderError, ProviderRateLimited, ProviderTimeout, UpstreamRejected, scrub
from gateway.resilience import time_left
from gateway.setting_fields import setting
from gateway.sse import split_events
from gateway.types import ChatAnswer, ChatRequest, Chunk, EmbeddingAnswer, EmbeddingRequest, Price, Usage
from gateway.upstream_http import ConnectionPool, ExchangeError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Upstream statuses worth another attempt besides 429 and 5xx (what OpenAI's own SDK retries).
RETRYABLE_STATUSES = (408, 409)
#: Connections kept open to one upstream (calls in flight beyond it open, then drop, extra ones).
POOL_SIZE = 256


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


class Upstream:
    """Where one provider's requests go: a connection pool, the URL of each route, the auth headers."""

    def __init__(self, config: dict[str, Any], api_key: str):
        self.azure = bool(config.get("azure_endpoint"))
        base = (config.get("azure_endpoint") if self.azure else config.get("base_url")) or DEFAULT_BASE_URL
        self.pool = ConnectionPool(base, POOL_SIZE)
        self.prefix = urlsplit(base).path.rstrip("/")
        auth = {"api-key": api_key} if self.azure else {"Authorization": f"Bearer {api_key}"}
        self.headers = {"Content-Type": "application/json", **auth, **(config.get("headers") or {})}
        self.api_version = config.get("api_version", "2024-10-21")

    def path(self, route: str, model: str) -> str:
        """The request path of ``route`` (``/chat/completions``…) for ``model``: Azure's deployment form."""
        if self.azure:
            return f"{self.prefix}/openai/deployments/{model}{route}?api-version={self.api_version}"
        return self.prefix + route


class OpenAIProvider:
    """One OpenAI-compatible upstream (OpenAI itself, Azure OpenAI, or any compatible server)."""

    def __init__(self, name: str, config: dict[str, Any], gateway):
        self.name = name
        self._config = config
        self._gateway = gateway
        self._upstream: Upstream | None = None
        self._lock = threading.Lock()

    def models(self) -> dict[str, Price]:
        """The upstream model ids the model table routes here, with prices."""
        return self._gateway.models.served_by(self.name)

    def missing(self) -> str | None:
        """The settings to set when this upstream has no API key configured; None when it has one."""
        if self._config.get("api_key") or self._config.get("api_key_secret"):
            return None
        return (("OPENAI_API_KEY, or " if self.name == "openai" else "")
                + f"plugin_settings.openai_provider ({self.name}) api_key or api_key_secret")

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
        raise ProviderError(f"Provider '{self.name}' has no API key: set {self.missing()}.",
                            code="provider_not_configured", status=503)

    def upstream(self) -> Upstream:
        """The connection pool and headers, built on first use and reused."""
        if self._upstream is None:
            with self._lock:
                if self._upstream is None:
                    self._upstream = Upstream(self._config, self._api_key())
        return self._upstream

    @contextmanager
    def _exchange(self, route: str, model: str, body: dict[str, Any],
                  between_events: float | None = None) -> Iterator[HTTPResponse]:
        """POST ``body`` (serialized here, once) to ``route``: the response, its body to read in the block
        (a stream's with ``between_events`` seconds allowed for each read).

        An error status raises the gateway's error for it; a timeout is a 504 and a dropped or
        refused connection a retryable 502, before or during the answer.
        """
        settings = self._gateway.settings
        left = time_left()
        read = settings.provider_timeout if left is None else max(0.1, min(settings.provider_timeout, left))
        upstream = self.upstream()
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            with upstream.pool.post(upstream.path(route, model), data, upstream.headers,
                                    min(settings.provider_connect_timeout, read), read, between_events) as response:
                if response.status >= 400:
                    raise self._status_error(response.status, response.read(), response.headers)
                yield response
        except TimeoutError:
            raise ProviderTimeout(f"Provider '{self.name}' did not answer in time.") from None
        except ExchangeError:
            raise ProviderError(f"Provider '{self.name}' could not be reached or dropped the connection.",
                                retryable=True, code="provider_unreachable") from None

    def _answer(self, route: str, model: str, body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The upstream's answer to ``body``: its bytes, and their JSON (an error status raises)."""
        with self._exchange(route, model, body) as response:
            data = response.read()
        return data, self._json_object(data, "an answer")

    def _events(self, route: str, model: str, body: dict[str, Any]) -> Iterator[tuple[bytes, bytes | None]]:
        """The upstream's stream as (raw event, its ``data``), as each arrives; the connection is
        closed when the iterator is closed early, so a caller who goes away closes the upstream too."""
        with self._exchange(route, model, body, self._gateway.settings.stream_idle_timeout) as response:
            yield from split_events(iter(lambda: response.read1(65536), b""))

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """One chat completion: the upstream's answer as received (``body``), read for usage and the log."""
        data, answer = self._answer("/chat/completions", completion.model, request_body(completion))
        try:
            results = [_result(choice, answer.get("model") or completion.model) for choice in answer["choices"]]
            usage = _usage(answer.get("usage")) or Usage()
        except (KeyError, TypeError, AttributeError):
            results = []
        if not results:
            raise ProviderError(f"Provider '{self.name}' answered without a choice.", code="provider_bad_response")
        first = results[0]
        first.usage, first.extra_choices, first.body = usage, results[1:], data
        return first

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """Stream the answer: each upstream event forwarded as received (``raw``), read for text and
        usage; usage is always asked of the upstream, and reaches the caller only if it asked."""
        body = request_body(completion)
        asked_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        for raw, data in self._events("/chat/completions", completion.model, body):
            if data is None:  # a keep-alive comment
                yield Chunk(raw=raw)
                continue
            if data == b"[DONE]":  # the caller's own ends the stream; read on to the end of the body
                continue
            event = self._event_json(data)
            choices = event.get("choices") or ()
            usage = _usage(event.get("usage"))
            if not choices:
                yield Chunk(usage=usage, raw=raw if asked_usage or usage is None else b"")
                continue
            choice = choices[0]
            delta = choice.get("delta") or {}
            yield Chunk(text=delta.get("content") or "", index=choice.get("index") or 0,
                        finish_reason=choice.get("finish_reason"), usage=usage, raw=raw)

    def embed(self, request: EmbeddingRequest) -> EmbeddingAnswer:
        """``POST /embeddings``: the upstream's answer as received, read for its usage."""
        data, answer = self._answer("/embeddings", request.model,
                                    {"model": request.model, "input": request.input, **request.parameters})
        usage = answer.get("usage") or {}
        return EmbeddingAnswer(data, Usage(prompt_tokens=usage.get("prompt_tokens") or 0),
                               answer.get("model") or request.model)

    def forward(self, route: str, model: str, body: dict[str, Any], stream: bool) -> ChatAnswer | Iterator[Chunk]:
        """An OpenAI route the gateway passes through (``/responses``): the answer as received, or its
        events; usage from the Responses API's ``usage`` (input and output tokens)."""
        body = {**body, "model": model}
        if not stream:
            data, answer = self._answer(route, model, body)
            return ChatAnswer(text=_output_text(answer), model=answer.get("model") or model,
                          usage=_responses_usage(answer.get("usage")), body=data)
        return self._forwarded_events(route, model, body)

    def _forwarded_events(self, route: str, model: str, body: dict[str, Any]) -> Iterator[Chunk]:
        for raw, data in self._events(route, model, body):
            if data is None:
                yield Chunk(raw=raw)
                continue
            event = self._event_json(data)
            kind = event.get("type", "")
            response = event.get("response") if isinstance(event.get("response"), dict) else {}
            yield Chunk(text=(event.get("delta") or "") if kind == "response.output_text.delta" else "",
                        usage=_responses_usage(response.get("usage")) if response.get("usage") else None,
                        finish_reason="stop" if kind == "response.completed" else None, raw=raw)

    def _event_json(self, data: bytes) -> dict[str, Any]:
        """One event's JSON; an ``error`` event, or one that is not JSON, fails the stream."""
        event = self._json_object(data, "a stream event")
        error = event.get("error")
        if error and event.get("type") in (None, "error"):
            message = error.get("message") if isinstance(error, dict) else error
            raise ProviderError(f"Provider '{self.name}' failed mid-stream: {scrub(str(message))[:300]}",
                                code="provider_error")
        return event

    def _json_object(self, data: bytes, what: str) -> dict[str, Any]:
        """``data`` as a JSON object; ``provider_bad_response`` when it is not one."""
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ProviderError(f"Provider '{self.name}' sent {what} the gateway could not read.",
                                code="provider_bad_response")
        return value

    def _status_error(self, status: int, data: bytes, headers) -> ProviderError:
        """The gateway's error for an upstream error answer: 429 and 5xx retryable, 401/403 the
        gateway's own credentials, any other 4xx the caller's, with the upstream's status and error."""
        name = self.name
        error = _error_object(data)
        message = scrub(str(error.get("message") or "no details"))[:500]
        retry_after = _retry_after(headers)
        if status == 429:
            return ProviderRateLimited(f"Provider '{name}' is rate limiting requests: {message}",
                                       retry_after=retry_after)
        if status >= 500 or status in RETRYABLE_STATUSES:
            return ProviderError(f"Provider '{name}' answered {status}.", retryable=True, retry_after=retry_after,
                                 code="provider_error")
        if status in (401, 403):
            return ProviderError(f"Provider '{name}' refused the gateway's credentials.",
                                 code="provider_auth_failed")
        return UpstreamRejected(f"Provider '{name}' rejected the request: {message}", status=status,
                                param=_identifier(error.get("param")), code=_identifier(error.get("code")),
                                type_=_identifier(error.get("type")))


def request_body(completion: ChatRequest) -> dict[str, Any]:
    """The JSON sent upstream: the caller's fields, the upstream's model id, the (enriched) messages."""
    return {"model": completion.model, "messages": completion.messages, **completion.parameters}


def _result(choice: dict[str, Any], model: str) -> ChatAnswer:
    """One choice of an answer's JSON, as the gateway reads it (the caller gets the JSON itself)."""
    message = choice["message"]
    return ChatAnswer(text=message.get("content") or "", model=model,
                  finish_reason=choice.get("finish_reason") or "stop", tool_calls=message.get("tool_calls"))


def _usage(usage: dict[str, Any] | None) -> Usage | None:
    """The ``usage`` object of an answer or of a stream's last event."""
    if not usage:
        return None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                 completion_tokens=usage.get("completion_tokens") or 0, cached_tokens=cached)


def _responses_usage(usage: dict[str, Any] | None) -> Usage:
    """The Responses API's ``usage``: input and output tokens."""
    usage = usage or {}
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(prompt_tokens=usage.get("input_tokens") or 0, completion_tokens=usage.get("output_tokens") or 0,
                 cached_tokens=cached)


def _output_text(answer: dict[str, Any]) -> str:
    """The text of a Responses API answer (its ``output_text`` parts), for the request log."""
    return "".join(part.get("text", "") for item in answer.get("output") or () if isinstance(item, dict)
                   for part in item.get("content") or () if isinstance(part, dict)
                   and part.get("type") == "output_text")


def _error_object(data: bytes) -> dict[str, Any]:
    """The ``error`` object of an upstream's error body (``{}`` when it has none)."""
    try:
        body = json.loads(data)
    except ValueError:
        return {"message": data[:200].decode(errors="replace")} if data else {}
    if not isinstance(body, dict):
        return {}
    error = body.get("error", body)
    return error if isinstance(error, dict) else {"message": str(error)}


def _identifier(value: Any) -> str | None:
    """An upstream error's ``param``, ``code`` or ``type``, scrubbed; None when it gave none."""
    return scrub(str(value))[:100] if value not in (None, "") else None


def _retry_after(headers) -> float | None:
    """Seconds the upstream asked to wait: ``retry-after-ms`` (OpenAI's), else ``retry-after`` seconds."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name) or "")
        except ValueError:
            continue
        if 0 <= value / scale <= 600:
            return value / scale
    return None


def upstream_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each upstream's settings by provider name: ``upstreams``, or the one ``openai`` upstream."""
    if "upstreams" in config:
        return dict(config["upstreams"])
    return {"openai": {"api_key": config.get("api_key") or os.environ.get("OPENAI_API_KEY"),
                       "base_url": config.get("base_url") or os.environ.get("OPENAI_BASE_URL"),
                       "api_key_secret": config.get("api_key_secret")}}


@dataclass(frozen=True, eq=False)
class OpenAISettings:
    """The OpenAI provider's declared setting (its upstreams are in ``plugin_settings.openai_provider``)."""

    openai_provider_enabled: bool = setting(True, f.Boolean(), "`false` registers no OpenAI provider (its "
                                            "models leave `/v1/models`, readiness stops naming it)",
                                            alias="OPENAI_PROVIDER_ENABLED")


@hookimpl
def gateway_declare_settings():
    """The OpenAI provider's settings."""
    return OpenAISettings


@hookimpl
def gateway_register_providers(gateway):
    """Register one provider per configured upstream unless ``openai_provider_enabled`` is off;
    an upstream URL the settings do not allow stops start-up (``gateway/upstreams.py``)."""
    if not gateway.plugin_settings[OpenAISettings].openai_provider_enabled:
        return None
    from gateway.upstreams import check_upstream_url

    config = gateway.settings.plugin_config("openai_provider")
    upstreams = upstream_configs(config)
    for name, upstream in upstreams.items():
        for url in ("base_url", "azure_endpoint"):
            if upstream.get(url):
                check_upstream_url(upstream[url], gateway.settings, f"openai_provider {name} {url}")
    return [OpenAIProvider(name, upstream, gateway) for name, upstream in upstreams.items()]
