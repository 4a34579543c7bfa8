"""The provider: one OpenAI-compatible server, called through the official ``openai`` SDK.

The SDK takes most of a second to import, so it is imported on the first call,
not at start-up; one client per server is built then and reused. The SDK's own
retries are off: the gateway keeps the one retry loop and the fallbacks.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.errors import ProviderError, ProviderTimeout, UpstreamRejected
from gateway.types import ChatAnswer, ChatRequest, Chunk, Price, Usage

logger = logging.getLogger(__name__)

#: Local servers ignore the key, but the SDK insists on one.
NO_KEY = "not-needed"


@dataclass(eq=False)
class OpenAICompatibleServer:
    """A provider named ``name`` serving ``prices``' models from the server at ``base_url``."""

    name: str
    base_url: str
    prices: dict[str, Price]
    timeout: float
    api_key: str = field(default=NO_KEY, repr=False)
    _client: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def models(self) -> dict[str, Price]:
        """The configured models and their prices."""
        return self.prices

    def client(self):
        """The SDK client, built on the first call and reused."""
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key,
                                             max_retries=0, timeout=self.timeout)
        return self._client

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """One chat completion from the server, as a :class:`ChatAnswer`."""
        import openai

        try:
            response = self.client().chat.completions.create(
                model=completion.model, messages=completion.messages, **completion.parameters)
        except openai.APITimeoutError:
            raise ProviderTimeout(f"Provider '{self.name}' did not answer in time.") from None
        except openai.APIConnectionError:
            logger.warning("server unreachable", extra={"provider": self.name, "base_url": self.base_url})
            raise ProviderError(f"Provider '{self.name}' could not be reached: is the server running?",
                                retryable=True, code="provider_unreachable") from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        choice, usage = response.choices[0], response.usage
        return ChatAnswer(text=choice.message.content or "", model=response.model or completion.model,
                      finish_reason=choice.finish_reason or "stop",
                      usage=Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                                  completion_tokens=usage.completion_tokens if usage else 0))

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """Not offered yet: the gateway's streaming path arrives with its own issue."""
        raise ProviderError(f"Provider '{self.name}' does not stream yet.", code="stream_unsupported")

    def _status_error(self, exc) -> ProviderError:
        """The server answered with an error status: busy (retry) or a refusal (the caller's to fix)."""
        if exc.status_code == 429 or exc.status_code >= 500:
            return ProviderError(f"Provider '{self.name}' answered {exc.status_code}.", retryable=True)
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") or (body.get("error") or {}).get("message") or exc.message
        hint = " (for Ollama: `ollama pull <model>` first)" if exc.status_code == 404 else ""
        return UpstreamRejected(f"Provider '{self.name}' refused the request: {str(detail)[:300]}{hint}")
