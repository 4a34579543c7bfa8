"""CORS is configurable and never a wildcard with credentials; each log line of a request carries its correlation id."""
from __future__ import annotations

import json
import logging

from gateway import hookimpl
from gateway.logs import JSONFormatter
from gateway.testing import issue_key, make_app

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def test_cors_is_off_without_origins(client):
    response = client.options("/v1/chat/completions", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_answers_only_configured_origins_and_never_with_credentials(tmp_path):
    app = make_app(tmp_path, {"cors_origins": ["https://shop.example"]})
    client = app.test_client()
    preflight = client.options("/v1/chat/completions", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    answer = client.post("/v1/chat/completions", json=CHAT, headers={
        "Origin": "https://shop.example", "X-API-Key": issue_key(app)})
    assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Correlation-ID" in answer.headers["Access-Control-Expose-Headers"]
    foreign = client.options("/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_every_log_line_of_a_request_carries_its_correlation_id(tmp_path):
    class Chatty:
        @hookimpl
        def gateway_enrich_request(self, completion):
            logging.getLogger("plugins.chatty").warning("enriching", extra={"messages": len(completion.messages)})

    lines: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(JSONFormatter())
    handler.emit = lambda record: lines.append(handler.format(record))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        app = make_app(tmp_path, plugins=(Chatty(),))
        response = app.test_client().post("/v1/chat/completions", json=CHAT, headers={
            "X-API-Key": issue_key(app), "X-Correlation-ID": "trace-42"})
    finally:
        root.removeHandler(handler)
    assert response.status_code == 200
    logged = [json.loads(line) for line in lines]
    enriching = [entry for entry in logged if entry["message"] == "enriching"]
    assert enriching and enriching[0]["correlation_id"] == "trace-42" and enriching[0]["messages"] == 1
    assert enriching[0]["level"] == "WARNING" and enriching[0]["logger"] == "plugins.chatty"
