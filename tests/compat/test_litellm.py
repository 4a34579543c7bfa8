"""litellm as a client of the gateway (``openai/<model>`` with ``api_base``): a two-turn conversation."""
from __future__ import annotations

import os

import pytest

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def litellm():
    """litellm, imported once, told to use its bundled model cost map (no fetch from the internet)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.telemetry = False
    return litellm


def test_two_turns_sending_back_the_first_answer_message(served, litellm):
    """The second turn sends back litellm's own Message of the first answer (fields it keeps too); both succeed."""
    options = {"model": f"openai/{MODEL}", "api_base": served.api, "api_key": served.key, "num_retries": 0,
               "timeout": 15}
    messages = [{"role": "user", "content": "hello there"}]
    first = litellm.completion(messages=messages, **options)
    assert first.choices[0].message.content == "upstream: hello there"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (19, 5)
    messages += [first.choices[0].message, {"role": "user", "content": "and again"}]
    second = litellm.completion(messages=messages, **options)
    assert second.choices[0].message.content == "upstream: and again"
    sent = served.upstream_chat_bodies()
    assert len(sent) == 2 and sent[0]["model"] == MODEL
    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "user"]
    echoed = sent[1]["messages"][1]
    assert echoed["content"] == "upstream: hello there"
    assert echoed.get("annotations") == []  # OpenAI's field, kept by litellm in the message it sends back
