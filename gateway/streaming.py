"""Streamed answers: metering the provider's chunks, and rendering them as OpenAI's SSE.

:class:`MeteredStream` sits between the provider's iterator and the HTTP
response: it adds up usage as chunks pass and calls its ``on_finish`` exactly
once — when the chunks end, when the provider fails mid-stream, or when the
client goes away (the WSGI server then closes the response, which closes the
stream, which closes the upstream). :func:`render_sse` turns the chunks into
``chat.completion.chunk`` events ending with ``data: [DONE]``; a mid-stream
failure ends the stream with an ``error`` event instead.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

from flask import Response

from gateway.errors import GatewayError
from gateway.types import Chunk, Usage

logger = logging.getLogger(__name__)

#: Status recorded for a stream the client abandoned (nginx's "client closed request").
CLIENT_CLOSED = 499


class MeteredStream:
    """The provider's chunks, with usage and text kept and ``on_finish(stream, error)`` called once.

    ``error`` is None after a complete stream, the :class:`GatewayError` of a
    mid-stream failure, or a ``client_closed`` error when the consumer closed early.
    ``on_finish`` of a complete stream may set ``verdict`` (what the answer checks said, sent
    before ``[DONE]``) and ``refusal`` (a check refused the answer: sent instead of ``[DONE]``).
    """

    def __init__(self, first: Chunk | None, rest: Iterator[Chunk],
                 on_finish: Callable[[MeteredStream, GatewayError | None], None], max_seconds: float | None = None):
        self._first = first
        self._rest = rest
        self._on_finish = on_finish
        self._ends_at = None if max_seconds is None else time.monotonic() + max_seconds
        self._finished = False
        self._texts: dict[int, list[str]] = {0: []}
        self.usage = Usage()
        self.verdict: dict | None = None
        self.refusal: GatewayError | None = None

    @property
    def text(self) -> str:
        """The text of the first choice streamed so far."""
        return "".join(self._texts[0])

    @property
    def texts(self) -> list[str]:
        """The text of every choice streamed so far, by choice index."""
        return ["".join(self._texts.get(index, ())) for index in range(max(self._texts) + 1)]

    def __iter__(self) -> MeteredStream:
        return self

    def __next__(self) -> Chunk:
        if self._first is not None:
            chunk, self._first = self._first, None
        else:
            try:
                chunk = next(self._rest)
            except StopIteration:
                self._finish(None)
                raise
            except GatewayError as exc:
                self._finish(exc)
                raise
            except Exception:
                self._finish(GatewayError("The stream failed inside the gateway."))
                raise
        if self._ends_at is not None and time.monotonic() > self._ends_at:
            self._stop(GatewayError("The stream went on longer than the gateway allows (stream_max_seconds).",
                                    code="stream_too_long", status=504))
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.text:
            self._texts.setdefault(chunk.index, []).append(chunk.text)
        return chunk

    def close(self) -> None:
        """Stop reading: close the upstream; record the request if it had not ended yet."""
        self._stop(GatewayError("The client closed the connection before the stream ended.",
                                code="client_closed", status=CLIENT_CLOSED), raise_it=False)

    def _stop(self, error: GatewayError, raise_it: bool = True) -> None:
        """Close the upstream and end the stream with ``error`` (raised, for the renderer to send)."""
        try:
            close = getattr(self._rest, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(error)
        if raise_it:
            raise error

    def _finish(self, error: GatewayError | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._on_finish(self, error)


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def render_sse(chunks: MeteredStream, *, completion_id: str, created: int, model: str,
               include_usage: bool) -> Iterator[bytes]:
    """``chunks`` as OpenAI ``chat.completion.chunk`` events, then ``data: [DONE]``.

    An upstream's own events (``Chunk.raw``) are passed on as they are (the provider
    leaves out the usage event the caller did not ask for). For the chunks of a translated provider the
    events are built here, and the usage chunk (``choices: []``) is sent last, only
    when ``include_usage``. A :class:`GatewayError` mid-stream becomes one ``{"error": …}`` event that ends
    the stream (the openai SDK raises it as ``APIError``). What the answer checks said of a complete
    stream (``chunks.verdict``) comes last before ``[DONE]``, as a chunk without choices whose
    ``gateway`` member holds it; a check's refusal (``chunks.refusal``) then ends the stream as an error.
    """
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    started: set[int] = set()
    usage: Usage | None = None
    try:
        for chunk in chunks:
            if chunk.raw is not None:  # the upstream's own event: passed on as received
                if chunk.raw:
                    yield chunk.raw
                continue
            if chunk.usage is not None:
                usage = chunk.usage
            delta: dict = {}
            if chunk.index not in started:
                started.add(chunk.index)
                delta["role"] = "assistant"
                delta["content"] = ""
            if chunk.text:
                delta["content"] = chunk.text
            if chunk.tool_calls:
                delta["tool_calls"] = chunk.tool_calls
            if delta or chunk.finish_reason:
                yield _event({**base, "choices": [{"index": chunk.index, "delta": delta, "logprobs": None,
                                                   "finish_reason": chunk.finish_reason}]})
        if include_usage and usage is not None:
            yield _event({**base, "choices": [], "usage": {
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}})
        if chunks.verdict is not None:
            yield _event({**base, "choices": [], "gateway": chunks.verdict})
        if chunks.refusal is not None:
            yield _event(chunks.refusal.to_dict())
            return
        yield b"data: [DONE]\n\n"
    except GatewayError as exc:
        yield _event(exc.to_dict())
    except Exception:
        logger.exception("stream failed")
        yield _event(GatewayError("The stream failed inside the gateway.").to_dict())
    finally:
        chunks.close()


def forward_sse(chunks: MeteredStream) -> Iterator[bytes]:
    """An upstream's own events as received (the Responses API's typed events), no ``[DONE]``
    of the gateway's; a failure mid-stream ends it with the API's ``error`` event."""
    try:
        for chunk in chunks:
            if chunk.raw:
                yield chunk.raw
    except GatewayError as exc:
        yield _error_event(exc)
    except Exception:
        logger.exception("stream failed")
        yield _error_event(GatewayError("The stream failed inside the gateway."))
    finally:
        chunks.close()


def _error_event(exc: GatewayError) -> bytes:
    error = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param}
    return f"event: error\ndata: {json.dumps(error, separators=(',', ':'))}\n\n".encode()


def sse_response(events: Iterator[bytes]) -> Response:
    """A ``text/event-stream`` response that proxies do not buffer."""
    return Response(events, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
