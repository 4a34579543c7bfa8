"""Shared fixtures: the gateway's own test helpers (``gateway.testing``) plus a few of ours."""
from __future__ import annotations

import pytest

pytest.register_assert_rewrite("gateway.testing")

from gateway.testing import issue_key, make_app, serve  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

pytest_plugins = ["gateway.testing"]


@pytest.fixture(autouse=True)
def _clean_env(gateway_environment):
    """Every test starts without the developer's GATEWAY_* / OPENAI_* variables."""


@pytest.fixture
def app(gateway_app):
    """The default app (built-in plugins, temporary SQLite)."""
    return gateway_app


@pytest.fixture
def gateway(app):
    """The app's Gateway object."""
    return app.extensions["gateway"]


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def key(app):
    """A free-tier key with the completions permission."""
    return issue_key(app)


@pytest.fixture
def fake_openai():
    """A local OpenAI wire-format server."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def openai_app(tmp_path, fake_openai, monkeypatch):
    """An app whose OpenAI provider points at ``fake_openai``."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-upstream-secret-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("GATEWAY_RETRY_BASE_DELAY", "0.01")  # retries stay, waits shrink
    return make_app(tmp_path)


@pytest.fixture
def live_url(app):
    """``app`` served over real HTTP."""
    with serve(app) as url:
        yield url
