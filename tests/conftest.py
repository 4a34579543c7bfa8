"""Shared fixtures: the gateway's own test helpers (``gateway.testing``) plus a few of ours."""
from __future__ import annotations

import logging
import re
import sys

import pytest

pytest.register_assert_rewrite("gateway.testing")

from gateway import aws  # noqa: E402
from gateway.logs import JSONFormatter  # noqa: E402
from gateway.testing import make_app, serve  # noqa: E402
from plugins.apikey import DEV_PEPPER  # noqa: E402
from tests.fakes.bedrock_server import FakeBedrock  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

pytest_plugins = ["gateway.testing"]


@pytest.fixture(autouse=True)
def _clean_env(gateway_environment):
    """Every test starts without the developer's GATEWAY_* / OPENAI_* variables."""


@pytest.fixture(autouse=True)
def _own_aws_clients():
    """Every test builds its AWS clients from its own environment (endpoint, moto), as a process would.

    boto3's default session is dropped too: one made before moto was imported has no moto hook, and
    a later ``mock_aws(reset_boto3_session=False)`` test would reach the real endpoint through it."""
    aws.forget_clients()
    yield
    aws.forget_clients()
    if "boto3" in sys.modules:
        sys.modules["boto3"].DEFAULT_SESSION = None


@pytest.fixture
def app(gateway_app):
    """The default app (built-in plugins, temporary SQLite)."""
    return gateway_app


@pytest.fixture
def gateway(app):
    """The app's Gateway object."""
    return app.extensions["gateway"]


@pytest.fixture
def client(gateway_client):
    """Flask's test client (``gateway.testing``'s, under the short name these tests use)."""
    return gateway_client


@pytest.fixture
def key(api_key):
    """A free-tier key with the completions permission (``gateway.testing``'s ``api_key``)."""
    return api_key


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


class SecretSweep(logging.Handler):
    """Looks at every log record of the session for a gateway key, the dev pepper or the fakes'
    provider key (the secrets every test uses); keeps only the offending lines."""

    PATTERN = re.compile(r"gw_(?:test|live)_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}|"
                         + "|".join(map(re.escape, (DEV_PEPPER, "sk-test-upstream-secret"))))

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = 0
        self.leaks: list[str] = []
        self.formatter = JSONFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        line = self.formatter.format(record)
        if self.PATTERN.search(line):
            self.leaks.append(line[:500])


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log_line():
    """Security list item 11: no API key, pepper or provider secret in any log line of the suite."""
    sweep = SecretSweep()
    root = logging.getLogger()
    root.addHandler(sweep)
    yield sweep
    root.removeHandler(sweep)
    assert sweep.leaks == [], f"secrets in {len(sweep.leaks)} of {sweep.records} log lines: {sweep.leaks[:3]}"


def pytest_collection_modifyitems(items):
    """Tests marked ``beside_the_suite`` bracket the session: the first runs first, the last runs last.
    ``tests/test_serving.py`` starts a stream of over a minute in the first and checks it in the last,
    so the stream runs beside every other test instead of adding its minute to the suite."""
    marked = [item for item in items if item.get_closest_marker("beside_the_suite")]
    if len(marked) < 2:
        return
    first, last = marked[0], marked[-1]
    items[:] = [first, *(item for item in items if item is not first and item is not last), last]
