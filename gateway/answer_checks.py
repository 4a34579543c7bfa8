"""Answer checks: the ``gateway_check_response`` hook, run on a chat completion's answer before the
caller gets it.

:func:`check` runs the implementations on the answer's texts and records each check's outcome in
the request log record; :func:`apply` gives a non-streamed answer what they said (headers, native
answer fields, replaced text); :func:`stream_verdict` is what a checked stream sends before its
``[DONE]`` (``gateway.streaming.render_sse``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

from gateway.errors import GatewayError
from gateway.plugins import is_optional
from gateway.types import ChatAnswer, ChatRequest, CheckedAnswer, RequestLogRecord

logger = logging.getLogger(__name__)
HOOK = "gateway_check_response"


def check(gateway, completion: ChatRequest, caller, texts: list[str], *, streamed: bool, provider: str,
          model: str, record: RequestLogRecord) -> CheckedAnswer | None:
    """Run every ``gateway_check_response`` implementation on ``texts`` (each choice's whole text);
    None when no plugin checks answers. Each check's outcome lands in ``record.checks``, a refusal's too.

    Raises :class:`gateway.errors.AnswerRefused` when a check refuses the answer, and what a failing
    check raised unless its plugin is ``gateway_optional`` (then it is logged and skipped).
    """
    if not gateway.pm.hook.gateway_check_response.get_hookimpls():
        return None
    answer = CheckedAnswer(list(texts), streamed, provider, model)

    def failed(impl, exc: Exception) -> None:
        if isinstance(exc, GatewayError) or not is_optional(impl.plugin):
            raise exc
        logger.error("optional answer check failed; skipped", exc_info=exc, extra={"plugin": impl.plugin_name})

    try:
        gateway.pm.call_each(HOOK, {"completion": completion, "answer": answer, "caller": caller,
                                    "gateway": gateway}, failed)
    finally:
        record.checks = dict(answer.outcomes)
    return answer


def apply(answer: CheckedAnswer, completion: ChatRequest, result: ChatAnswer) -> ChatAnswer:
    """Give a non-streamed answer what the checks said: their headers and native answer fields (on
    ``completion``), and ``result`` with the texts they replaced (an upstream's own body rewritten)."""
    completion.response_headers.update(answer.headers)
    completion.answer_fields.update(answer.fields)
    if not answer.replaced:
        return result
    choices = [result, *result.extra_choices]
    changed = [replace(choice, text=answer.texts[index]) if index in answer.replaced else choice
               for index, choice in enumerate(choices)]
    first = replace(changed[0], extra_choices=changed[1:])
    if result.body is not None:
        first.body = _rewritten_body(result.body, answer)
    return first


def _rewritten_body(body: bytes, answer: CheckedAnswer) -> bytes:
    """An OpenAI-compatible upstream's JSON answer with the replaced choices' ``message.content``."""
    document = json.loads(body)
    for index in answer.replaced:
        document["choices"][index]["message"]["content"] = answer.texts[index]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def stream_verdict(answer: CheckedAnswer | None) -> dict | None:
    """The ``gateway`` member of a checked stream's last event: ``{"checks": {name: outcome}, <the
    checks' answer fields>}``; None when the checks have nothing to tell (none ran, or all passed
    without a field): then the stream ends as OpenAI's does, its usage chunk last before ``[DONE]``."""
    if answer is None or not answer.fields and all(outcome == "passed" for outcome in answer.outcomes.values()):
        return None
    return {"checks": dict(answer.outcomes), **answer.fields}
