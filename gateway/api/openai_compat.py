"""The OpenAI-compatible API (``/v1``): the official ``openai`` SDK works against it."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from gateway import pipeline
from gateway.app import current_gateway
from gateway.schemas import CHAT_COMPLETION

blueprint = Blueprint("openai", __name__, url_prefix="/v1")


def render_chat_completion(answer: pipeline.Answer) -> dict:
    """An answer in OpenAI's ``chat.completion`` format."""
    result = answer.result
    message = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    usage = result.usage
    return {
        "id": f"chatcmpl-{answer.record.request_id}",
        "object": "chat.completion",
        "created": int(answer.record.timestamp),
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason,
                     "logprobs": None}],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens,
                  "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}},
    }


def served_by(response, answer: pipeline.Answer):
    """Say who served the answer in ``X-Gateway-Provider`` and ``X-Gateway-Model``."""
    response.headers["X-Gateway-Provider"] = answer.provider
    response.headers["X-Gateway-Model"] = answer.model
    return response


@blueprint.post("/chat/completions")
def chat_completions():
    """Create a chat completion."""
    gateway = current_gateway()
    answer = pipeline.complete(gateway, request, CHAT_COMPLETION)
    return served_by(jsonify(render_chat_completion(answer)), answer)


@blueprint.get("/models")
def list_models():
    """The models this caller may use, in OpenAI's list format."""
    gateway = current_gateway()
    caller = pipeline.authenticate(gateway, request, "completions")
    allowed = caller.allowed_models
    data = [{"id": model, "object": "model", "created": 0, "owned_by": name}
            for name, provider in gateway.providers.items() for model in provider.models()
            if allowed is None or model in allowed]
    return jsonify({"object": "list", "data": data})
