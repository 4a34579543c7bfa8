"""A local HTTP server that speaks OpenAI's chat completion wire format.

Tests queue scripted answers (status, body, delay, headers) with :meth:`push`;
with none queued it answers ``"upstream: <last user message>"`` with usage.
Every request it receives is kept in ``requests`` so tests can count them.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Scripted:
    """One queued answer."""

    status: int = 200
    body: dict | str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def chat_completion(model: str, text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> dict:
    """A well-formed ``chat.completion`` body."""
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class FakeOpenAI:
    """Serve on 127.0.0.1 on a free port; use as a context manager."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    step = fake._script.pop(0) if fake._script else None
                step = step or Scripted(body=fake.default_answer(body))
                if step.delay:
                    time.sleep(step.delay)
                payload = step.body if isinstance(step.body, str) else json.dumps(step.body)
                data = payload.encode()
                try:
                    self.send_response(step.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    @staticmethod
    def default_answer(body: dict) -> dict:
        """``upstream: <last user message>``."""
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        return chat_completion(body.get("model", "?"), f"upstream: {last.get('content', '')}")

    def push(self, *steps: Scripted) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._script.extend(steps)

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
