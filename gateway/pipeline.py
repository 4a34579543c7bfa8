"""The one flow of a completion. This is the only place that knows the order:

authenticate → limit → validate → enrich → select → call → record.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace

from flask import Request, g
from marshmallow import Schema

from gateway.errors import AuthenticationError, GatewayError, ModelNotFound, PermissionDenied, ProviderError
from gateway.http import read_json_body
from gateway.schemas import load_completion
from gateway.types import Caller, Completion, Provider, Result, UsageRecord

logger = logging.getLogger(__name__)


@dataclass
class Answer:
    """What a view renders: the result, who served it, and the request's record."""

    completion: Completion
    result: Result
    provider: str
    model: str
    record: UsageRecord


def authenticate(gateway, request: Request, permission: str) -> Caller:
    """The caller of ``request``, holding ``permission``; 401 or 403 otherwise."""
    caller = gateway.hook.gateway_authenticate(request=request, gateway=gateway)
    if caller is None:
        raise AuthenticationError(
            "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'."
            if not (request.headers.get("X-API-Key") or request.headers.get("Authorization"))
            else "Invalid API key.")
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


def call_providers(candidates: list[tuple[Provider, str]], completion: Completion,
                   record: UsageRecord) -> tuple[Result, Provider, str]:
    """Try each candidate in order; a retryable failure moves on to the next (fallback)."""
    error: ProviderError | None = None
    for provider, model in candidates:
        record.provider, record.model = provider.name, model
        started = time.perf_counter()
        try:
            result = provider.complete(replace(completion, model=model))
        except ProviderError as exc:
            logger.warning("provider failed", extra={"provider": provider.name, "model": model,
                                                     "error_code": exc.code, "retryable": exc.retryable})
            error = exc
            if not exc.retryable:
                raise
            continue
        finally:
            record.upstream_latency_ms += (time.perf_counter() - started) * 1000
        return result, provider, model
    assert error is not None
    raise error


def notify_after_response(gateway, record: UsageRecord) -> None:
    """Call every ``gateway_after_response`` implementation; one that raises is logged and skipped.

    pluggy stops a hook call at the first exception, so each implementation is
    called on its own here (``HookImpl.argnames`` tells which arguments it takes).
    """
    arguments = {"record": record, "gateway": gateway}
    for impl in reversed(gateway.hook.gateway_after_response.get_hookimpls()):
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except Exception:
            logger.exception("after-response plugin failed", extra={"plugin": impl.plugin_name})


def complete(gateway, request: Request, schema: Schema) -> Answer:
    """Run one completion through the whole flow and record it, whatever happens.

    The body is read only after authentication, so an anonymous caller learns
    nothing but 401.
    """
    started = time.perf_counter()
    record = UsageRecord(request_id=uuid.uuid4().hex, correlation_id=g.correlation_id,
                         timestamp=time.time())
    caller = None
    try:
        caller = authenticate(gateway, request, "completions")
        record.user_id, record.api_key_id, record.tier = caller.user_id, caller.key_id, caller.tier
        gateway.limiter.hit(caller)
        completion = load_completion(schema, read_json_body())
        record.model = completion.model
        gateway.limiter.check_spend(caller, completion)
        gateway.hook.gateway_enrich_request(completion=completion, caller=caller, gateway=gateway)
        candidates = select_candidates(gateway, completion, caller)
        result, provider, model = call_providers(candidates, completion, record)
        usage = result.usage
        record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        price = provider.models().get(model)
        record.cost = price.cost(usage) if price else 0.0
        gateway.limiter.record_usage(caller, usage.total_tokens, record.cost)
        return Answer(completion, result, provider.name, model, record)
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
