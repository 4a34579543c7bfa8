"""Bedrock embeddings: BedrockProvider.embed through real boto3 against the fake Bedrock Runtime.

Titan Text Embeddings v2 (one InvokeModel call per string) and Cohere Embed v3 (one call for
every text): the exact bodies Bedrock receives, the OpenAI-shaped answer (floats and base64),
usage, every refusal (made before any call), and Bedrock's errors.
"""
from __future__ import annotations

import array
import base64
import json
import struct
import subprocess
import sys

import pytest

from gateway.errors import InvalidRequest, ProviderError, UpstreamRejected
from gateway.models import DEFAULT_MODELS, ModelTable
from gateway.testing import make_app
from gateway.types import EmbeddingRequest, Price, Usage
from plugins.bedrock_embeddings import TITAN_MAX_INPUTS
from tests.fakes.bedrock_server import (
    Scripted,
    cohere_embed_answer,
    embedding_vector,
    error_step,
    titan_embed_answer,
)

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
COHERE_MULTILINGUAL = "cohere.embed-multilingual-v3"


@pytest.fixture
def provider(tmp_path, fake_bedrock):
    """The app's Bedrock provider, its boto3 client pointed at ``fake_bedrock``."""
    return make_app(tmp_path).extensions["gateway"].providers["bedrock"]


def embed(provider, model, input, **parameters):
    result = provider.embed(EmbeddingRequest(model=model, input=input, parameters=parameters))
    return result, json.loads(result.body)


def openai_list(vectors, model, tokens):
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# ---- Titan Text Embeddings v2 --------------------------------------------------------------------

def test_titan_one_string_is_one_call_normalized(provider, fake_bedrock):
    result, answer = embed(provider, TITAN, "the quick brown fox")
    assert fake_bedrock.requests == [{"inputText": "the quick brown fox", "normalize": True}]
    assert fake_bedrock.paths == ["/model/amazon.titan-embed-text-v2%3A0/invoke"]
    assert answer == openai_list([embedding_vector("the quick brown fox")], TITAN, 4)
    assert (result.usage, result.model) == (Usage(prompt_tokens=4), TITAN)


def test_titan_list_is_one_call_per_string_in_order_with_dimensions(provider, fake_bedrock):
    texts = ["first text", "second one here", "third"]
    result, answer = embed(provider, TITAN, texts, dimensions=256, user="u-1")
    assert fake_bedrock.requests == [{"inputText": text, "dimensions": 256, "normalize": True} for text in texts]
    assert answer == openai_list([embedding_vector(text, 256) for text in texts], TITAN, 2 + 3 + 1)
    assert [len(item["embedding"]) for item in answer["data"]] == [256] * 3
    assert result.usage == Usage(prompt_tokens=6)


def test_titan_answer_from_embeddings_by_type_alone(provider, fake_bedrock):
    answer = titan_embed_answer({"inputText": "two words"})
    fake_bedrock.push(Scripted(body={"embeddingsByType": answer["embeddingsByType"], "inputTextTokenCount": 2}))
    assert embed(provider, TITAN, "two words")[1]["data"][0]["embedding"] == answer["embedding"]


# ---- Cohere Embed v3 ----------------------------------------------------------------------------

def test_cohere_list_is_one_call_with_every_text(provider, fake_bedrock):
    texts = ["a red shoe", "blue running socks"]
    result, answer = embed(provider, COHERE, texts)
    assert fake_bedrock.requests == [{"texts": texts, "input_type": "search_document", "truncate": "NONE"}]
    assert fake_bedrock.models == [COHERE]
    assert answer == openai_list([embedding_vector(text) for text in texts], COHERE, 6)
    assert (result.usage, result.model) == (Usage(prompt_tokens=6), COHERE)


def test_cohere_input_type_and_dimensions_1024_are_honoured(provider, fake_bedrock):
    embed(provider, COHERE_MULTILINGUAL, "¿dónde está?", input_type="search_query", dimensions=1024)
    assert fake_bedrock.requests == [{"texts": ["¿dónde está?"], "input_type": "search_query", "truncate": "NONE"}]
    assert fake_bedrock.models == [COHERE_MULTILINGUAL]


def test_cohere_usage_is_zero_without_the_token_count_header(provider, fake_bedrock):
    fake_bedrock.push(Scripted(body=cohere_embed_answer({"texts": ["no header"]})))
    result, answer = embed(provider, COHERE, "no header")
    assert result.usage == Usage(prompt_tokens=0)
    assert answer["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


# ---- base64 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [TITAN, COHERE])
def test_base64_is_little_endian_float32_equal_to_the_floats(provider, model):
    texts = ["alpha beta", "gamma"]
    _, floats = embed(provider, model, texts)
    _, encoded = embed(provider, model, texts, encoding_format="base64")
    assert encoded["usage"] == floats["usage"] and encoded["model"] == model
    for as_float, as_base64 in zip(floats["data"], encoded["data"], strict=True):
        raw = base64.b64decode(as_base64["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == as_float["embedding"]
        assert array.array("f", raw).tolist() == as_float["embedding"]  # how the openai SDK decodes it
        assert as_base64["index"] == as_float["index"]


# ---- refusals: a 400 naming the field, and nothing sent ------------------------------------------

@pytest.mark.parametrize("model, input, parameters, field", [
    (TITAN, [101, 2023, 102], {}, "input"),
    (COHERE, [[101, 2023], [102]], {}, "input"),
    (TITAN, [], {}, "input"),
    (COHERE, "", {}, "input"),
    (TITAN, ["fine", None], {}, "input"),
    (TITAN, ["x"] * (TITAN_MAX_INPUTS + 1), {}, "input"),
    (COHERE, ["x"] * 97, {}, "input"),
    (TITAN, "x", {"dimensions": 1536}, "dimensions"),
    (TITAN, "x", {"dimensions": 512.0}, "dimensions"),
    (COHERE, "x", {"dimensions": 256}, "dimensions"),
    (TITAN, "x", {"input_type": "search_query"}, "input_type"),
    (COHERE, "x", {"input_type": "image"}, "input_type"),
    (COHERE, "x", {"encoding_format": "int8"}, "encoding_format"),
    (TITAN, "x", {"seed": 1}, "seed"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "x", {}, "model"),
])
def test_what_the_model_cannot_honour_is_refused_by_name(provider, fake_bedrock, model, input, parameters, field):
    with pytest.raises(InvalidRequest) as refused:
        embed(provider, model, input, **parameters)
    assert refused.value.status == 400 and refused.value.param == field
    assert f"'{field}'" in refused.value.message or (field == "model" and model in refused.value.message)
    assert fake_bedrock.requests == []


def test_the_largest_lists_allowed_are_served(provider, fake_bedrock):
    assert len(embed(provider, TITAN, ["x"] * TITAN_MAX_INPUTS)[1]["data"]) == TITAN_MAX_INPUTS
    assert len(embed(provider, COHERE, ["x"] * 96)[1]["data"]) == 96
    assert len(fake_bedrock.requests) == TITAN_MAX_INPUTS + 1


# ---- Bedrock's errors ---------------------------------------------------------------------------

def test_throttling_is_a_retryable_provider_error(provider, fake_bedrock):
    fake_bedrock.push(error_step(429, "ThrottlingException", "Too many requests"))
    with pytest.raises(ProviderError) as failed:
        embed(provider, COHERE, "x")
    assert failed.value.retryable and failed.value.code == "provider_rate_limited"
    assert len(fake_bedrock.requests) == 1  # botocore retries nothing: the gateway's loop does


def test_validation_error_is_the_callers_400(provider, fake_bedrock):
    fake_bedrock.push(error_step(400, "ValidationException", "Input is too long for requested model."))
    with pytest.raises(UpstreamRejected) as rejected:
        embed(provider, TITAN, "x")
    assert rejected.value.status == 400 and not rejected.value.retryable
    assert "too long" in rejected.value.message


def test_a_failure_mid_list_stops_the_titan_calls(provider, fake_bedrock):
    fake_bedrock.push(Scripted(body=titan_embed_answer({"inputText": "one"})),
                      error_step(503, "ServiceUnavailableException"))
    with pytest.raises(ProviderError) as failed:
        embed(provider, TITAN, ["one", "two", "three"])
    assert failed.value.retryable
    assert [body["inputText"] for body in fake_bedrock.requests] == ["one", "two"]


@pytest.mark.parametrize("model, body", [
    (TITAN, {"inputTextTokenCount": 1}),
    (TITAN, {"embedding": ["not", "numbers"], "inputTextTokenCount": 1}),
    (COHERE, {"id": "x", "embeddings": [], "texts": ["x"], "response_type": "embeddings_floats"}),
    (COHERE, "not json"),
])
def test_an_answer_not_in_the_models_format_is_a_bad_response(provider, fake_bedrock, model, body):
    fake_bedrock.push(Scripted(body=body))
    with pytest.raises(ProviderError) as failed:
        embed(provider, model, "x")
    assert failed.value.code == "provider_bad_response" and not failed.value.retryable


# ---- the model table, and a light import ------------------------------------------------------------

def test_the_embedding_models_and_their_prices_are_in_the_table():
    table = ModelTable(DEFAULT_MODELS)
    for name, provider_name, upstream, price in [
            ("text-embedding-3-small", "openai", "text-embedding-3-small", 0.02),
            ("text-embedding-3-large", "openai", "text-embedding-3-large", 0.13),
            ("text-embedding-ada-002", "openai", "text-embedding-ada-002", 0.10),
            ("titan-embed-text-v2", "bedrock", TITAN, 0.02),
            ("cohere-embed-english-v3", "bedrock", COHERE, 0.10),
            ("cohere-embed-multilingual-v3", "bedrock", COHERE_MULTILINGUAL, 0.10)]:
        route = table.resolve(name).routes[0]
        assert (route.provider, route.upstream, route.price) == (provider_name, upstream, Price(price, 0.0))
    assert Price(0.02, 0.0).cost(Usage(prompt_tokens=1_000_000)) == pytest.approx(0.02)


def test_importing_the_provider_loads_neither_boto3_nor_the_embeddings_module():
    probe = ("import sys, plugins.bedrock_provider; "
             "print(sorted({'boto3', 'botocore.client', 'plugins.bedrock_embeddings'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
