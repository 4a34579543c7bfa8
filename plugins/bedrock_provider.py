"""AWS Bedrock through the Converse and ConverseStream APIs (boto3 ``bedrock-runtime``).

Every Converse model works (Anthropic, Amazon Nova/Titan, Meta Llama, Mistral,
Cohere), including cross-region inference profile ids (``us.anthropic...``);
which ones are offered, and their prices, is the model table's business.
Region, credentials and endpoint come from the standard AWS configuration
(environment, profile, role; ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` overrides the
endpoint), the region defaulting to the ``aws_region`` setting. boto3 loads on
first use; botocore's own retries are off (the gateway keeps the one retry loop).

Parameters: ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``,
``stop``, ``tools``, ``tool_choice`` are translated; ``user``, ``stream_options``,
``metadata`` and ``parallel_tool_calls`` have no Converse field and are not forwarded; any
other parameter (``seed``, penalties, ``logit_bias``, ``logprobs``, a JSON
``response_format``, ``n`` > 1) is refused with a 400 naming it, never dropped.

Embeddings (``embed``) go through InvokeModel in each model's own format: Titan Text
Embeddings v2 and Cohere Embed v3, translated in ``plugins/bedrock_embeddings.py``.

Settings (``plugin_settings.bedrock_provider``): ``enabled`` (default true).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from gateway import hookimpl
from gateway.errors import ProviderError, ProviderRateLimited, ProviderTimeout, UpstreamRejected, scrub
from gateway.schemas import TRANSLATED_REQUEST, load_checked
from gateway.types import ChatAnswer, ChatRequest, Chunk, EmbeddingAnswer, EmbeddingRequest, Price, Usage

NAME = "bedrock"

#: Converse stop reasons -> OpenAI finish reasons.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "content_filtered": "content_filter",
                  "guardrail_intervened": "content_filter"}

IGNORED = ("user", "stream_options", "parallel_tool_calls", "metadata")
TRANSLATED = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice")

#: Bedrock error codes the retry loop may retry.
RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
             "ModelNotReadyException", "ModelTimeoutException", "ModelStreamErrorException",
             "throttlingException", "serviceUnavailableException", "internalServerException",
             "modelStreamErrorException"}


# ---- OpenAI -> Converse ----------------------------------------------------------------------

def _text_blocks(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for part in content:
        if part.get("type") != "text":
            raise UpstreamRejected(f"Bedrock models through this gateway take text content only, "
                                   f"not '{part.get('type')}' parts.")
        if part.get("text"):  # Converse refuses empty text blocks; an empty part says nothing
            blocks.append({"text": part["text"]})
    return blocks


def _tool_use(call: dict) -> dict:
    function = call.get("function", {})
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        raise UpstreamRejected(f"Tool call {call.get('id')!r} has arguments that are not JSON.") from None
    return {"toolUse": {"toolUseId": call["id"], "name": function.get("name", ""), "input": arguments}}


def to_converse_messages(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """OpenAI messages -> (Converse ``system`` blocks, Converse ``messages``).

    System/developer messages become system blocks; tool results become user
    ``toolResult`` blocks; consecutive messages of one role merge (Converse wants
    user and assistant to alternate); empty text is left out (Converse refuses it).
    """
    system: list[dict] = []
    turns: list[dict] = []
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content")))
            continue
        if role == "tool":
            role, blocks = "user", [{"toolResult": {"toolUseId": message.get("tool_call_id", ""),
                                                     "content": _text_blocks(message.get("content"))
                                                     or [{"text": ""}]}}]
        else:
            blocks = _text_blocks(message.get("content"))
            blocks += [_tool_use(call) for call in message.get("tool_calls") or ()]
        if not blocks:  # an empty message (content ""): Converse refuses empty content
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tool_spec(function: dict) -> dict:
    spec = {"name": function["name"],
            "inputSchema": {"json": function.get("parameters", {"type": "object", "properties": {}})}}
    if function.get("description"):  # Converse refuses an empty description; it is optional
        spec["description"] = function["description"]
    return spec


def _tool_config(tools: list[dict], choice: Any) -> dict | None:
    if not tools or choice == "none":
        return None
    specs = [{"toolSpec": _tool_spec(tool["function"])} for tool in tools]
    config: dict = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": choice.get("function", {}).get("name", "")}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def to_converse_request(completion: ChatRequest) -> dict:
    """The ``converse``/``converse_stream`` keyword arguments for ``completion``.

    The parameters it translates are checked first (a 400 naming a malformed one);
    fields of a message Converse has no place for are dropped, null ones are absent.
    """
    parameters = load_checked(TRANSLATED_REQUEST, {**completion.parameters, "messages": completion.messages})
    messages = parameters.pop("messages")
    refused = sorted(name for name in parameters if name not in TRANSLATED + IGNORED and not (
        (name == "n" and parameters[name] == 1)
        or (name == "response_format" and parameters[name].get("type") == "text")))
    if refused:
        raise UpstreamRejected(f"Bedrock models do not support {', '.join(refused)}; "
                               "remove it or choose another model.")
    system, messages = to_converse_messages(messages)
    if not messages:
        raise UpstreamRejected("Bedrock models need at least one user or assistant message, "
                               "not only system messages.")
    request: dict = {"modelId": completion.model, "messages": messages}
    if system:
        request["system"] = system
    inference: dict = {}
    max_tokens = parameters.get("max_completion_tokens", parameters.get("max_tokens"))
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if "temperature" in parameters:
        inference["temperature"] = parameters["temperature"]
    if "top_p" in parameters:
        inference["topP"] = parameters["top_p"]
    if "stop" in parameters:
        stop = parameters["stop"]
        sequences = [sequence for sequence in ([stop] if isinstance(stop, str) else stop) if sequence]
        if sequences:  # an empty stop sequence stops nothing, and Converse refuses it
            inference["stopSequences"] = sequences
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(parameters.get("tools") or [], parameters.get("tool_choice", "auto"))
    if tool_config:
        request["toolConfig"] = tool_config
    return request


# ---- Converse -> OpenAI ----------------------------------------------------------------------

def usage_from(usage: dict | None) -> Usage:
    """Converse usage -> :class:`Usage` (prompt tokens include cache reads and writes)."""
    usage = usage or {}
    cached = usage.get("cacheReadInputTokens", 0)
    prompt = usage.get("inputTokens", 0) + cached + usage.get("cacheWriteInputTokens", 0)
    return Usage(prompt_tokens=prompt, completion_tokens=usage.get("outputTokens", 0), cached_tokens=cached)


def from_converse_response(response: dict, model: str) -> ChatAnswer:
    """A Converse response -> :class:`ChatAnswer`: text, tool calls, finish reason, usage.

    :raises KeyError: the response has no message (a body that was not Converse JSON).
    """
    content = response["output"]["message"]["content"]
    text = "".join(block["text"] for block in content if "text" in block)
    tool_calls = [{"id": block["toolUse"]["toolUseId"], "type": "function",
                   "function": {"name": block["toolUse"]["name"],
                                "arguments": json.dumps(block["toolUse"].get("input", {}))}}
                  for block in content if "toolUse" in block]
    return ChatAnswer(text=text, model=model, tool_calls=tool_calls or None,
                  finish_reason=FINISH_REASONS.get(response.get("stopReason"), "stop"),
                  usage=usage_from(response.get("usage")))


def chunks_from_events(events) -> Iterator[Chunk]:
    """ConverseStream events -> :class:`Chunk` s (tool calls indexed as OpenAI does)."""
    tool_index: dict[int, int] = {}
    for event in events:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = start.get("start", {}).get("toolUse")
            if tool:
                index = tool_index.setdefault(start.get("contentBlockIndex", 0), len(tool_index))
                yield Chunk(tool_calls=[{"index": index, "id": tool["toolUseId"], "type": "function",
                                         "function": {"name": tool["name"], "arguments": ""}}])
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta", {})
            if "text" in delta:
                yield Chunk(text=delta["text"])
            elif "toolUse" in delta:
                index = tool_index.setdefault(block.get("contentBlockIndex", 0), len(tool_index))
                yield Chunk(tool_calls=[{"index": index,
                                         "function": {"arguments": delta["toolUse"].get("input", "")}}])
        elif "messageStop" in event:
            yield Chunk(finish_reason=FINISH_REASONS.get(event["messageStop"].get("stopReason"), "stop"))
        elif "metadata" in event:
            yield Chunk(usage=usage_from(event["metadata"].get("usage")))


# ---- the provider ------------------------------------------------------------------------------

#: Variables that name credentials (or where to get them) without looking them up: on Lambda, ECS,
#: EKS and with a profile the answer needs no botocore import.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def aws_credentials_found() -> bool:
    """Whether boto3 would find AWS credentials: a variable that names them, else botocore's own chain
    (config files, then an EC2 instance role: one metadata request, bounded by botocore's 1 s timeout)."""
    import os

    if any(os.environ.get(name) for name in CREDENTIAL_VARIABLES):
        return True
    import botocore.session

    try:
        return botocore.session.Session().get_credentials() is not None
    except Exception:  # a malformed config file: boto3 could not sign either
        return False


class BedrockProvider:
    """Bedrock Runtime, one boto3 client per app."""

    name = NAME

    def __init__(self, gateway):
        self._gateway = gateway
        self._client = None
        self._lock = threading.Lock()
        self._has_credentials: bool | None = None

    def models(self) -> dict[str, Price]:
        """The model ids the model table routes to Bedrock, with prices."""
        return self._gateway.models.served_by(self.name)

    def missing(self) -> str | None:
        """What to set when no AWS credentials can be found (looked up once); None when they can."""
        if self._has_credentials is None:
            self._has_credentials = aws_credentials_found()
        return None if self._has_credentials else ("AWS credentials (AWS_ACCESS_KEY_ID and "
                                                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role)")

    def client(self):
        """The ``bedrock-runtime`` client, built on first use and reused."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    settings = self._gateway.settings
                    session = boto3.session.Session()
                    self._client = session.client(
                        "bedrock-runtime", region_name=session.region_name or settings.aws_region,
                        config=Config(connect_timeout=settings.provider_connect_timeout,
                                      read_timeout=settings.provider_timeout,
                                      retries={"total_max_attempts": 1}))
        return self._client

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """One Converse call."""
        request = to_converse_request(completion)
        try:
            response = self.client().converse(**request)
            return from_converse_response(response, completion.model)
        except Exception as exc:
            raise translate_error(exc) from None

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """One ConverseStream call; the metadata event carries the usage."""
        request = to_converse_request(completion)
        events = None
        try:
            events = self.client().converse_stream(**request)["stream"]
            yield from chunks_from_events(events)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise translate_error(exc) from None
        finally:
            if events is not None:
                events.close()

    def embed(self, request: EmbeddingRequest) -> EmbeddingAnswer:
        """Embeddings through InvokeModel (``plugins/bedrock_embeddings.py``, imported on first use):
        a request the model cannot honour is refused before any call."""
        from plugins import bedrock_embeddings

        calls = bedrock_embeddings.prepare(request)
        try:
            return calls.run(self.client())
        except Exception as exc:
            raise translate_error(exc) from None


def translate_error(exc: Exception) -> ProviderError:
    """A boto/botocore exception -> the gateway's provider error (no endpoint or credentials in it)."""
    from botocore import exceptions as aws
    from botocore.parsers import ResponseParserError
    from urllib3.exceptions import ReadTimeoutError  # raised as is while reading an event stream

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, (aws.ReadTimeoutError, aws.ConnectTimeoutError, ReadTimeoutError)):
        return ProviderTimeout(f"Provider '{NAME}' did not answer in time.")
    if isinstance(exc, aws.NoCredentialsError | aws.NoRegionError):
        return ProviderError(f"Provider '{NAME}' has no AWS credentials or region: set them the standard "
                             "AWS way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE or a role, "
                             "and AWS_REGION).", code="provider_not_configured", status=503)
    if isinstance(exc, aws.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in RETRYABLE or status == 429 or status >= 500:
            retry_after = headers.get("retry-after")
            seconds = float(retry_after) if (retry_after or "").isdigit() else None
            if status == 429 or "hrottl" in code:
                return ProviderRateLimited(f"Provider '{NAME}' is throttling requests ({code or status}).",
                                           retry_after=seconds)
            return ProviderError(f"Provider '{NAME}' answered {code or status}.", retryable=True,
                                 retry_after=seconds, code="provider_error")
        if code in ("AccessDeniedException", "UnrecognizedClientException") or status in (401, 403):
            return ProviderError(f"Provider '{NAME}' refused the gateway's AWS credentials ({code}).",
                                 code="provider_auth_failed")
        return UpstreamRejected(f"Provider '{NAME}' rejected the request: {scrub(str(error.get('Message')))[:500]}")
    if isinstance(exc, aws.EndpointConnectionError | aws.ConnectionClosedError):
        return ProviderError(f"Provider '{NAME}' could not be reached.", retryable=True,
                             code="provider_unreachable")
    if isinstance(exc, ResponseParserError | ValueError | KeyError | TypeError):
        return ProviderError(f"Provider '{NAME}' returned an answer the gateway could not read.",
                             code="provider_bad_response")
    # urllib3/botocore errors raised while reading an event stream (e.g. a reset connection).
    return ProviderError(f"Provider '{NAME}' dropped the connection.", retryable=True,
                         code="provider_unreachable")


@hookimpl
def gateway_register_providers(gateway):
    """Register the Bedrock provider unless ``plugin_settings.bedrock_provider.enabled`` is false;
    an endpoint override the settings do not allow stops start-up (``gateway/upstreams.py``)."""
    import os

    from gateway.upstreams import check_upstream_url

    if gateway.settings.plugin_config("bedrock_provider").get("enabled", True) is False:
        return None
    for variable in ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"):
        if os.environ.get(variable):
            check_upstream_url(os.environ[variable], gateway.settings, f"bedrock_provider {variable}")
    return [BedrockProvider(gateway)]
