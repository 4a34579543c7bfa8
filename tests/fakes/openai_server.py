"""A local HTTP server that speaks OpenAI's wire format: chat completions (JSON and SSE),
embeddings, the Responses API (JSON and typed SSE events) and the models routes.

With nothing queued, ``POST .../chat/completions`` (any path not named below: Azure's
deployment paths land here too) answers ``"upstream: <last user message>"`` with usage;
for ``stream: true`` the same text word by word as ``chat.completion.chunk`` events, the
usage chunk when ``stream_options.include_usage``, then ``data: [DONE]``. Queue faults and
scripted answers with :meth:`FakeOpenAI.push` (see :class:`Scripted`).

``FakeOpenAI(realistic=True)`` answers chat completions the way OpenAI does today, with
the fields a gateway could drop on the way: ``system_fingerprint``, ``service_tier``,
``refusal``/``annotations`` in the message, ``usage.prompt_tokens_details`` and
``usage.completion_tokens_details``, ``n`` choices, ``logprobs`` when the request asks for
them, and in streams ``usage: null`` on every chunk when ``include_usage`` is on (see
:func:`openai_completion` and :func:`openai_stream_events`). The default answers stay the
minimal ones the older tests were written against.

Whatever the mode, ``POST .../embeddings`` answers OpenAI's list (float vectors, or base64
little-endian float32 for ``encoding_format: base64``), ``POST .../responses`` a Responses
API ``response`` (``stream: true``: ``event: response.created`` … ``response.output_text.delta``
… ``response.completed``, no ``[DONE]``, as OpenAI sends them), and ``GET .../models`` and
``GET .../models/{id}`` OpenAI's model objects. Every answer, queued or not, carries an
``x-request-id`` header. Every request is kept: ``requests`` (JSON body; ``{}`` for a GET),
``paths``, ``headers`` and ``times`` (``time.monotonic()`` at arrival).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import struct
import threading
import time

from tests.fakes.upstream import FakeUpstream, Scripted

__all__ = ["FakeOpenAI", "Scripted", "chat_completion", "embeddings_answer", "error_body", "model_object",
           "openai_completion", "openai_stream_events", "response_object", "response_stream_events",
           "stream_events", "tool_call_completion", "SYSTEM_FINGERPRINT"]

SYSTEM_FINGERPRINT = "fp_upstream_1a2b3c"
CREATED = 1700000000
_request_ids = itertools.count(1)


def chat_completion(model: str, text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> dict:
    """A well-formed ``chat.completion`` body."""
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def stream_events(model: str, text: str, include_usage: bool = True, prompt_tokens: int = 7,
                  completion_tokens: int = 3) -> list[dict]:
    """``text`` as OpenAI stream chunks: role, one word each, finish, then usage when asked."""
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": CREATED,
            "model": model}

    def chunk(delta, finish=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    words = text.split(" ")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}})
    return events


# --- today's OpenAI, field for field ------------------------------------------------------------

def openai_usage(prompt_tokens: int = 19, completion_tokens: int = 5, cached_tokens: int = 6,
                 reasoning_tokens: int = 2) -> dict:
    """Chat usage as OpenAI sends it now, with both details objects."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _tokens(text: str) -> list[str]:
    """``text`` cut into the fake's tokens: words, each but the first with its leading space."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]


def token_logprobs(text: str, top_logprobs: int = 0) -> list[dict]:
    """One ``logprobs.content`` entry per token of ``text`` (token, logprob, bytes, top_logprobs)."""
    entries = []
    for i, token in enumerate(_tokens(text)):
        logprob = -0.015625 * (i + 1)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        alternatives += [{"token": f"{token}~{k}", "logprob": logprob - k, "bytes": list(f"{token}~{k}".encode())}
                         for k in range(1, top_logprobs)]
        entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                        "top_logprobs": alternatives[:top_logprobs]})
    return entries


def openai_completion(model: str, text: str | None, *, n: int = 1, logprobs: bool = False,
                      top_logprobs: int = 0, service_tier: str = "default", tool_calls: list | None = None,
                      usage: dict | None = None, finish_reason: str | None = None) -> dict:
    """A ``chat.completion`` body with every field OpenAI sends now. Choice ``i`` > 0 says
    ``"<text> (i+1)"``; ``tool_calls`` makes the message's ``content`` null."""
    choices = []
    for index in range(n):
        content = text if index == 0 or text is None else f"{text} ({index + 1})"
        message = {"role": "assistant", "content": None if tool_calls else content, "refusal": None,
                   "annotations": []}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices.append({
            "index": index, "message": message,
            "logprobs": {"content": token_logprobs(content or "", top_logprobs), "refusal": None}
            if logprobs else None,
            "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop")})
    return {"id": "chatcmpl-upstream", "object": "chat.completion", "created": CREATED, "model": model,
            "choices": choices, "usage": usage or openai_usage(), "service_tier": service_tier,
            "system_fingerprint": SYSTEM_FINGERPRINT}


def tool_call_completion(model: str, name: str, arguments: dict | str, call_id: str = "call_upstream_1",
                         **options) -> dict:
    """An OpenAI answer calling the function ``name``: ``content`` null, ``finish_reason`` tool_calls."""
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
    calls = [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]
    return openai_completion(model, None, tool_calls=calls, **options)


def openai_stream_events(model: str, text: str, *, include_usage: bool = False, logprobs: bool = False,
                         top_logprobs: int = 0, service_tier: str = "default", usage: dict | None = None
                         ) -> list[dict]:
    """``text`` as OpenAI streams it now: every chunk with ``service_tier``, ``system_fingerprint``
    and ``obfuscation``; with ``include_usage`` every chunk has ``usage: null`` and one last chunk
    with no choices carries the usage."""
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "service_tier": service_tier, "system_fingerprint": SYSTEM_FINGERPRINT}
    extra = {"usage": None} if include_usage else {}
    entries = token_logprobs(text, top_logprobs)

    def chunk(delta, finish=None, logprob=None):
        choice = {"index": 0, "delta": delta,
                  "logprobs": {"content": logprob, "refusal": None} if logprob is not None else None,
                  "finish_reason": finish}
        return {**base, "choices": [choice], **extra, "obfuscation": "x1Yz"}

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, logprob=[] if logprobs else None)]
    events += [chunk({"content": token}, logprob=[entries[i]] if logprobs else None)
               for i, token in enumerate(_tokens(text))]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": usage or openai_usage(), "obfuscation": "q9"})
    return events


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- embeddings, Responses API, models ------------------------------------------------------------

def embedding_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic vector for ``text`` whose values float32 holds exactly (multiples of 1/16)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] % 32 - 16) / 16 for i in range(dimensions)]


def embeddings_answer(model: str, inputs, encoding_format: str = "float", dimensions: int | None = None) -> dict:
    """OpenAI's embeddings list for ``inputs`` (a string, strings, token ids or lists of them)."""
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += len(item) if isinstance(item, list) else len(text.split())
        vector = embedding_vector(text, dimensions or 8)
        encoded = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                   if encoding_format == "base64" else vector)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def responses_usage(input_tokens: int = 11, output_tokens: int = 4) -> dict:
    """A Responses API ``usage``."""
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def _output_message(text: str, status: str = "completed") -> dict:
    return {"id": "msg_upstream", "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def response_object(model: str, text: str, *, status: str = "completed", body: dict | None = None,
                    usage: dict | None = None) -> dict:
    """A Responses API ``response`` answering ``text`` (``status`` in_progress: no output, no usage)."""
    body = body or {}
    done = status == "completed"
    return {
        "id": "resp_upstream", "object": "response", "created_at": CREATED, "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": [_output_message(text)] if done else [],
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"), "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
        "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": (usage or responses_usage()) if done else None, "user": None, "metadata": body.get("metadata") or {},
    }


def response_stream_events(model: str, text: str, body: dict | None = None, usage: dict | None = None) -> list[dict]:
    """The typed events OpenAI streams for one text answer, each with its ``type`` and
    ``sequence_number``: created, in_progress, output item and content part added, one
    ``response.output_text.delta`` per word, their done events, then ``response.completed``."""
    started = response_object(model, text, status="in_progress", body=body)
    where = {"item_id": "msg_upstream", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": []}
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": _output_message("", "in_progress") | {
            "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": token, "logprobs": []}
               for token in _tokens(text)]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": _output_message(text)},
        {"type": "response.completed", "response": response_object(model, text, body=body, usage=usage)},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def model_object(model: str) -> dict:
    """One ``model`` object."""
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "openai"}


class FakeOpenAI(FakeUpstream):
    """OpenAI's API on a local port; ``realistic`` picks today's full chat answers (see the module)."""

    def __init__(self, realistic: bool = False):
        super().__init__()
        self.url = f"{self.base_url}/v1"
        self.realistic = realistic
        self.times: list[float] = []
        self._local = threading.local()
        fake = self
        handler = self.server.RequestHandlerClass
        post = handler.do_POST

        def do_POST(request_handler):
            fake.times.append(time.monotonic())
            post(request_handler)

        def do_GET(request_handler):
            fake.times.append(time.monotonic())
            step = fake.take(request_handler, {}) or fake.get_step(request_handler.path)
            try:
                fake._answer(request_handler, step)
            except (BrokenPipeError, ConnectionResetError):
                pass

        handler.do_POST = do_POST
        handler.do_GET = do_GET

    def push(self, *steps: Scripted, after: int = 0) -> None:
        """As :meth:`FakeUpstream.push`; each answer gets an ``x-request-id`` unless it has one."""
        super().push(*(self._with_request_id(step) for step in steps), after=after)

    @staticmethod
    def _with_request_id(step: Scripted) -> Scripted:
        if any(name.lower() == "x-request-id" for name in step.headers):
            return step
        return dataclasses.replace(step, headers={**step.headers, "x-request-id": f"req_upstream_{next(_request_ids)}"})

    def default_step(self, path: str, body: dict) -> Scripted:
        """The answer to a POST when nothing is queued, chosen by the path."""
        model = body.get("model", "?")
        route = path.split("?", 1)[0].rstrip("/")
        if route.endswith("/embeddings"):
            step = Scripted(body=embeddings_answer(model, body.get("input", ""), body.get("encoding_format", "float"),
                                                   body.get("dimensions")))
        elif route.endswith("/responses"):
            text = f"upstream: {_input_text(body.get('input'))}"
            step = (Scripted(events=response_stream_events(model, text, body)) if body.get("stream")
                    else Scripted(body=response_object(model, text, body=body)))
        else:
            step = self.chat_step(body)
        return self._with_request_id(step)

    def chat_step(self, body: dict) -> Scripted:
        """``upstream: <last user message>``, as JSON or as a stream; minimal, or as OpenAI answers
        today when ``realistic``."""
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        text, model = f"upstream: {_input_text(last.get('content', ''))}", body.get("model", "?")
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        if not self.realistic:
            if body.get("stream"):
                return Scripted(events=stream_events(model, text, include))
            return Scripted(body=chat_completion(model, text))
        tier = body.get("service_tier") if body.get("service_tier") not in (None, "auto") else "default"
        options = {"logprobs": bool(body.get("logprobs")), "top_logprobs": body.get("top_logprobs") or 0,
                   "service_tier": tier}
        if body.get("stream"):
            return Scripted(events=openai_stream_events(model, text, include_usage=include, **options))
        return Scripted(body=openai_completion(model, text, n=body.get("n") or 1, **options))

    def get_step(self, path: str) -> Scripted:
        """``GET .../models``: a list; ``GET .../models/{id}``: that model; else OpenAI's 404."""
        route = path.split("?", 1)[0].rstrip("/")
        model = route.rpartition("/models/")[2] if "/models/" in route else ""
        if model and "/" not in model:
            step = Scripted(body=model_object(model))
        elif route.endswith("/models"):
            step = Scripted(body={"object": "list", "data": [model_object(m) for m in (
                "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")]})
        else:
            step = Scripted(status=404, body=error_body(f"Invalid URL (GET {route})"))
        return self._with_request_id(step)

    def _stream(self, handler, step: Scripted) -> None:
        self._local.typed = _typed(step.events)
        try:
            super()._stream(handler, step)
        finally:
            self._local.typed = False

    def encode_event(self, event) -> bytes:
        """``data: <json>`` (a str event is sent as is: a malformed one); a Responses API event
        (a dict whose ``type`` starts with ``response.`` or is ``error``) gets its ``event:`` line."""
        if isinstance(event, str):
            return f"data: {event}\n\n".encode()
        if getattr(self._local, "typed", False) and isinstance(event.get("type"), str):
            return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        return f"data: {json.dumps(event)}\n\n".encode()

    def stream_end(self) -> bytes:
        """``data: [DONE]``; nothing after a Responses API stream (OpenAI sends none there)."""
        return b"" if getattr(self._local, "typed", False) else b"data: [DONE]\n\n"


def _typed(events: list | None) -> bool:
    """Whether a stream is of Responses API events (typed SSE) rather than chat chunks."""
    first = next((e for e in events or () if isinstance(e, dict)), None)
    return first is not None and str(first.get("type", "")).startswith("response.")


def _input_text(value) -> str:
    """The text of a message's ``content`` or a Responses ``input``: a string, or its last text part."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in reversed(value):
            if isinstance(item, dict):
                if isinstance(item.get("text"), str):
                    return item["text"]
                if "content" in item:
                    return _input_text(item["content"])
    return ""
