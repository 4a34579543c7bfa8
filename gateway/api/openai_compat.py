"""The OpenAI-compatible API (``/v1``): the official ``openai`` SDK works against it."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from gateway import pipeline
from gateway.app import current_gateway
from gateway.errors import ModelNotFound
from gateway.streaming import forward_sse, render_sse, sse_response
from gateway.types import ChatAnswer

blueprint = Blueprint("openai", __name__, url_prefix="/v1")


def _choice(index: int, result: ChatAnswer) -> dict:
    message = {"role": "assistant", "content": result.text or None if result.tool_calls else result.text}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return {"index": index, "message": message, "finish_reason": result.finish_reason, "logprobs": None}


def render_chat_completion(answer: pipeline.Answer) -> dict:
    """A translated provider's answer in OpenAI's ``chat.completion`` format."""
    result = answer.result
    usage = result.usage
    return {
        "id": f"chatcmpl-{answer.record.request_id}",
        "object": "chat.completion",
        "created": int(answer.record.timestamp),
        "model": answer.model,
        "choices": [_choice(index, choice) for index, choice in
                    enumerate([result, *result.extra_choices])],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens,
                  "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}},
    }


def served_by(response, answer: pipeline.Answer):
    """Say who served the answer (``X-Gateway-Provider``, ``X-Gateway-Model``), ``X-Cache``, and the
    headers enrichment plugins set (``completion.response_headers``)."""
    headers = response.headers
    headers["X-Gateway-Provider"] = answer.provider
    headers["X-Gateway-Model"] = answer.model
    for name, value in answer.completion.response_headers.items():
        headers[name] = value
    if answer.cache_status:
        headers["X-Cache"] = answer.cache_status
    return response


def stream_answer(answer: pipeline.Answer):
    """A streamed answer as OpenAI's SSE, usage last when the client asked for it."""
    record = answer.record
    include_usage = bool(answer.completion.parameters.get("stream_options", {}).get("include_usage"))
    events = render_sse(answer.chunks, completion_id=f"chatcmpl-{record.request_id}",
                        created=int(record.timestamp), model=answer.model, include_usage=include_usage)
    return served_by(sse_response(events), answer)


@blueprint.post("/chat/completions")
def chat_completions():
    """Create a chat completion (``stream: true``: Server-Sent Events)."""
    gateway = current_gateway()
    answer = pipeline.complete(gateway, request, gateway.chat_schema)
    if answer.chunks is not None:
        return stream_answer(answer)
    if answer.result.body is not None:  # an OpenAI-compatible upstream's own answer, as it sent it
        return served_by(Response(answer.result.body, mimetype="application/json"), answer)
    return served_by(jsonify(render_chat_completion(answer)), answer)


@blueprint.post("/embeddings")
def embeddings():
    """Create embeddings: the provider's answer in OpenAI's list format."""
    answer = pipeline.embed(current_gateway(), request)
    return served_by(Response(answer.result.body, mimetype="application/json"), answer)


@blueprint.post("/responses")
def responses():
    """Create a model response (OpenAI's Responses API; ``stream: true``: its typed events)."""
    answer = pipeline.respond(current_gateway(), request)
    if answer.chunks is not None:
        return served_by(sse_response(forward_sse(answer.chunks)), answer)
    return served_by(Response(answer.result.body, mimetype="application/json"), answer)


def visible_models(gateway, caller) -> list[dict]:
    """The models ``caller`` may use, in OpenAI's model format: the model table's models that a
    registered and configured provider serves (``owned_by`` the first of them), then models that such
    providers serve outside the table. A model only unconfigured providers serve (no ``OPENAI_API_KEY``,
    no AWS credentials) would answer 503: it is left out, and readiness names what is missing."""
    unconfigured = gateway.unconfigured_providers()
    ready = {name: provider for name, provider in gateway.providers.items() if name not in unconfigured}
    data = [{"id": spec.name, "object": "model", "created": 0, "owned_by": route.provider,
             "aliases": list(spec.aliases)}
            for spec in gateway.models
            for route in [r for r in spec.routes if r.provider in ready][:1]]
    listed = {entry["id"] for entry in data}
    data += [{"id": model, "object": "model", "created": 0, "owned_by": name}
             for name, provider in ready.items() for model in provider.models()
             if model not in listed and gateway.models.price(name, model) is None]
    if caller.allowed_models is not None:
        data = [entry for entry in data if entry["id"] in caller.allowed_models]
    return data


@blueprint.get("/models")
def list_models():
    """The models this caller may use, in OpenAI's list format."""
    gateway = current_gateway()
    caller = pipeline.admit(gateway, request, "completions")
    return jsonify({"object": "list", "data": visible_models(gateway, caller)})


@blueprint.get("/models/<model_id>")
def retrieve_model(model_id: str):
    """One model this caller may use, by its name or an alias; 404 ``model_not_found`` otherwise."""
    gateway = current_gateway()
    caller = pipeline.admit(gateway, request, "completions")
    for entry in visible_models(gateway, caller):
        if model_id == entry["id"] or model_id in entry.get("aliases", ()):
            return jsonify(entry)
    raise ModelNotFound(f"The model '{model_id}' does not exist or is not available to this key; "
                        "GET /v1/models lists the available models.", param="model")
