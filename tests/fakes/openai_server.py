"""A local HTTP server that speaks OpenAI's chat completion wire format: JSON and SSE.

With nothing queued it answers ``"upstream: <last user message>"`` with usage;
for ``stream: true`` the same text word by word as ``chat.completion.chunk``
events, the usage chunk when ``stream_options.include_usage``, then
``data: [DONE]``. Queue faults with :meth:`push` (see :class:`Scripted`).
"""
from __future__ import annotations

import json

from tests.fakes.upstream import FakeUpstream, Scripted

__all__ = ["FakeOpenAI", "Scripted", "chat_completion", "stream_events"]


def chat_completion(model: str, text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> dict:
    """A well-formed ``chat.completion`` body."""
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def stream_events(model: str, text: str, include_usage: bool = True, prompt_tokens: int = 7,
                  completion_tokens: int = 3) -> list[dict]:
    """``text`` as OpenAI stream chunks: role, one word each, finish, then usage when asked."""
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1700000000,
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


class FakeOpenAI(FakeUpstream):
    """OpenAI's ``/v1/chat/completions`` (any path: Azure's deployment paths land here too)."""

    def __init__(self):
        super().__init__()
        self.url = f"{self.base_url}/v1"

    def default_step(self, path: str, body: dict) -> Scripted:
        """``upstream: <last user message>``, as JSON or as a stream."""
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        text, model = f"upstream: {last.get('content', '')}", body.get("model", "?")
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return Scripted(events=stream_events(model, text, include))
        return Scripted(body=chat_completion(model, text))

    def encode_event(self, event) -> bytes:
        """``data: <json>`` (a str event is sent as is: a malformed one)."""
        return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()

    def stream_end(self) -> bytes:
        """``data: [DONE]``."""
        return b"data: [DONE]\n\n"
