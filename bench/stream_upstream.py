"""The streaming fake upstream: OpenAI chat completion chunks as Server-Sent Events, paced.

nginx cannot pace the events of one answer, so this small threaded server does:
every ``POST /v1/chat/completions`` gets a role chunk, ``CHUNKS`` content chunks
``PACE_S`` apart, a finish chunk, the usage chunk and ``[DONE]``, each flushed as it
is written (HTTP/1.0, so the body ends when the connection closes). ``bench/run.py``
starts it on the load core: ``python bench/stream_upstream.py <port>``.
"""
from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNKS = 20
PACE_S = 0.005
WORDS = ("For wireless headphones under $100, look at over-ear models with 30+ hours of playback, USB-C "
         "fast charging and active noise cancelling such as the SoundCore Q30.").split()


def event(payload: dict | str) -> bytes:
    """One SSE event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def chunk(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> bytes:
    """One ``chat.completion.chunk`` event."""
    choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return event({"id": "chatcmpl-stream0001", "object": "chat.completion.chunk", "created": 1700000000,
                  "model": "gpt-4o-mini-2024-07-18", "choices": choices, "usage": usage})


class Handler(BaseHTTPRequestHandler):
    """Streams one paced answer per request."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Answer a chat completion as a paced stream."""
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(chunk({"role": "assistant", "content": ""}))
        self.wfile.flush()
        for index in range(CHUNKS):
            time.sleep(PACE_S)
            self.wfile.write(chunk({"content": WORDS[index % len(WORDS)] + " "}))
            self.wfile.flush()
        self.wfile.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(chunk({}, usage={"prompt_tokens": 38, "completion_tokens": CHUNKS,
                                              "total_tokens": 38 + CHUNKS}))
        self.wfile.write(event("[DONE]"))
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802
        """``/health``: ready."""
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        """Quiet: no line per request."""


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
