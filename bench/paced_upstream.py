"""A slow OpenAI upstream, as real ones are: every answer takes seconds.

``POST /v1/chat/completions`` answers the fixed body of ``upstream.json`` after
``--latency`` seconds, or, with ``"stream": true``, streams one content chunk every
``--pace`` seconds for ``--stream-seconds``, then the finish chunk, the usage chunk (when
asked) and ``[DONE]``. ``GET /health`` answers at once. One asyncio loop holds every
connection (keep-alive, thousands at a time), so the upstream is never what limits a run.
A request may set its own pacing with the extra body fields ``paced_latency``, ``paced_pace``
and ``paced_seconds`` (the gateway forwards fields it does not know; the tests use them).

Usage: ``python bench/paced_upstream.py PORT [--latency 1] [--pace 1] [--stream-seconds 90]``.
``bench/paced.py`` starts it; ``tests/test_serving.py`` uses it as a module.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
from pathlib import Path

BODY = json.dumps(json.loads((Path(__file__).resolve().parent / "upstream.json").read_text())).encode()


def event(payload: dict | str) -> bytes:
    """One Server-Sent Event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def chunk(delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> bytes:
    """One ``chat.completion.chunk`` event (no choices when it carries the usage)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return event({"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1700000000,
                  "model": "gpt-4o-mini-2024-07-18", "choices": choices, "usage": usage})


class PacedUpstream:
    """The server: ``latency`` per answer, streams of ``stream_seconds`` paced ``pace`` apart."""

    def __init__(self, latency: float = 1.0, pace: float = 1.0, stream_seconds: float = 90.0):
        self.latency, self.pace, self.stream_seconds = latency, pace, stream_seconds

    async def serve(self, port: int, ready: threading.Event | None = None) -> None:
        """Listen on 127.0.0.1:``port`` until cancelled; ``ready`` is set once it listens."""
        server = await asyncio.start_server(self._connection, "127.0.0.1", port, backlog=4096)
        if ready:
            ready.set()
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                request = json.loads(body) if body else {}
                if request_line.startswith("GET"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                elif request.get("stream"):
                    await self._stream(request, writer)
                    return  # the stream ends with the connection (HTTP/1.0 style, like many upstreams)
                else:
                    await asyncio.sleep(request.get("paced_latency", self.latency))
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, request: dict, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                     + chunk({"role": "assistant", "content": ""}))
        pace = request.get("paced_pace", self.pace)
        chunks = max(1, round(request.get("paced_seconds", self.stream_seconds) / pace))
        for index in range(chunks):
            await asyncio.sleep(pace)
            writer.write(chunk({"content": f"word{index} "}))
            await writer.drain()
        writer.write(chunk({}, "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            writer.write(chunk(None, usage={"prompt_tokens": 38, "completion_tokens": chunks,
                                            "total_tokens": 38 + chunks}))
        writer.write(event("[DONE]"))
        await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per plain answer")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between streamed chunks")
    parser.add_argument("--stream-seconds", type=float, default=90.0, help="length of a streamed answer")
    args = parser.parse_args()
    asyncio.run(PacedUpstream(args.latency, args.pace, args.stream_seconds).serve(args.port))


if __name__ == "__main__":
    main()
