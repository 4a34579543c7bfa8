"""The gateway served on a loopback port, its ``openai`` provider pointed at a realistic local
OpenAI (``FakeOpenAI(realistic=True)``), and a premium key to call it with."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from gateway.testing import issue_key, make_app
from tests.fakes.openai_server import FakeOpenAI

UPSTREAM_KEY = "sk-test-upstream-secret-compat-0123456789"

#: The gateway's own retries: one retry, quick unless the upstream's Retry-After says otherwise.
SETTINGS = {"retry_attempts": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.05}


@dataclass
class Served:
    """A running gateway: its base URL (``/v1`` is ``api``), a key, the app and the upstream fake."""

    url: str
    key: str
    app: object
    upstream: FakeOpenAI

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def sdk(self, **options) -> openai.OpenAI:
        """The official client, no retries unless asked."""
        return openai.OpenAI(base_url=self.api, api_key=self.key,
                             **{"max_retries": 0, "timeout": 15, **options})

    def async_sdk(self, **options) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.api, api_key=self.key,
                                  **{"max_retries": 0, "timeout": 15, **options})

    def upstream_chat_bodies(self) -> list[dict]:
        """The JSON bodies that reached the upstream's chat completions route, in order."""
        return [body for path, body in zip(self.upstream.paths, self.upstream.requests, strict=True)
                if path.endswith("/chat/completions")]


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """``gateway.testing.serve`` with a 50 ms serve-loop poll: its 0.5 s default is what each shutdown
    waits, half a second per test here."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def upstream():
    """The OpenAI fake, answering field for field as OpenAI does now."""
    with FakeOpenAI(realistic=True) as server:
        yield server


@pytest.fixture
def served(tmp_path, upstream):
    """The gateway over real HTTP, routing OpenAI models to ``upstream``."""
    app = make_app(tmp_path, {**SETTINGS, "plugin_settings": {
        "openai_provider": {"api_key": UPSTREAM_KEY, "base_url": upstream.url}}})
    key = issue_key(app, user="compat", tier="premium")
    with serve(app) as url:
        yield Served(url, key, app, upstream)


@pytest.fixture
def sdk(served) -> openai.OpenAI:
    """``openai.OpenAI`` against the gateway, without the SDK's own retries."""
    with served.sdk() as client:
        yield client
