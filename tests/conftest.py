"""Shared fixtures: the gateway's own test helpers (``gateway.testing``) plus a few of ours."""
from __future__ import annotations

import pytest

pytest.register_assert_rewrite("gateway.testing")

from gateway.testing import issue_key, make_app, serve  # noqa: E402
from tests.fakes.bedrock_server import FakeBedrock  # noqa: E402
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


@pytest.fixture
def fake_bedrock(monkeypatch):
    """A local Bedrock Runtime server; boto3 reaches it through AWS_ENDPOINT_URL_BEDROCK_RUNTIME."""
    with FakeBedrock() as server:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.base_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        yield server


@pytest.fixture
def upstreams_app(tmp_path, fake_openai, fake_bedrock, monkeypatch):
    """A factory of apps whose OpenAI and Bedrock providers point at the local fakes,
    with fast retries; ``upstreams_app(settings, models={...})`` adds settings and a model table."""
    import json

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-upstream-secret-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)

    def build(settings: dict | None = None, models: dict | None = None):
        config = {"retry_base_delay": 0.01, "retry_max_delay": 0.05, **(settings or {})}
        if models is not None:
            table = tmp_path / "models.json"
            table.write_text(json.dumps({"models": models}))
            config["model_table_path"] = str(table)
        return make_app(tmp_path, config)

    return build
