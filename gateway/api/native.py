"""The gateway's own API (``/api/v1``): the same completion, answered with provider, cost and latency."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from gateway import pipeline
from gateway.api.openai_compat import served_by, stream_answer
from gateway.app import current_gateway
from gateway.schemas import NATIVE_COMPLETION

blueprint = Blueprint("native", __name__, url_prefix="/api/v1")


def render_native(answer: pipeline.Answer) -> dict:
    """An answer in the gateway's native format."""
    result, record = answer.result, answer.record
    return {
        "id": record.request_id,
        "request_id": record.request_id,
        "model": answer.model,
        "provider": answer.provider,
        "content": result.text,
        "tool_calls": result.tool_calls,
        "finish_reason": result.finish_reason,
        "usage": {"prompt_tokens": result.usage.prompt_tokens,
                  "completion_tokens": result.usage.completion_tokens,
                  "total_tokens": result.usage.total_tokens},
        "cost": round(record.cost, 8),
        "latency_ms": round(record.latency_ms, 2),
        "mcp_context": answer.completion.metadata.get("mcp_context"),
    }


@blueprint.post("/completions")
def completions():
    """Create a completion; the answer adds provider, cost and latency (``stream: true``: OpenAI's SSE)."""
    answer = pipeline.complete(current_gateway(), request, NATIVE_COMPLETION)
    if answer.chunks is not None:
        return stream_answer(answer)
    return served_by(jsonify(render_native(answer)), answer)
