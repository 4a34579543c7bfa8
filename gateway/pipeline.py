"""The one flow of a completion. This is the only place that knows the order:

authenticate → limit → validate → enrich → select → call → record.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from flask import Request, g
from marshmallow import Schema

from gateway import cache, metrics, request_log
from gateway.errors import AuthenticationError, GatewayError, ModelNotFound, PermissionDenied, ProviderError
from gateway.http import read_json_body
from gateway.plugins import is_optional
from gateway.resilience import counts_as_failure
from gateway.schemas import load_completion
from gateway.streaming import MeteredStream
from gateway.types import Caller, Chunk, Completion, Price, Provider, Result, UsageRecord

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Answer:
    """What a view renders: the result (or, streaming, the chunks), who served it, the record."""

    completion: Completion
    result: Result | None
    provider: str
    model: str
    record: UsageRecord
    #: ``X-Cache``: HIT or MISS for a cacheable request, else "".
    cache_status: str = ""
    chunks: MeteredStream | None = None


def authenticate(gateway, request: Request, permission: str) -> Caller:
    """The caller of ``request``, holding ``permission``; 401 or 403 otherwise."""
    try:
        caller = gateway.hook.gateway_authenticate(request=request, gateway=gateway)
        if caller is None:
            raise AuthenticationError(
                "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'."
                if not (request.headers.get("X-API-Key") or request.headers.get("Authorization"))
                else "Invalid API key.")
    except AuthenticationError:
        metrics.count_auth_failure(gateway)
        raise
    if not caller.can(permission):
        raise PermissionDenied(f"This API key lacks the '{permission}' permission.")
    return caller


def select_candidates(gateway, completion: Completion, caller: Caller) -> list[tuple[Provider, str]]:
    """The ordered (provider, model) candidates for ``completion``; 404 when there are none."""
    candidates = gateway.hook.gateway_select_provider(
        completion=completion, caller=caller, providers=gateway.providers, gateway=gateway)
    if not candidates:
        named = f"{completion.provider}/{completion.model}" if completion.provider else completion.model
        raise ModelNotFound(f"The model '{named}' does not exist or is not served by this gateway; "
                            "GET /v1/models lists the available models.")
    return candidates


def call_providers(gateway, candidates: list[tuple[Provider, str]], completion: Completion,
                   record: UsageRecord) -> tuple[Result, Provider, str]:
    """Ask the candidates in order through the resilience loop (retries, breakers, fallback)."""
    return gateway.resilience.call(
        candidates, lambda provider, model: provider.complete(replace(completion, model=model)), record)


def open_stream(gateway, candidates: list[tuple[Provider, str]], completion: Completion,
                record: UsageRecord) -> tuple[Chunk | None, Iterator[Chunk], Provider, str]:
    """Start a stream through the resilience loop; it counts as started once its first chunk
    arrived, so a failure before that is retried, falls back, or is an ordinary JSON error."""

    def attempt(provider: Provider, model: str) -> tuple[Chunk | None, Iterator[Chunk]]:
        chunks = iter(provider.stream(replace(completion, model=model)))
        try:
            return next(chunks, None), chunks
        except BaseException:
            getattr(chunks, "close", lambda: None)()
            raise

    (first, chunks), provider, model = gateway.resilience.call(candidates, attempt, record)
    return first, chunks, provider, model


def price_of(gateway, provider: Provider, model: str) -> Price | None:
    """The price of ``model`` at ``provider``: the model table's, else the provider's own."""
    return gateway.models.price(provider.name, model) or provider.models().get(model)


def answer_from_cache(gateway, completion: Completion, cached: cache.Lookup, record: UsageRecord) -> Answer:
    """The stored answer; its record costs nothing and notes what the provider call would have cost."""
    hit = cached.hit
    record.provider, record.model, record.cached = hit.provider, hit.model, True
    record.prompt_tokens, record.completion_tokens = hit.result.usage.prompt_tokens, hit.result.usage.completion_tokens
    record.cost, record.saved_cost = 0.0, hit.cost
    record.completion_text = request_log.loggable_text(gateway, hit.result.text)
    return Answer(completion, hit.result, hit.provider, hit.model, record, cached.status)


def enrich(gateway, completion: Completion, caller: Caller) -> None:
    """Call every ``gateway_enrich_request`` implementation.

    A :class:`GatewayError` (a guardrail's 400) always fails the request. Any other
    exception fails it too (a 500) unless the plugin declared ``gateway_optional =
    True``: then it is logged and the request goes on without that plugin.
    """
    def failed(impl, exc: Exception) -> None:
        if isinstance(exc, GatewayError) or not is_optional(impl.plugin):
            raise exc
        logger.error("optional enrich plugin failed; skipped", exc_info=exc,
                     extra={"plugin": impl.plugin_name})

    gateway.pm.call_each("gateway_enrich_request",
                         {"completion": completion, "caller": caller, "gateway": gateway}, failed)


def notify_after_response(gateway, record: UsageRecord) -> None:
    """Call every ``gateway_after_response`` implementation; one that raises is logged and skipped."""
    def failed(impl, exc: Exception) -> None:
        logger.error("after-response plugin failed", exc_info=exc, extra={"plugin": impl.plugin_name})

    gateway.pm.call_each("gateway_after_response", {"record": record, "gateway": gateway}, failed)


def complete(gateway, request: Request, schema: Schema) -> Answer:
    """Run one completion through the whole flow and record it, whatever happens.

    The body is read only after authentication, so an anonymous caller learns
    nothing but 401.
    """
    started = time.perf_counter()
    record = UsageRecord(request_id=g.request_id, correlation_id=g.correlation_id, timestamp=time.time())
    caller = None
    try:
        caller = authenticate(gateway, request, "completions")
        record.user_id, record.api_key_id, record.tier = caller.user_id, caller.key_id, caller.tier
        gateway.limiter.hit(caller)
        completion = load_completion(schema, read_json_body(), gateway.settings)
        record.model = completion.model
        gateway.limiter.check_spend(caller, completion)
        enrich(gateway, completion, caller)
        record.prompt_text = request_log.loggable_prompt(gateway, completion.messages)
        candidates = select_candidates(gateway, completion, caller)
        if completion.stream:
            answer = start_streaming(gateway, candidates, completion, caller, record, started)
            caller = None  # the stream records the request when it ends
            return answer
        cached = cache.lookup(gateway, request.headers, completion, caller)
        if cached.hit is not None:
            return answer_from_cache(gateway, completion, cached, record)
        result, provider, model = call_providers(gateway, candidates, completion, record)
        usage = result.usage
        record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        price = price_of(gateway, provider, model)
        record.cost = price.cost(usage) if price else 0.0
        gateway.limiter.record_usage(caller, usage.total_tokens, record.cost)
        record.completion_text = request_log.loggable_text(gateway, result.text)
        cached.store(cache.CachedAnswer(result, provider.name, model, record.cost))
        return Answer(completion, result, provider.name, model, record, cached.status)
    except GatewayError as exc:
        record.status, record.error_code = exc.status, exc.code
        raise
    except Exception:
        record.status, record.error_code = 500, "internal_error"
        raise
    finally:
        record.latency_ms = (time.perf_counter() - started) * 1000
        if caller is not None:
            notify_after_response(gateway, record)


def start_streaming(gateway, candidates: list[tuple[Provider, str]], completion: Completion,
                    caller: Caller, record: UsageRecord, started: float) -> Answer:
    """Open the stream and wrap it so that the request is recorded exactly once when it ends,
    fails mid-stream, or the client goes away."""
    record.streamed = True
    first, chunks, provider, model = open_stream(gateway, candidates, completion, record)
    price = price_of(gateway, provider, model)

    def finish(stream: MeteredStream, error: GatewayError | None) -> None:
        usage = stream.usage
        record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        record.cost = price.cost(usage) if price else 0.0
        gateway.limiter.record_usage(caller, usage.total_tokens, record.cost)
        record.completion_text = request_log.loggable_text(gateway, stream.text)
        if error is not None:
            record.status, record.error_code = error.status, error.code
            if isinstance(error, ProviderError) and counts_as_failure(error):
                gateway.resilience.breaker(provider.name, model).failure()
        record.latency_ms = (time.perf_counter() - started) * 1000
        notify_after_response(gateway, record)

    return Answer(completion, None, provider.name, model, record, chunks=MeteredStream(first, chunks, finish))
