"""The clients users point at the gateway, with the catalog grounding check on: the verdict event a
checked stream ends with is a chunk they all take in their stride, and the text is the upstream's.

The upstream (the realistic OpenAI fake) answers "upstream: <the question>", so the question writes a
claim: the Voltara 20000mAh Power Bank costs $49.00 in the demo catalog, not $29.
"""
from __future__ import annotations

import os

import pytest

from gateway.catalog import import_products
from gateway.testing import issue_key, make_app
from tests.compat.conftest import SETTINGS, UPSTREAM_KEY, Served, serve
from tests.test_search_quality import DEMO

MODEL = "gpt-4o-mini"
CLAIM = "The Voltara 20000mAh Power Bank costs $29."
EXPECTED = f"upstream: {CLAIM}"


@pytest.fixture
def grounded(tmp_path, upstream):
    """The gateway with the demo catalog and grounding on for every answer, over real HTTP."""
    app = make_app(tmp_path, {**SETTINGS, "catalog_grounding": "annotate", "plugin_settings": {
        "openai_provider": {"api_key": UPSTREAM_KEY, "base_url": upstream.url}}})
    import_products(app.extensions["gateway"].store, DEMO)
    with serve(app) as url:
        yield Served(url, issue_key(app, user="compat", tier="premium"), app, upstream)


def test_openai_sdk_stream_with_usage_then_the_verdict(grounded):
    with grounded.sdk() as client:
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": CLAIM}], stream=True,
            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED
    assert chunks[-2].usage is not None  # the upstream's usage chunk, then the gateway's verdict
    grounding = chunks[-1].model_extra["gateway"]["grounding"]
    assert grounding["status"] == "mismatch" and grounding["mismatches"][0]["catalog"] == 49.0


def test_langchain_stream_adds_up_to_the_upstream_text(grounded):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=MODEL, base_url=grounded.api, api_key=grounded.key, max_retries=0, timeout=15)
    chunks = list(chat.stream(CLAIM, stream_usage=True))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == EXPECTED
    assert total.usage_metadata["output_tokens"] > 0
    raw = chat.invoke(CLAIM)
    assert raw.content == EXPECTED


def test_litellm_stream_adds_up_to_the_upstream_text(grounded):
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.telemetry = False
    stream = litellm.completion(model=f"openai/{MODEL}", api_base=grounded.api, api_key=grounded.key,
                                messages=[{"role": "user", "content": CLAIM}], stream=True, num_retries=0, timeout=15)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == EXPECTED
    records = grounded.app.extensions["gateway"].store.records_for_user("compat")
    assert [r.checks for r in records] == [{"grounding": "flagged"}]
