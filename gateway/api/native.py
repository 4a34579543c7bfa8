"""The gateway's own API (``/api/v1``): the same completion, answered with provider, cost and latency."""
from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, jsonify, request

from gateway import pipeline
from gateway.api.openai_compat import served_by, stream_answer
from gateway.app import current_gateway

blueprint = Blueprint("native", __name__, url_prefix="/api/v1")


def render_native(answer: pipeline.Answer, answer_fields: Iterable[str] = ()) -> dict:
    """An answer in the gateway's native format, with the ``answer_fields`` plugins declared (each
    as an enrichment plugin set it in ``completion.answer_fields``, else null)."""
    result, record = answer.result, answer.record
    added = answer.completion.answer_fields
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
        **{name: added.get(name) for name in answer_fields},
    }


@blueprint.post("/completions")
def completions():
    """Create a completion; the answer adds provider, cost and latency (``stream: true``: OpenAI's SSE)."""
    gateway = current_gateway()
    answer = pipeline.complete(gateway, request, gateway.native_schema)
    if answer.chunks is not None:
        return stream_answer(answer)
    return served_by(jsonify(render_native(answer, gateway.declared.answer_fields)), answer)
