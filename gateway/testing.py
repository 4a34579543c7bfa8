"""Test helpers for the gateway and for plugin authors' own test suites.

Use as a pytest plugin (``pytest_plugins = ["gateway.testing"]`` in your
``conftest.py``) to get the fixtures ``gateway_app`` (an app on a temporary
SQLite file with the built-in plugins plus those your ``gateway_plugins``
fixture returns, configured by your ``gateway_settings`` fixture),
``gateway_client`` and ``api_key``; or call :func:`make_app`, :func:`issue_key`,
:func:`chat` and :func:`serve` directly.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pytest

from gateway.config import ENV_ALIASES, load_settings
from gateway.errors import ProviderError
from gateway.hookspecs import hookimpl
from gateway.plugins import ENTRY_POINT_GROUP
from gateway.types import ChatAnswer, ChatRequest, Chunk, Price, Usage


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the gateway's and providers' variables, so a developer's shell cannot leak into a test."""
    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "OPENAI_")) or name in ENV_ALIASES:
            monkeypatch.delenv(name)


def make_app(tmp_path, config: dict[str, Any] | None = None, plugins: tuple[object, ...] = (),
             entry_points: bool = False):
    """A gateway app on a SQLite file under ``tmp_path``, with extra ``plugins`` registered last.

    Plugins installed through ``ai_gateway`` entry points are left out unless
    ``entry_points`` is true: a test sees only the plugins it names, and a plugin
    under test that is also installed (``pip install -e .``) is not registered twice.
    Request-log records are written inside the request (``request_log_writes="sync"``) so a
    test can read them as soon as the answer arrives; pass ``"background"`` to test the writer.
    """
    from gateway.app import create_app

    config = {"sqlite_path": str(tmp_path / "gateway.db"), "request_log_writes": "sync", **(config or {})}
    if not entry_points:
        installed = [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
        config["disable_plugins"] = [*load_settings(config).disable_plugins, *installed]
    return create_app(config, plugins=plugins)


def issue_key(app, user: str = "alice", tier: str = "free",
              permissions: tuple[str, ...] = ("completions",), **options: Any) -> str:
    """Issue a key in ``app`` and return its plaintext: the first plugin that issues keys
    (``gateway_issue_key``; the built-in ``apikey``) does; ``options`` are its key's fields."""
    gateway = app.extensions["gateway"]
    key = gateway.hook.gateway_issue_key(gateway=gateway, user_id=user, tier=tier,
                                         permissions=tuple(permissions), options=options)
    if key is None:
        raise LookupError("no plugin issues keys (gateway_issue_key): is the apikey plugin disabled?")
    return key


def chat(client, key: str, content: str = "hello", model: str = "echo", **fields: Any):
    """POST one user message to ``/v1/chat/completions`` with ``client``; returns the response."""
    return client.post("/v1/chat/completions", headers={"X-API-Key": key},
                       json={"model": model, "messages": [{"role": "user", "content": content}], **fields})


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free loopback port; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@dataclass
class FakeProvider:
    """A provider whose answers and failures a test scripts.

    ``outcomes`` are consumed one per call: a ``str`` is answered as text, a
    :class:`ProviderError` is raised. With none left it answers ``"fake"``.
    """

    name: str = "fake"
    served: dict[str, Price] = field(default_factory=lambda: {"fake-model": Price(1.0, 2.0)})
    outcomes: list[str | ProviderError] = field(default_factory=list)
    calls: list[ChatRequest] = field(default_factory=list)

    def models(self) -> dict[str, Price]:
        """The scripted model table."""
        return self.served

    def _next(self, completion: ChatRequest) -> str:
        self.calls.append(completion)
        outcome = self.outcomes.pop(0) if self.outcomes else "fake"
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """The next scripted outcome, as a result with 10 prompt and 5 completion tokens."""
        return ChatAnswer(text=self._next(completion), model=completion.model,
                      usage=Usage(prompt_tokens=10, completion_tokens=5))

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """The next scripted outcome, one chunk a word."""
        text = self._next(completion)
        for word in text.split(" "):
            yield Chunk(text=word)
        yield Chunk(finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=5))


class ProviderPlugin:
    """A plugin object that registers the given providers (register it with ``make_app``)."""

    def __init__(self, *providers: Any):
        self.providers = list(providers)

    @hookimpl
    def gateway_register_providers(self):
        """The providers given to the constructor."""
        return self.providers


@pytest.fixture
def gateway_environment(monkeypatch):
    """A clean environment (no GATEWAY_*, OPENAI_* or alias variables)."""
    clean_environment(monkeypatch)


@pytest.fixture
def gateway_plugins() -> tuple[object, ...]:
    """Plugins registered in ``gateway_app`` after the built-ins; override it to add yours."""
    return ()


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    """Settings of ``gateway_app`` (e.g. ``plugin_settings``); override it to configure yours."""
    return {}


@pytest.fixture
def gateway_app(tmp_path, gateway_environment, gateway_plugins, gateway_settings):
    """A gateway app on a temporary SQLite file: the built-ins plus ``gateway_plugins``.

    Each test gets its own app and plugin manager, so a plugin registered here is
    gone with the test.
    """
    return make_app(tmp_path, gateway_settings, gateway_plugins)


@pytest.fixture
def gateway_client(gateway_app):
    """Flask's test client for ``gateway_app``."""
    return gateway_app.test_client()


@pytest.fixture
def api_key(gateway_app):
    """A free-tier key with the ``completions`` permission, in ``gateway_app``'s store."""
    return issue_key(gateway_app)
