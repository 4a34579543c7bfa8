"""The wire around the calls: compressed bodies, model lookup, and the embeddings and Responses
routes as the gateway records, caches and routes them (the clients' view is in tests/compat)."""
from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest

from gateway.testing import issue_key
from tests.test_errors import assert_envelope

CHAT = "/v1/chat/completions"
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello wire"}]}


def post_encoded(client, key, data: bytes, encoding: str):
    return client.post(CHAT, data=data, headers={"X-API-Key": key, "Content-Encoding": encoding,
                                                 "Content-Type": "application/json"})


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw deflate, as some clients send
])
def test_compressed_bodies_are_decoded(client, key, encoding, compress):
    response = post_encoded(client, key, compress(json.dumps(BODY).encode()), encoding)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["choices"][0]["message"]["content"] == "hello wire"


def test_the_size_limit_applies_to_the_decoded_body(client, key, gateway):
    limit = gateway.settings.max_body_bytes
    bomb = gzip.compress(json.dumps({**BODY, "pad": "x" * (limit + 10)}).encode())
    assert len(bomb) < limit // 100  # small on the wire, over the limit decoded
    assert_envelope(post_encoded(client, key, bomb, "gzip"), 413, "request_too_large")


def test_truncated_or_unknown_encodings_are_refused(client, key):
    whole = gzip.compress(json.dumps(BODY).encode())
    assert_envelope(post_encoded(client, key, whole[:-12], "gzip"), 400, "invalid_encoding")
    assert_envelope(post_encoded(client, key, b"not gzip", "gzip"), 400, "invalid_encoding")
    assert_envelope(post_encoded(client, key, whole, "br"), 415, "unsupported_content_encoding")


def test_every_answer_carries_the_request_id_of_its_record(app, client, key):
    answer = client.post(CHAT, json=BODY, headers={"X-API-Key": key})
    refused = client.post(CHAT, json={"model": "echo"}, headers={"X-API-Key": key})
    anonymous = client.get("/health")
    ids = [response.headers["x-request-id"] for response in (answer, refused, anonymous)]
    assert len(set(ids)) == 3 and all(len(value) == 32 for value in ids)
    logged = {record.request_id for record in app.extensions["gateway"].store.records_for_user("alice")}
    assert {ids[0], ids[1]} <= logged


def test_a_model_is_found_by_name_or_alias_and_only_if_the_key_may_use_it(app, client):
    key = issue_key(app)
    echo = client.get("/v1/models/echo", headers={"X-API-Key": key})
    assert echo.status_code == 200 and echo.get_json()["id"] == "echo" and echo.get_json()["object"] == "model"
    assert_envelope(client.get("/v1/models/no-such-model", headers={"X-API-Key": key}), 404, "model_not_found")
    limited = issue_key(app, user="bob", allowed_models=["echo"])
    assert client.get("/v1/models/echo", headers={"X-API-Key": limited}).status_code == 200
    assert client.get("/v1/models/gpt-4o-mini", headers={"X-API-Key": limited}).status_code == 404
    assert_envelope(client.get("/v1/models/echo"), 401, "invalid_api_key")


def test_bedrock_models_are_found_by_alias_with_colons_in_their_ids(upstreams_app):
    app = upstreams_app()
    client, key = app.test_client(), issue_key(app)
    by_alias = client.get("/v1/models/claude-3-haiku", headers={"X-API-Key": key}).get_json()
    assert by_alias["id"] == "anthropic.claude-3-haiku-20240307-v1:0"
    by_id = client.get(f"/v1/models/{by_alias['id']}", headers={"X-API-Key": key})
    assert by_id.get_json()["id"] == by_alias["id"]


def test_embeddings_are_recorded_priced_and_cached(upstreams_app, fake_openai):
    app = upstreams_app()
    client, key = app.test_client(), issue_key(app)
    body = {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 8}
    first = client.post("/v1/embeddings", json=body, headers={"X-API-Key": key})
    second = client.post("/v1/embeddings", json=body, headers={"X-API-Key": key})
    assert first.status_code == second.status_code == 200
    assert first.get_data() == second.get_data() and len(first.get_json()["data"]) == 2
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    sent = [request for path, request in zip(fake_openai.paths, fake_openai.requests, strict=True)
            if path.endswith("/embeddings")]
    assert sent == [body]  # once, as the caller sent it
    fresh, cached = app.extensions["gateway"].store.records_for_user("alice")[-2:]
    tokens = first.get_json()["usage"]["prompt_tokens"]
    assert (fresh.model, fresh.provider, fresh.prompt_tokens) == ("text-embedding-3-small", "openai", tokens)
    assert fresh.cost == pytest.approx(tokens * 0.02 / 1_000_000) and cached.cached and cached.cost == 0


def test_bedrock_embeddings_through_the_route(upstreams_app, fake_bedrock):
    app = upstreams_app()
    response = app.test_client().post("/v1/embeddings", json={"model": "titan-embed-text-v2", "input": "hello"},
                                      headers={"X-API-Key": issue_key(app)})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["object"] == "list" and len(answer["data"][0]["embedding"]) > 0
    assert response.headers["X-Gateway-Provider"] == "bedrock"
    record = app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert record.prompt_tokens == answer["usage"]["prompt_tokens"] > 0


def test_embedding_input_is_checked_before_any_provider_is_called(upstreams_app, fake_openai):
    app = upstreams_app()
    client, key = app.test_client(), issue_key(app)
    for bad in ({"model": "text-embedding-3-small"}, {"model": "text-embedding-3-small", "input": []},
                {"model": "text-embedding-3-small", "input": [1, "a"]}):
        assert_envelope(client.post("/v1/embeddings", json=bad, headers={"X-API-Key": key}), 400, "invalid_request")
    assert fake_openai.requests == []


def test_a_chat_only_provider_refuses_embeddings_and_responses_naming_itself(upstreams_app):
    app = upstreams_app()
    client, key = app.test_client(), issue_key(app)
    embeddings = client.post("/v1/embeddings", json={"model": "echo", "input": "x"}, headers={"X-API-Key": key})
    error = assert_envelope(embeddings, 400, "unsupported_by_provider")
    assert "'echo'" in error["message"] and error["param"] == "model"
    responses = client.post("/v1/responses", json={"model": "claude-3-haiku", "input": "x"},
                            headers={"X-API-Key": key})
    assert "'bedrock'" in assert_envelope(responses, 400, "unsupported_by_provider")["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_responses_are_passed_through_and_recorded_with_their_tokens(upstreams_app, fake_openai, stream):
    app = upstreams_app()
    body = {"model": "gpt-4o-mini", "input": "say hi", "reasoning": {"effort": "low"}, "stream": stream}
    response = app.test_client().post("/v1/responses", json=body, headers={"X-API-Key": issue_key(app)})
    data = response.get_data()  # a stream is recorded when it ends
    assert response.status_code == 200, data
    sent = fake_openai.requests[-1]
    assert fake_openai.paths[-1].endswith("/responses") and sent == body
    record = app.extensions["gateway"].store.records_for_user("alice")[-1]
    assert record.streamed is stream and record.status == 200
    assert record.prompt_tokens > 0 and record.completion_tokens > 0 and record.cost > 0
    if stream:
        assert b"event: response.completed" in data and b"[DONE]" not in data


def test_fields_inside_messages_are_dropped_for_bedrock_and_nulls_are_absent(upstreams_app, fake_bedrock):
    app = upstreams_app()
    turn = {"role": "assistant", "content": "earlier answer", "tool_calls": None, "function_call": None,
            "annotations": [], "provider_specific_fields": {"refusal": None}}
    body = {"model": "claude-3-haiku", "max_tokens": None, "temperature": None,
            "messages": [{"role": "user", "content": "hi"}, turn, {"role": "user", "content": "again"}]}
    response = app.test_client().post(CHAT, json=body, headers={"X-API-Key": issue_key(app)})
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = fake_bedrock.requests[-1]
    assert sent["messages"][1] == {"role": "assistant", "content": [{"text": "earlier answer"}]}
    assert "inferenceConfig" not in sent


def test_a_parameter_bedrock_cannot_honour_is_a_400_naming_it(upstreams_app, fake_bedrock):
    app = upstreams_app()
    body = {"model": "claude-3-haiku", "reasoning_effort": "low", "messages": [{"role": "user", "content": "hi"}]}
    error = assert_envelope(app.test_client().post(CHAT, json=body, headers={"X-API-Key": issue_key(app)}),
                            400, "upstream_rejected")
    assert "reasoning_effort" in error["message"] and fake_bedrock.requests == []


def test_fields_inside_messages_reach_an_openai_compatible_upstream_unchanged(upstreams_app, fake_openai):
    """litellm sends its previous answer back with ``provider_specific_fields`` (a 400 here before)."""
    app = upstreams_app()
    turn = {"role": "assistant", "content": "earlier", "tool_calls": None, "function_call": None,
            "provider_specific_fields": {"refusal": None, "citations": []}}
    messages = [{"role": "user", "content": "hi"}, turn, {"role": "user", "content": "again"}]
    response = app.test_client().post(CHAT, json={"model": "gpt-4o-mini", "messages": messages},
                                      headers={"X-API-Key": issue_key(app)})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fake_openai.requests[-1]["messages"] == messages


def test_nesting_past_the_limit_is_a_400_however_deep(client, key):
    for depth in (65, 900, 5000):
        deep = "[" * depth + "]" * depth
        body = json.dumps(BODY)[:-1] + f', "extra": {deep}}}'
        response = client.post(CHAT, data=body, headers={"X-API-Key": key, "Content-Type": "application/json"})
        assert_envelope(response, 400, "too_deeply_nested")
    assert client.post(CHAT, json={**BODY, "extra": [[[["fine"]]]]}, headers={"X-API-Key": key}).status_code == 200


def test_a_chunked_body_over_the_limit_is_a_413_not_a_cut_body(app, client, key, gateway):
    limit = gateway.settings.max_body_bytes
    whole = json.dumps({**BODY, "pad": "x" * limit}).encode()
    response = client.post(CHAT, input_stream=io.BytesIO(whole), environ_overrides={"wsgi.input_terminated": True},
                           headers={"X-API-Key": key, "Content-Type": "application/json",
                                    "Transfer-Encoding": "chunked"})
    assert_envelope(response, 413, "request_too_large")
    small = json.dumps(BODY).encode()
    response = client.post(CHAT, input_stream=io.BytesIO(small), environ_overrides={"wsgi.input_terminated": True},
                           headers={"X-API-Key": key, "Content-Type": "application/json",
                                    "Transfer-Encoding": "chunked"})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_refused_bodies_are_logged_with_their_real_status(app, client, key, gateway):
    big = {**BODY, "pad": "x" * (gateway.settings.max_body_bytes + 1)}
    assert client.post(CHAT, json=big, headers={"X-API-Key": key}).status_code == 413
    assert client.post(CHAT, data="x", headers={"X-API-Key": key, "Content-Type": "text/plain"}).status_code == 415
    records = gateway.store.records_for_user("alice")[-2:]
    assert [(r.status, r.error_code) for r in records] == [(413, "request_too_large"), (415, "unsupported_media_type")]


def test_repeated_slashes_are_a_404_not_a_redirect_to_the_callers_host(client, key):
    response = client.get("/v1//models", headers={"X-API-Key": key, "Host": "evil.example"})
    assert_envelope(response, 404, "not_found")
    assert "Location" not in response.headers
