"""The ``echo`` development provider: answers with the last user message, deterministically.

Token counts are whitespace-separated words, so tests and demos can predict them.
"""
from __future__ import annotations

from collections.abc import Iterator

from gateway import hookimpl
from gateway.types import ChatAnswer, ChatRequest, Chunk, Price, Usage, message_text

NAME = "echo"


class EchoProvider:
    """Serves model ``echo`` at no cost."""

    name = NAME

    def models(self) -> dict[str, Price]:
        """One free model, ``echo``."""
        return {"echo": Price(0.0, 0.0)}

    def _answer(self, completion: ChatRequest) -> tuple[str, Usage]:
        text = completion.last_user_text()
        prompt_tokens = sum(len(message_text(m).split()) for m in completion.messages)
        return text, Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """Echo the last user message (``n`` times when ``n`` is given)."""
        text, usage = self._answer(completion)
        copies = completion.parameters.get("n", 1)
        usage.completion_tokens *= copies
        return ChatAnswer(text=text, model=completion.model, usage=usage,
                      extra_choices=[ChatAnswer(text=text, model=completion.model) for _ in range(copies - 1)])

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """Echo the last user message word by word, usage on the last chunk."""
        text, usage = self._answer(completion)
        words = text.split(" ")
        for index, word in enumerate(words):
            yield Chunk(text=word if index == 0 else " " + word)
        yield Chunk(finish_reason="stop", usage=usage)


@hookimpl
def gateway_register_providers():
    """Register the echo provider."""
    return [EchoProvider()]
