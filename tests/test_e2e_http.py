"""End to end over real HTTP, with the official ``openai`` SDK as the client."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway.testing import issue_key, serve

ROOT = Path(__file__).resolve().parents[1]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)


def test_openai_sdk_against_the_echo_model(app, live_url):
    key = issue_key(app)
    answer = sdk(live_url, key).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello through the gateway"}])
    assert answer.choices[0].message.content == "hello through the gateway"
    assert answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens == 4
    assert answer.model == "echo"


def test_openai_sdk_lists_models(app, live_url):
    models = [m.id for m in sdk(live_url, issue_key(app)).models.list()]
    assert "echo" in models and "gpt-4o-mini" not in models  # no OPENAI_API_KEY: it could only answer 503


def test_openai_sdk_sees_gateway_errors_as_its_own_exceptions(app, live_url):
    client = sdk(live_url, "gw_test_0000000000000000_" + "x" * 43)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as info:
        sdk(live_url, issue_key(app)).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"


def test_openai_model_routed_to_an_openai_wire_server(openai_app, fake_openai):
    key = issue_key(openai_app)
    with serve(openai_app) as url:
        raw = sdk(url, key).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0.2, max_tokens=50,
            messages=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}])
    answer = raw.parse()
    assert answer.choices[0].message.content == "upstream: hi"
    assert raw.headers["X-Gateway-Provider"] == "openai"
    assert raw.headers["X-Gateway-Model"] == "gpt-4o-mini"
    sent = fake_openai.requests[-1]
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    assert sent["messages"][0] == {"role": "system", "content": "be kind"}
    upstream_auth = fake_openai.headers[-1]["authorization"]
    assert upstream_auth == "Bearer sk-test-upstream-secret-0123456789"  # never the gateway key
    record = openai_app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert (record.provider, record.prompt_tokens, record.completion_tokens) == ("openai", 7, 3)
    assert record.cost == pytest.approx((7 * 0.15 + 3 * 0.60) / 1_000_000)


def test_native_api_over_http_reports_provider_cost_latency(openai_app):
    key = issue_key(openai_app)
    with serve(openai_app) as url:
        response = httpx.post(f"{url}/api/v1/completions", headers={"X-API-Key": key}, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "price?"}]})
    body = response.json()
    assert response.status_code == 200
    assert body["provider"] == "openai" and body["content"] == "upstream: price?"
    assert body["cost"] == pytest.approx((7 * 2.5 + 3 * 10.0) / 1_000_000)
    assert body["latency_ms"] > 0 and body["request_id"] == body["id"]


def test_upstream_4xx_is_the_callers_400_and_5xx_a_502(openai_app, fake_openai):
    from tests.fakes.openai_server import Scripted

    key = issue_key(openai_app)
    fake_openai.push(Scripted(status=400, body={"error": {"message": "bad temperature", "type": "x"}}),
                     *[Scripted(status=500, body={"error": {"message": "internal at 10.0.0.7"}})] * 3)
    client = openai_app.test_client()
    message = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    first = client.post("/v1/chat/completions", json=message, headers={"X-API-Key": key})
    assert first.status_code == 400 and "bad temperature" in first.get_json()["error"]["message"]
    second = client.post("/v1/chat/completions", json=message, headers={"X-API-Key": key})
    assert second.status_code == 502
    assert len(fake_openai.requests) == 1 + 3  # the 400 is not retried; the 500 twice
    text = second.get_data(as_text=True)
    assert "10.0.0.7" not in text and "127.0.0.1" not in text and "sk-test" not in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gateway_serve_answers_the_sdk(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
           "GATEWAY_SQLITE_PATH": str(tmp_path / "served.db")}
    gateway_cmd = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*gateway_cmd, "init"], env=env, check=True, capture_output=True, cwd=ROOT)
    created = subprocess.run([*gateway_cmd, "keys", "create", "--user", "dev", "--tier", "premium",
                              "--json"], env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    import json

    key = json.loads(created.stdout)["key"]
    port = _free_port()
    server = subprocess.Popen([*gateway_cmd, "serve", "--port", str(port), "--workers", "2"],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "gateway serve did not come up"
            time.sleep(0.1)
        answer = sdk(f"http://127.0.0.1:{port}", key).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "served by granian"}])
        assert answer.choices[0].message.content == "served by granian"
    finally:
        server.terminate()
        server.wait(timeout=15)
