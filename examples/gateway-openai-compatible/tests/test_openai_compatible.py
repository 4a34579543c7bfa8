"""gateway-openai-compatible against a real OpenAI-compatible server: another gateway, over HTTP.

The upstream is a gateway app serving its ``echo`` model on a loopback port, so
the provider is exercised through the real ``openai`` SDK and the real wire
format without any model runtime installed.
"""
from __future__ import annotations

import socket

import gateway_openai_compatible
import pytest

from gateway.errors import ConfigError
from gateway.testing import chat, issue_key, make_app, serve
from gateway.types import Price


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """(base URL, key) of a gateway serving ``echo`` over real HTTP."""
    app = make_app(tmp_path_factory.mktemp("upstream"))
    with serve(app) as url:
        yield f"{url}/v1", issue_key(app)


def local_gateway(tmp_path, servers):
    app = make_app(tmp_path, {"plugin_settings": {"openai_compatible": {"servers": servers}}},
                   plugins=(gateway_openai_compatible,))
    return app, app.test_client(), issue_key(app)


def test_a_configured_server_answers_under_its_own_name(tmp_path, upstream):
    base_url, upstream_key = upstream
    app, client, key = local_gateway(tmp_path, [
        {"name": "local", "base_url": base_url, "api_key": upstream_key, "models": ["echo"]}])
    response = chat(client, key, "hello from downstream", model="local/echo")
    assert response.status_code == 200
    assert response.headers["X-Gateway-Provider"] == "local"
    assert response.get_json()["choices"][0]["message"]["content"] == "hello from downstream"
    assert app.extensions["gateway"].providers["local"].models() == {"echo": Price(0.0, 0.0)}


def test_a_refusal_of_the_server_is_the_callers_400(tmp_path, upstream):
    base_url, upstream_key = upstream
    _, client, key = local_gateway(tmp_path, [
        {"name": "local", "base_url": base_url, "api_key": upstream_key, "models": ["not-pulled"]}])
    response = chat(client, key, model="local/not-pulled")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "upstream_rejected"
    assert "Provider 'local' refused the request" in error["message"] and "ollama pull" in error["message"]


def test_a_server_that_is_down_is_a_502_that_says_so(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, client, key = local_gateway(tmp_path, [
        {"name": "ollama", "base_url": f"http://127.0.0.1:{port}/v1", "models": ["llama3.2"]}])
    response = chat(client, key, model="llama3.2")
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "provider_unreachable" and "is the server running" in error["message"]
    assert str(port) not in error["message"]


@pytest.mark.parametrize("servers, message", [
    ({"name": "x"}, r"servers must be a list"),
    ([{"name": "x", "base_url": "127.0.0.1:11434", "models": ["m"]}], r"servers\[0\] needs a name and an http"),
    ([{"name": "x", "base_url": "http://127.0.0.1:1/v1", "models": []}], r"servers\[0\]\.models"),
    ([{"name": "x", "base_url": "http://127.0.0.1:1/v1", "models": ["m"], "key": "k"}], r"servers\[0\] must be"),
])
def test_malformed_settings_stop_start_up_naming_the_entry(tmp_path, servers, message):
    with pytest.raises(ConfigError, match=message):
        local_gateway(tmp_path, servers)
