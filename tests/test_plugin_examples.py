"""The example plugin packages in examples/, installed with pip (``make install``) and loaded by the
gateway through their ``ai_gateway`` entry points, end to end over real HTTP with the openai SDK."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import openai
import pytest

from gateway.testing import issue_key, make_app, serve
from tests.fakes.openai_server import Scripted

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"pii_guard": "gateway-pii-guard", "openai_compatible": "gateway-openai-compatible"}
PROMPT = "I am jo@example.com, call me on +1 555-123-4567, card 4111 1111 1111 1111"


@pytest.fixture(scope="module", autouse=True)
def examples_installed():
    installed = {ep.name: ep for ep in metadata.entry_points(group="ai_gateway")}
    missing = sorted(set(EXAMPLES) - set(installed))
    assert not missing, f"example plugins {missing} are not installed: run `make install`"
    return installed


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)


def test_gateway_plugins_lists_the_examples_as_entry_points(tmp_path):
    gateway = Path(sys.executable).parent / "gateway"
    result = subprocess.run([str(gateway), "plugins", "--json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "GATEWAY_SQLITE_PATH": str(tmp_path / "cli.db")})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["pii_guard"] == {"name": "pii_guard", "version": "0.1.0",
                                 "source": "entry point (gateway_pii_guard)",
                                 "hooks": ["gateway_check_response", "gateway_declare",
                                           "gateway_enrich_request", "gateway_startup"]}
    assert rows["openai_compatible"]["source"] == "entry point (gateway_openai_compatible)"
    assert rows["openai_compatible"]["hooks"] == ["gateway_register_providers"]


def test_make_app_leaves_installed_plugins_out_but_keeps_the_disable_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", "echo_provider")
    pm = make_app(tmp_path).extensions["gateway"].pm
    assert set(pm.sources.values()) == {"built-in"}
    assert not pm.has_plugin("echo_provider")
    assert any(source.startswith("entry point") for source in
               make_app(tmp_path, entry_points=True).extensions["gateway"].pm.sources.values())


@pytest.fixture
def guarded_app(tmp_path, fake_openai, monkeypatch):
    """The default plugins plus every installed one, the OpenAI provider pointing at ``fake_openai``."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-upstream-secret-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    app = make_app(tmp_path, {"plugin_settings": {"pii_guard": {"deny": ["Project Falcon"]}}}, entry_points=True)
    assert app.extensions["gateway"].pm.sources["pii_guard"] == "entry point (gateway_pii_guard)"
    return app


def test_pii_guard_redacts_the_prompt_the_upstream_receives(guarded_app, fake_openai):
    with serve(guarded_app) as url:
        answer = sdk(url, issue_key(guarded_app)).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    sent = fake_openai.requests[-1]["messages"][-1]["content"]
    assert sent == "I am [redacted email], call me on [redacted phone], card [redacted card]"
    assert answer.choices[0].message.content == f"upstream: {sent}"


def test_pii_guard_refuses_a_denied_prompt_with_a_400_envelope(guarded_app, fake_openai):
    with serve(guarded_app) as url, pytest.raises(openai.BadRequestError) as info:
        sdk(url, issue_key(guarded_app)).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "status of project falcon?"}])
    assert info.value.status_code == 400
    assert info.value.body == {"message": "The request mentions a topic this gateway does not accept.",
                               "type": "invalid_request_error", "param": None, "code": "content_blocked"}
    assert fake_openai.requests == []


@pytest.fixture
def vllm_app(tmp_path, fake_openai, monkeypatch):
    """A gateway whose ``vllm`` provider (the openai_compatible example) is ``fake_openai``."""
    monkeypatch.setenv("VLLM_API_KEY", "vllm-secret-token")
    servers = [{"name": "vllm", "base_url": fake_openai.url, "api_key": {"$env": "VLLM_API_KEY"},
                "models": {"Qwen/Qwen2.5-7B-Instruct": [0.5, 1.5]}}]
    # No retries: each scripted upstream failure is seen by the caller as it is.
    return make_app(tmp_path, {"plugin_settings": {"openai_compatible": {"servers": servers}},
                               "retry_attempts": 0}, entry_points=True)


def test_openai_compatible_provider_answers_through_its_entry_point(vllm_app, fake_openai):
    key = issue_key(vllm_app)
    with serve(vllm_app) as url:
        raw = sdk(url, key).chat.completions.with_raw_response.create(
            model="Qwen/Qwen2.5-7B-Instruct", temperature=0.1,
            messages=[{"role": "user", "content": "mail jo@example.com"}])
    assert raw.headers["X-Gateway-Provider"] == "vllm"
    assert raw.parse().choices[0].message.content == "upstream: mail [redacted email]"
    assert fake_openai.requests[-1]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert fake_openai.requests[-1]["temperature"] == 0.1
    assert fake_openai.headers[-1]["authorization"] == "Bearer vllm-secret-token"   # {"$env": ...} resolved
    record = vllm_app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.provider, record.prompt_tokens, record.completion_tokens) == ("vllm", 7, 3)
    assert record.cost == pytest.approx((7 * 0.5 + 3 * 1.5) / 1_000_000)


@pytest.mark.parametrize("scripted, status, code", [
    (Scripted(status=503, body={"error": {"message": "overloaded"}}), 502, "provider_error"),
    (Scripted(status=400, body={"error": {"message": "max_tokens too large"}}), 400, "upstream_rejected"),
])
def test_openai_compatible_upstream_errors_become_envelopes(vllm_app, fake_openai, scripted, status, code):
    fake_openai.push(scripted)
    response = vllm_app.test_client().post(
        "/v1/chat/completions", headers={"X-API-Key": issue_key(vllm_app)},
        json={"model": "vllm/Qwen/Qwen2.5-7B-Instruct", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert fake_openai.url not in response.get_data(as_text=True)


def test_openai_compatible_imports_the_sdk_only_when_first_called():
    script = ("import sys, tempfile, os\n"
              "from gateway.testing import make_app\n"
              "servers = [{'name': 'ollama', 'base_url': 'http://127.0.0.1:9/v1', 'models': ['llama3.2']}]\n"
              "app = make_app(__import__('pathlib').Path(tempfile.mkdtemp()),\n"
              "               {'plugin_settings': {'openai_compatible': {'servers': servers}}}, entry_points=True)\n"
              "assert 'ollama' in app.extensions['gateway'].providers\n"
              "print('openai' in sys.modules)\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "OPENAI_"))}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("folder", sorted(EXAMPLES.values()))
def test_each_example_passes_its_own_test_suite(folder):
    """As its author runs it: pytest inside the package folder, with the gateway's test helpers."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT / "examples" / folder, capture_output=True, text=True, timeout=120,
                            env={name: v for name, v in os.environ.items() if not name.startswith("GATEWAY_")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
