"""Embeddings on Bedrock through InvokeModel, each model in its own wire format, answered in OpenAI's shape.

- Amazon Titan Text Embeddings v2 (``amazon.titan-embed-text-v2``) embeds one ``inputText`` per call:
  a list input is one call per string, in order, at most :data:`TITAN_MAX_INPUTS` of them (the calls
  are sequential and must fit one request's time). OpenAI's ``dimensions`` becomes ``dimensions``
  (256, 512 or 1024); ``normalize`` is always true, as OpenAI's vectors are unit length. Usage is
  the sum of ``inputTextTokenCount``.
- Cohere Embed v3 (``cohere.embed-english-v3``, ``cohere.embed-multilingual-v3``) embeds up to 96
  ``texts`` in one call, ``input_type`` ``search_document`` unless the request names another,
  ``truncate`` ``NONE`` (too long an input is an error, as at OpenAI). Its vectors have 1024
  dimensions. Usage comes from the ``X-Amzn-Bedrock-Input-Token-Count`` header (0 without it).

``encoding_format: "base64"`` answers each vector as little-endian float32 bytes in base64, as
OpenAI does (the ``openai`` SDK asks for it by default). ``user`` has no Bedrock field and is not
forwarded. Anything a model cannot honour (token-id input, other dimensions, unknown parameters,
too many inputs) is refused with a 400 naming the field before any call is made.

Only the standard library is imported; the caller passes the boto3 client and translates its errors.
"""
from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest
from gateway.types import EmbeddingAnswer, EmbeddingRequest, Usage

#: Strings one Titan request may embed: one sequential InvokeModel call each.
TITAN_MAX_INPUTS = 16
TITAN_DIMENSIONS = (256, 512, 1024)
#: Cohere Embed v3's own limit of texts per call, and its one vector size.
COHERE_MAX_TEXTS = 96
COHERE_DIMENSIONS = 1024
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
ENCODING_FORMATS = ("float", "base64")
IGNORED = ("user",)
TOKEN_COUNT_HEADER = "x-amzn-bedrock-input-token-count"  # botocore lower-cases header names


def _refuse(param: str, message: str) -> InvalidRequest:
    """A 400 naming ``param``, the request field at fault (set as an attribute: the error
    envelope shows it where it carries a ``param``)."""
    error = InvalidRequest(message)
    error.param = param
    return error


def _texts(value: Any) -> list[str]:
    """``input`` as a list of non-empty strings; token ids and anything else are refused."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise _refuse("input", "'input' must be a string or a non-empty list of strings.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _refuse("input", f"'input' holds token ids or other non-text values (input[{index}]); "
                          "Bedrock embedding models take text only: send the strings.")
        if not text:
            raise _refuse("input", f"'input' may not hold an empty string (input[{index}]).")
    return texts


def _check_parameters(parameters: dict, allowed: tuple[str, ...], model: str) -> None:
    refused = sorted(name for name in parameters if name not in allowed + IGNORED)
    if refused:
        raise _refuse(refused[0], f"Model '{model}' does not support {', '.join(repr(n) for n in refused)}; "
                      "remove it or choose another model.")


def _dimensions(parameters: dict, accepted: tuple[int, ...], model: str) -> int | None:
    value = parameters.get("dimensions")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value not in accepted:
        raise _refuse("dimensions", f"Model '{model}' does not support 'dimensions' {value!r}; it supports "
                      f"{', '.join(map(str, accepted))}.")
    return value


# ---- the two wire formats ----------------------------------------------------------------------

def titan_bodies(request: EmbeddingRequest) -> list[dict]:
    """The InvokeModel bodies for a Titan v2 request: one per input string, in order."""
    _check_parameters(request.parameters, ("dimensions", "encoding_format"), request.model)
    texts = _texts(request.input)
    if len(texts) > TITAN_MAX_INPUTS:
        raise _refuse("input", f"'input' holds {len(texts)} strings; model '{request.model}' embeds one "
                      f"string per Bedrock call, and the gateway makes at most {TITAN_MAX_INPUTS} per request: "
                      "send them in smaller batches.")
    dimensions = _dimensions(request.parameters, TITAN_DIMENSIONS, request.model)
    extra = {} if dimensions is None else {"dimensions": dimensions}
    return [{"inputText": text, **extra, "normalize": True} for text in texts]


def cohere_body(request: EmbeddingRequest) -> dict:
    """The InvokeModel body for a Cohere Embed v3 request: every text in one call."""
    _check_parameters(request.parameters, ("dimensions", "encoding_format", "input_type"), request.model)
    texts = _texts(request.input)
    if len(texts) > COHERE_MAX_TEXTS:
        raise _refuse("input", f"'input' holds {len(texts)} strings; model '{request.model}' embeds at most "
                      f"{COHERE_MAX_TEXTS} per request.")
    _dimensions(request.parameters, (COHERE_DIMENSIONS,), request.model)
    input_type = request.parameters.get("input_type") or "search_document"
    if input_type not in COHERE_INPUT_TYPES:
        raise _refuse("input_type", f"'input_type' must be one of {', '.join(COHERE_INPUT_TYPES)}, "
                      f"not {input_type!r}.")
    return {"texts": texts, "input_type": input_type, "truncate": "NONE"}


def _vector(value: Any) -> list[float]:
    """A vector as Bedrock sent it; :class:`ValueError` for anything else (a bad answer)."""
    if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                              for x in value):
        raise ValueError("not an embedding vector")
    return value


def titan_vector(payload: dict) -> tuple[list[float], int]:
    """A Titan v2 answer -> (its float vector, its input token count)."""
    vector = payload["embedding"] if "embedding" in payload else payload["embeddingsByType"]["float"]
    return _vector(vector), int(payload.get("inputTextTokenCount", 0))


def cohere_vectors(payload: dict, count: int) -> list[list[float]]:
    """A Cohere Embed v3 answer -> its float vectors (``embeddings_floats``, or ``embeddings_by_type``)."""
    embeddings = payload["embeddings"]
    if isinstance(embeddings, dict):
        embeddings = embeddings["float"]
    if not isinstance(embeddings, list) or len(embeddings) != count:
        raise ValueError("wrong number of embeddings")
    return [_vector(vector) for vector in embeddings]


# ---- the OpenAI answer --------------------------------------------------------------------------

def encode_base64(vector: list[float]) -> str:
    """``vector`` as little-endian float32 bytes, in base64 (OpenAI's ``encoding_format: "base64"``)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def openai_answer(vectors: list[list[float]], model: str, tokens: int, encoding_format: str) -> bytes:
    """OpenAI's embeddings list, serialized once."""
    as_base64 = encoding_format == "base64"
    return json.dumps({"object": "list",
                       "data": [{"object": "embedding", "index": index,
                                 "embedding": encode_base64(vector) if as_base64 else vector}
                                for index, vector in enumerate(vectors)],
                       "model": model,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                      separators=(",", ":")).encode()


# ---- the calls ----------------------------------------------------------------------------------

def _invoke(client, model: str, body: dict) -> tuple[dict, dict]:
    response = client.invoke_model(modelId=model, body=json.dumps(body).encode(),
                                   contentType="application/json", accept="application/json")
    payload = json.loads(response["body"].read())
    if not isinstance(payload, dict):
        raise ValueError("answer is not a JSON object")
    return payload, response.get("ResponseMetadata", {}).get("HTTPHeaders", {})


@dataclass(eq=False)
class EmbeddingCalls:
    """A checked request and the InvokeModel bodies it takes; :meth:`run` makes the calls."""

    request: EmbeddingRequest
    family: str
    bodies: list[dict]
    encoding_format: str

    def run(self, client) -> EmbeddingAnswer:
        """Call Bedrock and answer in OpenAI's shape. Raises boto3/botocore errors, and
        :class:`ValueError`/:class:`KeyError` for an answer that is not the model's format."""
        model = self.request.model
        if self.family == "titan":
            vectors, tokens = [], 0
            for body in self.bodies:
                vector, count = titan_vector(_invoke(client, model, body)[0])
                vectors.append(vector)
                tokens += count
        else:
            payload, headers = _invoke(client, model, self.bodies[0])
            vectors = cohere_vectors(payload, len(self.bodies[0]["texts"]))
            count = str(headers.get(TOKEN_COUNT_HEADER, ""))
            tokens = int(count) if count.isdigit() else 0
        return EmbeddingAnswer(body=openai_answer(vectors, model, tokens, self.encoding_format),
                               usage=Usage(prompt_tokens=tokens), model=model)


def family(model: str) -> str | None:
    """``titan`` or ``cohere`` for the embedding models this module speaks, else None
    (matched inside the id, so inference-profile prefixes and ARNs work too)."""
    if "amazon.titan-embed-text-v2" in model:
        return "titan"
    if "cohere.embed-english-v3" in model or "cohere.embed-multilingual-v3" in model:
        return "cohere"
    return None


def prepare(request: EmbeddingRequest) -> EmbeddingCalls:
    """Check ``request`` against its model and build its calls; :class:`InvalidRequest` (400)
    naming the field the model cannot honour."""
    kind = family(request.model)
    if kind is None:
        raise _refuse("model", f"Model '{request.model}' is not an embedding model this gateway can call on "
                      "Bedrock (Titan Text Embeddings v2, Cohere Embed v3).")
    encoding_format = request.parameters.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise _refuse("encoding_format", f"'encoding_format' must be 'float' or 'base64', not {encoding_format!r}.")
    bodies = titan_bodies(request) if kind == "titan" else [cohere_body(request)]
    return EmbeddingCalls(request, kind, bodies, encoding_format)
