"""The one flow of a request. This is the only place that knows the order:

authenticate → limit → validate → authorize the model → enrich → select → call → record.

Chat completions take every step; embeddings and the Responses API take the same
steps but enrichment (there are no chat messages to enrich).
"""
from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from flask import Request, g
from marshmallow import Schema

from gateway import answer_checks, cache, metrics, request_log
from gateway.authorizer import caller_from_authorizer
from gateway.concurrency import Slot
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    RateLimited,
)
from gateway.http import read_json_body
from gateway.plugins import is_optional
from gateway.ratelimit import Spend
from gateway.resilience import counts_as_failure
from gateway.schemas import load_completion, load_embedding, load_responses_request
from gateway.streaming import MeteredStream
from gateway.types import Caller, ChatAnswer, ChatRequest, Chunk, Price, Provider, RequestLogRecord, Usage

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Answer:
    """What a view renders: the result (or, streaming, the chunks), who served it, the record."""

    completion: ChatRequest
    result: ChatAnswer | None
    provider: str
    model: str
    record: RequestLogRecord
    #: ``X-Cache``: HIT or MISS for a cacheable request, else "".
    cache_status: str = ""
    chunks: MeteredStream | None = None


def authenticate(gateway, request: Request, permission: str) -> Caller:
    """The caller of ``request``, holding ``permission``; 401 or 403 otherwise.

    Behind the API Gateway authorizer (on Lambda) the authorizer asked the auth plugins already:
    the caller it vouched for is taken from the request's context instead of asking them again.
    """
    try:
        caller = caller_from_authorizer(request.environ) \
            or gateway.hook.gateway_authenticate(request=request, gateway=gateway)
        if caller is None:
            raise AuthenticationError(
                "Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'."
                if not (request.headers.get("X-API-Key") or request.headers.get("Authorization"))
                else "Invalid API key.")
    except AuthenticationError:
        metrics.count_auth_failure(gateway)
        raise
    g.key_id = caller.key_id  # for the access line (gateway/logs.py)
    if not caller.can(permission):
        raise PermissionDenied(f"This API key lacks the '{permission}' permission.")
    return caller


def admit(gateway, request: Request, permission: str) -> Caller:
    """The caller of ``request``, holding ``permission``, counted against its rate limits: what
    every authenticated route other than the recorded calls starts with (401, 403, 429)."""
    caller = authenticate(gateway, request, permission)
    limit(gateway, caller)
    return caller


def limit(gateway, caller: Caller) -> None:
    """Count a request of ``caller`` that is not a recorded call (model listing, usage, admin, MCP)
    against its rate limits; a refusal (429) is recorded, folded with the key's others of its
    minute (gateway/refusals.py), as a recorded call's is."""
    started = time.perf_counter()
    try:
        gateway.limiter.hit(caller)
    except RateLimited as exc:
        notify_after_response(gateway, RequestLogRecord(
            request_id=g.request_id, correlation_id=g.correlation_id, timestamp=time.time(),
            user_id=caller.user_id, api_key_id=caller.key_id, tier=caller.tier, status=exc.status,
            error_code=exc.code, latency_ms=(time.perf_counter() - started) * 1000))
        raise


def authorize_model(caller: Caller, model: str) -> None:
    """403 when ``caller`` may not use ``model`` (its ``allowed_models``, as the request names the model)."""
    if caller.allowed_models is not None and model not in caller.allowed_models:
        raise PermissionDenied(f"This API key may not use the model '{model}'; it may use: "
                               f"{', '.join(sorted(caller.allowed_models)) or 'none'}.", code="model_not_allowed")


def select_candidates(gateway, completion: ChatRequest, caller: Caller) -> list[tuple[Provider, str]]:
    """The ordered (provider, model) candidates for ``completion``; 404 when there are none."""
    candidates = gateway.hook.gateway_select_provider(
        completion=completion, caller=caller, providers=gateway.providers, gateway=gateway)
    if not candidates:
        named = f"{completion.provider}/{completion.model}" if completion.provider else completion.model
        raise ModelNotFound(f"The model '{named}' does not exist or is not served by this gateway; "
                            "GET /v1/models lists the available models.", param="model")
    return candidates


def call_providers(gateway, candidates: list[tuple[Provider, str]], completion: ChatRequest,
                   record: RequestLogRecord) -> tuple[ChatAnswer, Provider, str]:
    """Ask the candidates in order through the resilience loop (retries, breakers, fallback)."""
    return gateway.resilience.call(
        candidates, lambda provider, model: provider.complete(replace(completion, model=model)), record)


def open_stream(gateway, candidates: list[tuple[Provider, str]], record: RequestLogRecord,
                start: Callable[[Provider, str], Iterable[Chunk]],
                ) -> tuple[Chunk | None, Iterator[Chunk], Provider, str]:
    """Start a stream (``start(provider, model)``) through the resilience loop; it counts as started
    once its first chunk arrived, so a failure before that is retried, falls back, or is an
    ordinary JSON error."""

    def attempt(provider: Provider, model: str) -> tuple[Chunk | None, Iterator[Chunk]]:
        chunks = iter(start(provider, model))
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


def check_result(gateway, completion: ChatRequest, caller: Caller, result: ChatAnswer, provider: str, model: str,
                 record: RequestLogRecord) -> ChatAnswer:
    """``result`` as the answer checks leave it (annotated or with text replaced); raises their refusal."""
    checked = answer_checks.check(gateway, completion, caller, [result.text, *(c.text for c in result.extra_choices)],
                                  streamed=False, provider=provider, model=model, record=record)
    if checked is None:
        return result
    result = answer_checks.apply(checked, completion, result)
    if checked.replaced:
        record.completion_text = request_log.loggable_text(gateway, result.text)
    return result


def answer_from_cache(gateway, completion: ChatRequest, cached: cache.Lookup, record: RequestLogRecord) -> Answer:
    """The stored answer; its record costs nothing and notes what the provider call would have cost."""
    hit = cached.hit
    record.provider, record.model, record.cached = hit.provider, hit.model, True
    record.prompt_tokens, record.completion_tokens = hit.result.usage.prompt_tokens, hit.result.usage.completion_tokens
    record.cost, record.saved_cost = 0.0, hit.cost
    record.completion_text = request_log.loggable_text(gateway, hit.result.text)
    return Answer(completion, hit.result, hit.provider, hit.model, record, cached.status)


def enrich(gateway, completion: ChatRequest, caller: Caller, request: Request) -> None:
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
                         {"completion": completion, "caller": caller, "request": request, "gateway": gateway},
                         failed)


def notify_after_response(gateway, record: RequestLogRecord) -> None:
    """Call every ``gateway_after_response`` implementation; one that raises is logged and skipped."""
    def failed(impl, exc: Exception) -> None:
        logger.error("after-response plugin failed", exc_info=exc, extra={"plugin": impl.plugin_name})

    gateway.pm.call_each("gateway_after_response", {"record": record, "gateway": gateway}, failed)


@dataclass(eq=False)
class RecordedCall:
    """One request on its way through the flow: its record, its caller, and whether a stream
    (which records the request when it ends) took the recording over."""

    record: RequestLogRecord
    started: float
    caller: Caller | None = None
    streaming: bool = False
    #: The caller's tokens and spend so far, read with the rate-limit hit (None: the store failed open).
    spend: Spend | None = None
    #: The call's place among its key's calls in flight, given back when it ends (None: failed open).
    slot: Slot | None = None

    def release_slot(self) -> None:
        """Give the call's slot back (the call has ended)."""
        if self.slot is not None:
            self.slot.release()


@contextmanager
def recorded_call(gateway, request: Request, permission: str) -> Iterator[RecordedCall]:
    """Authenticate and rate-limit ``request`` and take one of its key's slots for calls in flight,
    then record it whatever happens in the block: its status and error code, its latency, every
    ``gateway_after_response`` implementation. The slot is given back as the block ends, or, for a
    stream, when the stream ends (:func:`start_streaming`).

    The body is read only inside the block, after authentication, so an anonymous
    caller learns nothing but 401.
    """
    call = RecordedCall(RequestLogRecord(request_id=g.request_id, correlation_id=g.correlation_id,
                                    timestamp=time.time()), time.perf_counter())
    record = call.record
    try:
        call.caller = caller = authenticate(gateway, request, permission)
        record.user_id, record.api_key_id, record.tier = caller.user_id, caller.key_id, caller.tier
        call.spend, call.slot = gateway.limiter.enter(caller)
        yield call
    except GatewayError as exc:
        record.status, record.error_code = exc.status, exc.code
        raise
    except Exception:
        record.status, record.error_code = 500, "internal_error"
        raise
    finally:
        record.latency_ms = (time.perf_counter() - call.started) * 1000
        if call.caller is not None and not call.streaming:
            call.release_slot()
            notify_after_response(gateway, record)


def account(gateway, call: RecordedCall, provider: Provider, model: str, usage: Usage) -> None:
    """Record ``usage`` of ``model`` at ``provider``: tokens and cost in the record (the limits are
    charged from the record when the request log writes it: ``RequestLimiter.charge``)."""
    record = call.record
    record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    price = price_of(gateway, provider, model)
    record.cost = price.cost(usage) if price else 0.0


def complete(gateway, request: Request, schema: Schema) -> Answer:
    """Run one chat completion through the whole flow, recorded whatever happens."""
    with recorded_call(gateway, request, "completions") as call:
        record, caller = call.record, call.caller
        completion = load_completion(schema, read_json_body(), gateway.settings)
        record.model = completion.model
        authorize_model(caller, completion.model)
        parameters = completion.parameters
        gateway.limiter.check_spend(caller, parameters.get("max_tokens") or parameters.get("max_completion_tokens"),
                                    call.spend)
        enrich(gateway, completion, caller, request)
        record.prompt_text = request_log.loggable_prompt(gateway, completion.messages)
        candidates = select_candidates(gateway, completion, caller)
        if completion.stream:
            return start_streaming(gateway, call, candidates, completion, lambda provider, model: provider.stream(
                replace(completion, model=model)))
        cached = cache.lookup(gateway, request.headers, completion, caller)
        if cached.hit is not None:  # checked again: the catalog or the checks may have changed since
            answer = answer_from_cache(gateway, completion, cached, record)
            answer.result = check_result(gateway, completion, caller, answer.result, answer.provider, answer.model,
                                         record)
            return answer
        result, provider, model = call_providers(gateway, candidates, completion, record)
        account(gateway, call, provider, model, result.usage)
        record.completion_text = request_log.loggable_text(gateway, result.text)
        cached.store(cache.CachedAnswer(result, provider.name, model, record.cost))
        result = check_result(gateway, completion, caller, result, provider.name, model, record)
        return Answer(completion, result, provider.name, model, record, cached.status)


def embed(gateway, request: Request) -> Answer:
    """``POST /v1/embeddings`` through the flow: authenticated, limited, routed, cached, recorded.

    Embeddings are deterministic, so every request is cacheable (``Cache-Control:
    no-store`` opts out). A provider without ``embed`` answers 400 naming itself.
    """
    with recorded_call(gateway, request, "completions") as call:
        record, caller = call.record, call.caller
        embedding = load_embedding(read_json_body())
        record.model = embedding.model
        authorize_model(caller, embedding.model)
        gateway.limiter.check_spend(caller, None, call.spend)
        routed = ChatRequest(model=embedding.model, messages=[], parameters={"input": embedding.input,
                            **embedding.parameters}, options={"route": "embeddings"})
        candidates = select_candidates(gateway, routed, caller)
        cached = cache.lookup(gateway, request.headers, routed, caller, always=True)
        if cached.hit is not None:
            return answer_from_cache(gateway, routed, cached, record)

        def attempt(provider: Provider, model: str) -> ChatAnswer:
            answer = capability(provider, "embed", "embeddings")(replace(embedding, model=model))
            return ChatAnswer(text="", model=answer.model, usage=answer.usage, body=answer.body)

        result, provider, model = gateway.resilience.call(candidates, attempt, record)
        account(gateway, call, provider, model, result.usage)
        cached.store(cache.CachedAnswer(result, provider.name, model, record.cost))
        return Answer(routed, result, provider.name, model, record, cached.status)


def respond(gateway, request: Request) -> Answer:
    """``POST /v1/responses`` (OpenAI's Responses API), passed through to a provider that can
    ``forward`` it; streamed or not, recorded with its tokens and cost."""
    with recorded_call(gateway, request, "completions") as call:
        record, caller = call.record, call.caller
        body = load_responses_request(read_json_body())
        record.model = body["model"]
        authorize_model(caller, body["model"])
        gateway.limiter.check_spend(caller, body.get("max_output_tokens"), call.spend)
        routed = ChatRequest(model=body["model"], messages=[], parameters=body, stream=bool(body.get("stream")),
                            options={"route": "responses"})
        candidates = select_candidates(gateway, routed, caller)

        def attempt(provider: Provider, model: str):
            return capability(provider, "forward", "the Responses API")("/responses", model, body, routed.stream)

        if routed.stream:
            return start_streaming(gateway, call, candidates, routed, attempt)
        result, provider, model = gateway.resilience.call(candidates, attempt, record)
        account(gateway, call, provider, model, result.usage)
        record.completion_text = request_log.loggable_text(gateway, result.text)
        return Answer(routed, result, provider.name, model, record)


def capability(provider: Provider, method: str, what: str) -> Callable:
    """``provider``'s optional ``method``; a 400 naming the provider when it has none."""
    found = getattr(provider, method, None)
    if found is None:
        raise InvalidRequest(f"Provider '{provider.name}' does not serve {what}; choose a model of an "
                             "OpenAI-compatible provider.", code="unsupported_by_provider", param="model")
    return found


def check_stream(gateway, completion: ChatRequest, caller: Caller, stream: MeteredStream, provider: str, model: str,
                 record: RequestLogRecord) -> GatewayError | None:
    """Run the answer checks on a complete stream; what they said becomes ``stream.verdict`` (sent
    before ``[DONE]``), a refusal ``stream.refusal`` (sent instead). Returns the error to record, if any:
    the refusal, or a failed check (its answer was sent already, but never unchecked without a word)."""
    try:
        checked = answer_checks.check(gateway, completion, caller, stream.texts, streamed=True, provider=provider,
                                      model=model, record=record)
    except GatewayError as exc:
        stream.refusal = exc
        stream.verdict = answer_checks.stream_verdict(getattr(exc, "answer", None))
        return exc
    except Exception:
        logger.exception("answer check failed at the end of a stream")
        stream.refusal = GatewayError("An answer check failed inside the gateway.", code="answer_check_failed")
        return stream.refusal
    stream.verdict = answer_checks.stream_verdict(checked)
    return None


def start_streaming(gateway, call: RecordedCall, candidates: list[tuple[Provider, str]], completion: ChatRequest,
                    start: Callable[[Provider, str], Iterable[Chunk]]) -> Answer:
    """Open the stream (``start(provider, model)``) and wrap it so that the request is recorded exactly
    once when it ends, fails mid-stream, or the client goes away."""
    record = call.record
    record.streamed = True
    first, chunks, provider, model = open_stream(gateway, candidates, record, start)
    call.streaming = True

    def finish(stream: MeteredStream, error: GatewayError | None) -> None:
        call.release_slot()
        account(gateway, call, provider, model, stream.usage)
        record.completion_text = request_log.loggable_text(gateway, stream.text)
        if error is None and completion.options.get("route") is None:  # a chat completion: checked
            error = check_stream(gateway, completion, call.caller, stream, provider.name, model, record)
        if error is not None:
            record.status, record.error_code = error.status, error.code
            if isinstance(error, ProviderError) and counts_as_failure(error):
                gateway.resilience.breaker(provider.name, model).failure()
        record.latency_ms = (time.perf_counter() - call.started) * 1000
        notify_after_response(gateway, record)

    stream = MeteredStream(first, chunks, finish, gateway.settings.stream_max_seconds)
    if call.slot is not None:  # a response dropped before it was ever read must not keep the slot
        weakref.finalize(stream, call.slot.release)
    return Answer(completion, None, provider.name, model, record, chunks=stream)
