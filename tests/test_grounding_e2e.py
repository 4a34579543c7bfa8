"""The catalog grounding check end to end: the demo catalog, the ``echo`` provider (it answers with the
user's words, so a test writes the answer) and the real clients, streamed and not.

The Voltara 20000mAh Power Bank (ELE-0004) costs $49.00 in the demo catalog and is in stock.
"""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from gateway.catalog import import_products
from gateway.testing import issue_key, make_app, serve
from tests.test_search_quality import DEMO

WRONG = "The Voltara 20000mAh Power Bank costs $29 and it is in stock."
RIGHT = "The Voltara 20000mAh Power Bank costs $49 and it is in stock."
CONTEXT = {"mcp": {"enabled": True}}
PRICE_MISMATCH = {"product_id": "ELE-0004", "field": "price", "claimed": 29.0, "catalog": 49.0}


def _shop(tmp_path, **config):
    app = make_app(tmp_path, config)
    import_products(app.extensions["gateway"].store, DEMO)
    return app


@pytest.fixture
def shop(tmp_path):
    """(app, base URL, key) of a gateway with the demo catalog, served over HTTP."""
    app = _shop(tmp_path)
    with serve(app) as url:
        yield app, url, issue_key(app)


def _sdk(url, key):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)


def _native(url, key, text, **body):
    return httpx.post(f"{url}/api/v1/completions", headers={"X-API-Key": key}, timeout=15, json={
        "model": "echo", "messages": [{"role": "user", "content": text}], **body})


def _sse(response) -> list[dict | str]:
    return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
            for line in response.text.splitlines() if line.startswith("data: ")]


def _price_mismatch(grounding: dict) -> dict:
    [mismatch] = grounding["mismatches"]
    return {name: mismatch[name] for name in PRICE_MISMATCH}


def test_openai_sdk_gets_the_mismatch_in_a_header(shop):
    app, url, key = shop
    raw = _sdk(url, key).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": WRONG}], extra_body=CONTEXT)
    assert raw.headers["X-Gateway-MCP-Status"] == "injected"
    assert raw.headers["X-Gateway-Grounding"].startswith("mismatch;")
    assert "mismatches=1" in raw.headers["X-Gateway-Grounding"]
    assert raw.parse().choices[0].message.content == WRONG  # annotated, never changed
    [record] = app.extensions["gateway"].store.records_for_user("alice")
    assert record.checks == {"grounding": "flagged"}


def test_openai_sdk_stream_ends_with_the_verdict(shop):
    _app, url, key = shop
    chunks = list(_sdk(url, key).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": WRONG}], extra_body=CONTEXT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WRONG
    verdict = chunks[-1].model_extra["gateway"]
    assert verdict["checks"] == {"grounding": "flagged"}
    assert _price_mismatch(verdict["grounding"]) == PRICE_MISMATCH


def test_native_api_has_the_grounding_field_streamed_and_not(shop):
    _app, url, key = shop
    answer = _native(url, key, WRONG, **CONTEXT).json()
    assert answer["grounding"]["status"] == "mismatch" and "ELE-0004" in answer["grounding"]["checked"]
    assert _price_mismatch(answer["grounding"]) == PRICE_MISMATCH
    assert any(claim["field"] == "availability" for claim in answer["grounding"]["verified"])
    events = _sse(_native(url, key, WRONG, stream=True, **CONTEXT))
    assert events[-1] == "[DONE]" and _price_mismatch(events[-2]["gateway"]["grounding"]) == PRICE_MISMATCH


def test_a_true_answer_is_verified(shop):
    _app, url, key = shop
    response = _native(url, key, RIGHT, **CONTEXT)
    assert response.headers["X-Gateway-Grounding"].startswith("verified;")
    grounding = response.json()["grounding"]
    assert grounding["status"] == "verified" and grounding["mismatches"] == []
    assert {claim["field"] for claim in grounding["verified"]} >= {"price", "availability"}


def test_an_invented_product_is_flagged(shop):
    _app, url, key = shop
    text = "Try the Voltara HyperCharge 9000 Pro power bank, only $59."
    grounding = _native(url, key, text, **CONTEXT).json()["grounding"]
    assert grounding["status"] == "mismatch" and grounding["unknown_products"]


def test_without_context_auto_checks_nothing(shop):
    app, url, key = shop
    response = _native(url, key, WRONG)
    assert response.json()["grounding"] is None and "X-Gateway-Grounding" not in response.headers
    assert app.extensions["gateway"].store.records_for_user("alice")[0].checks == {}


def test_annotate_checks_answers_without_context(tmp_path):
    app = _shop(tmp_path, catalog_grounding="annotate")
    with serve(app) as url:
        assert _native(url, issue_key(app), WRONG).json()["grounding"]["status"] == "mismatch"


def test_block_refuses_a_mismatch_with_a_502_and_ends_a_stream_with_the_error(tmp_path):
    app = _shop(tmp_path, catalog_grounding="block")
    with serve(app) as url:
        key = issue_key(app)
        client = _sdk(url, key)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": WRONG}])
        assert refused.value.status_code == 502
        error = refused.value.body
        assert error["code"] == "grounding_mismatch" and "$49.00" in error["message"]
        assert refused.value.response.headers["X-Gateway-Grounding"].startswith("mismatch;")
        assert client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": RIGHT}]).choices[0].message.content == RIGHT
        stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": WRONG}],
                                                stream=True)
        with pytest.raises(openai.APIError, match="contradicts the product catalog"):
            list(stream)
    records = app.extensions["gateway"].store.records_for_user("alice")
    assert [(r.status, r.error_code, r.checks["grounding"]) for r in records] == [
        (502, "grounding_mismatch", "blocked"), (200, "", "passed"), (502, "grounding_mismatch", "blocked")]


def test_a_catalog_change_reaches_the_check(shop):
    _app, url, key = shop
    admin = issue_key(_app, user="ops", permissions=("admin",))
    assert _native(url, key, WRONG, **CONTEXT).json()["grounding"]["status"] == "mismatch"
    changed = {"name": "Voltara 20000mAh Power Bank", "category": "electronics", "price": 29.0,
               "brand": "Voltara", "availability": "in-stock", "rating": 4.2}
    assert httpx.put(f"{url}/api/v1/admin/catalog/products/ELE-0004", headers={"X-API-Key": admin},
                     json=changed).status_code in (200, 201)
    assert _native(url, key, WRONG, **CONTEXT).json()["grounding"]["status"] == "verified"


def test_an_unreadable_catalog_never_fails_the_answer(tmp_path, monkeypatch):
    app = _shop(tmp_path, catalog_grounding="annotate")

    def broken(**_filters):
        raise OSError("disk gone")

    monkeypatch.setattr(app.extensions["gateway"].store, "list_products", broken)
    with serve(app) as url:
        response = _native(url, issue_key(app), WRONG)
    assert response.status_code == 200 and response.json()["content"] == WRONG
    assert response.json()["grounding"] == {"status": "catalog_unavailable"}
    assert response.headers["X-Gateway-Grounding"] == "catalog_unavailable"


def test_a_keys_grounding_beats_the_setting(tmp_path):
    app = _shop(tmp_path, catalog_grounding="block")
    with serve(app) as url:
        relaxed = issue_key(app, user="relaxed", grounding="off")
        strict = issue_key(app, user="strict", grounding="block")
        assert _native(url, relaxed, WRONG).json()["grounding"] is None
        refused = _native(url, strict, WRONG, **CONTEXT)
        assert refused.status_code == 502 and refused.json()["error"]["code"] == "grounding_mismatch"
    store = app.extensions["gateway"].store
    assert store.records_for_user("strict")[0].checks == {"grounding": "blocked"}


def test_the_mismatch_rate_per_model_reaches_cloudwatch_and_the_usage_apis(tmp_path, capsys):
    app = _shop(tmp_path, metrics_emf=True)
    client, key = app.test_client(), issue_key(app)
    for text in (WRONG, RIGHT):
        client.post("/api/v1/completions", headers={"X-API-Key": key},
                    json={"model": "echo", "messages": [{"role": "user", "content": text}], **CONTEXT})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "GroundingMismatch" in line]
    assert lines and all(line["Model"] == "echo" for line in lines)
    assert sorted(value for line in lines for value in line["GroundingMismatch"]) == [0.0, 1.0]
    usage = client.get("/api/v1/usage?group_by=model", headers={"X-API-Key": key}).get_json()
    assert usage["groups"][0]["checks"]["grounding"] == {"checked": 2, "flagged": 1, "rate": 0.5}
    admin = issue_key(app, user="ops", permissions=("admin",))
    metrics = client.get("/api/v1/admin/metrics", headers={"X-API-Key": admin}).get_json()
    [row] = [row for row in metrics["by_provider_model"] if row["model"] == "echo"]
    assert row["checks"]["grounding"]["rate"] == 0.5 and "grounding" in metrics["answer_checks"]
