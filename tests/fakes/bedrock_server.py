"""A local HTTP server that speaks Bedrock Runtime's Converse, ConverseStream and InvokeModel.

boto3 reaches it through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``. ``POST
/model/<id>/converse`` answers Converse JSON; ``/converse-stream`` answers the
binary AWS event-stream encoding (``application/vnd.amazon.eventstream``). With
nothing queued it answers ``"bedrock: <last user text>"``. Stream events are
``(event type, payload)`` pairs; an event type ending in ``Exception`` is sent as
an exception message (how Bedrock reports a failure mid-stream).

``/model/<id>/invoke`` answers the embedding models in their own formats: Titan Text
Embeddings v2 (``embedding``, ``embeddingsByType``, ``inputTextTokenCount``) and Cohere
Embed v3 (``embeddings_floats``, tokens in the ``X-Amzn-Bedrock-Input-Token-Count``
header), with vectors derived from each text (:func:`embedding_vector`) and one token per
word (:func:`token_count`); another model is a ``ValidationException``.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from urllib.parse import unquote

from tests.fakes.upstream import FakeUpstream, Scripted

__all__ = ["FakeBedrock", "Scripted", "cohere_embed_answer", "converse_answer", "converse_events",
           "embedding_vector", "encode_message", "error_step", "titan_embed_answer", "token_count"]


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (struct.pack("!B", len(raw_name)) + raw_name + b"\x07"  # type 7: string
            + struct.pack("!H", len(raw_value)) + raw_value)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32), headers,
    payload, message CRC32."""
    encoded_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", zlib.crc32(message))


def converse_answer(text: str, input_tokens: int = 11, output_tokens: int = 4,
                    stop_reason: str = "end_turn", content: list | None = None) -> dict:
    """A Converse response body."""
    return {"output": {"message": {"role": "assistant", "content": content or [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                      "totalTokens": input_tokens + output_tokens},
            "metrics": {"latencyMs": 12}}


def converse_events(text: str, input_tokens: int = 11, output_tokens: int = 4,
                    stop_reason: str = "end_turn") -> list[tuple[str, dict]]:
    """``text`` as ConverseStream events, word by word, ending with the metadata (usage) event."""
    words = text.split(" ")
    return [("messageStart", {"role": "assistant"}),
            *[("contentBlockDelta", {"contentBlockIndex": 0,
                                     "delta": {"text": word if i == 0 else " " + word}})
              for i, word in enumerate(words)],
            ("contentBlockStop", {"contentBlockIndex": 0}),
            ("messageStop", {"stopReason": stop_reason}),
            ("metadata", {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                    "totalTokens": input_tokens + output_tokens},
                          "metrics": {"latencyMs": 12}})]


def error_step(status: int, error_type: str, message: str = "failed", **options) -> Scripted:
    """A Bedrock error answer (``x-amzn-ErrorType`` names the exception, as AWS does)."""
    headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/",
               **options.pop("headers", {})}
    return Scripted(status=status, body={"message": message}, headers=headers, **options)


def embedding_vector(text: str, dimensions: int = 1024) -> list[float]:
    """A deterministic vector for ``text``: multiples of 1/128 in [-1, 1), exact in float32."""
    raw = b"".join(hashlib.sha256(f"{counter}:{text}".encode()).digest()
                   for counter in range((dimensions + 31) // 32))
    return [(byte - 128) / 128 for byte in raw[:dimensions]]


def token_count(text: str) -> int:
    """The fake's tokenizer: one token per word."""
    return len(text.split())


def titan_embed_answer(body: dict) -> dict:
    """Titan Text Embeddings v2's answer to an InvokeModel ``body`` (``inputText``, ``dimensions``)."""
    vector = embedding_vector(body["inputText"], body.get("dimensions", 1024))
    return {"embedding": vector, "embeddingsByType": {"float": vector},
            "inputTextTokenCount": token_count(body["inputText"])}


def cohere_embed_answer(body: dict) -> dict:
    """Cohere Embed v3's answer to an InvokeModel ``body`` (``texts``; no ``embedding_types``)."""
    texts = body["texts"]
    return {"id": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:36],
            "embeddings": [embedding_vector(text) for text in texts], "texts": texts,
            "response_type": "embeddings_floats"}


class FakeBedrock(FakeUpstream):
    """Bedrock Runtime on 127.0.0.1; ``models`` lists the model ids requests named."""

    stream_content_type = "application/vnd.amazon.eventstream"

    @property
    def models(self) -> list[str]:
        """The model id of each request, decoded from its path."""
        return [unquote(path.split("/")[2]) for path in self.paths]

    def default_step(self, path: str, body: dict) -> Scripted:
        """``bedrock: <last user text>``, as Converse JSON or as a ConverseStream; an embedding
        model's own answer to InvokeModel."""
        if path.endswith("/invoke"):
            return self.invoke_step(unquote(path.split("/")[2]), body)
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        texts = [block["text"] for block in last.get("content", []) if "text" in block]
        text = "bedrock: " + " ".join(texts)
        if path.endswith("/converse-stream"):
            return Scripted(events=converse_events(text))
        return Scripted(body=converse_answer(text))

    @staticmethod
    def invoke_step(model: str, body: dict) -> Scripted:
        """InvokeModel for the embedding models (Bedrock sends the Cohere token count as a header)."""
        if model.startswith("amazon.titan-embed-text-v2"):
            answer = titan_embed_answer(body)
            return Scripted(body=answer, headers={
                "X-Amzn-Bedrock-Input-Token-Count": str(answer["inputTextTokenCount"])})
        if model.startswith(("cohere.embed-english-v3", "cohere.embed-multilingual-v3")):
            tokens = sum(token_count(text) for text in body["texts"])
            return Scripted(body=cohere_embed_answer(body),
                            headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})
        return error_step(400, "ValidationException", f"The fake does not invoke {model}.")

    def encode_event(self, event) -> bytes:
        """An event (or exception) message; raw bytes are sent as they are (a malformed frame)."""
        if isinstance(event, bytes):
            return event
        kind, payload = event
        if kind.endswith("Exception"):
            headers = {":message-type": "exception", ":exception-type": kind,
                       ":content-type": "application/json"}
        else:
            headers = {":message-type": "event", ":event-type": kind, ":content-type": "application/json"}
        return encode_message(headers, json.dumps(payload).encode())
