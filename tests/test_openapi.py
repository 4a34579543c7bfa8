"""``GET /openapi.json``: a valid OpenAPI 3.1 document of every public route, built once per app."""
from __future__ import annotations

import subprocess
import sys

from openapi_spec_validator import validate

from gateway.openapi import ERRORS

#: Routes that are not API operations: the document itself and the dashboard's static files.
NOT_OPERATIONS = {"/openapi.json", "/dashboard/static/<path:filename>"}


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_public_route_and_method_is_documented(app, client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.rule in NOT_OPERATIONS or rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        assert path in paths, path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], (method, path)


def test_both_key_headers_are_security_schemes_and_every_private_route_needs_one(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"}}
    public = {"/health", "/api/v1/health/live", "/api/v1/health/ready", "/dashboard"}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            expected = [] if path in public else [{"ApiKey": []}, {"Bearer": []}]
            assert operation["security"] == expected, path
            if path not in public:
                assert "401" in operation["responses"] and "429" in operation["responses"], path


def test_every_error_answer_is_the_envelope(client):
    document = client.get("/openapi.json").get_json()
    for status in ERRORS:
        response = document["components"]["responses"][f"Error{status}"]
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert document["components"]["schemas"]["ErrorEnvelope"]["required"] == ["error"]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                # MCP answers JSON-RPC errors, as its protocol says; readiness answers its checks
                if int(status) >= 400 and path not in ("/mcp", "/api/v1/health/ready"):
                    assert answer == {"$ref": f"#/components/responses/Error{status}"}, (path, status)


def test_request_bodies_come_from_the_validating_schemas(client):
    document = client.get("/openapi.json").get_json()
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    # fields the gateway does not read pass on to the upstream: documented, not refused
    assert request["additionalProperties"] is True and request["required"] == ["messages", "model"]
    assert {"temperature", "tools", "n", "max_tokens", "stream_options"} <= set(request["properties"])
    assert "base_url" not in request["properties"]
    key_create = document["components"]["schemas"]["KeyCreate"]
    assert {"key_hash", "key_id", "active"}.isdisjoint(key_create["properties"])


def test_built_once_per_app_and_not_at_start_up(app, client):
    assert "openapi.document" not in app.extensions
    first = client.get("/openapi.json").get_json()
    cached = app.extensions["openapi.document"]
    assert client.get("/openapi.json").get_json() == first and app.extensions["openapi.document"] is cached


def test_creating_the_app_does_not_import_apispec():
    code = ("import sys, tempfile; from gateway.app import create_app; "
            "create_app({'sqlite_path': tempfile.mkdtemp() + '/g.db'}); print('apispec' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
