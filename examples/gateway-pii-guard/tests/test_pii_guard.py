"""gateway-pii-guard, tested the way docs/plugins.md tells a plugin author to."""
from __future__ import annotations

import json

import gateway_pii_guard
import pytest
from gateway_pii_guard.detect import luhn_valid, redact

from gateway.errors import ConfigError
from gateway.testing import FakeProvider, ProviderPlugin, chat, issue_key, make_app


@pytest.mark.parametrize("number, valid", [
    ("4111111111111111", True), ("5500005555555559", True), ("378282246310005", True),
    ("4111111111111112", False), ("1234567812345678", False),
])
def test_luhn(number, valid):
    assert luhn_valid(number) is valid


@pytest.mark.parametrize("text, expected", [
    ("mail jane.doe+x@mail.example.co.uk now", "mail [redacted email] now"),
    ("card 4111 1111 1111 1111.", "card [redacted card]."),
    ("card 4111-1111-1111-1111", "card [redacted card]"),
    ("call 555-123-4567 or (555) 123 4567", "call [redacted phone] or [redacted phone]"),
    ("london +44 20 7946 0958", "london [redacted phone]"),
    ("ids 123 456 789", "ids [redacted phone]"),
    ("order 1234567812345678 shipped 2024-01-15", "order 1234567812345678 shipped 2024-01-15"),
])
def test_redact(text, expected):
    assert redact(text)[0] == expected


def test_redact_counts_and_kinds():
    text = "a@b.io, 4111111111111111, 555-123-4567, c@d.io"
    assert redact(text)[1] == {"email": 2, "card": 1, "phone": 1}
    assert redact(text, ("email",))[0] == "[redacted email], 4111111111111111, 555-123-4567, [redacted email]"


@pytest.mark.parametrize("config", [{"deny": "salary"}, {"deny": [""]}, {"redact": ["ssn"]}, {"answers": "yes"}])
def test_bad_settings_stop_start_up_naming_the_setting(tmp_path, config):
    with pytest.raises(ConfigError, match=r"^plugin '.*': plugin_settings\.pii_guard\."):
        make_app(tmp_path, {"plugin_settings": {"pii_guard": config}}, plugins=(gateway_pii_guard,))


@pytest.fixture
def provider():
    return FakeProvider()


@pytest.fixture
def gateway_plugins(provider):
    return (gateway_pii_guard, ProviderPlugin(provider))


@pytest.fixture
def gateway_settings():
    return {"plugin_settings": {"pii_guard": {"deny": ["Project Falcon"]}}}


def test_the_provider_receives_the_redacted_prompt(gateway_client, api_key, provider):
    response = chat(gateway_client, api_key, "I am jo@example.com, card 4111 1111 1111 1111", model="fake-model")
    assert response.status_code == 200
    sent = provider.calls[0]
    assert sent.messages[-1]["content"] == "I am [redacted email], card [redacted card]"
    assert sent.metadata["pii_redacted"] == {"email": 1, "card": 1}


def test_text_parts_are_redacted_too(gateway_client, api_key, provider):
    content = [{"type": "text", "text": "phone 555-123-4567"}]
    assert chat(gateway_client, api_key, content, model="fake-model").status_code == 200
    assert provider.calls[0].messages[-1]["content"] == [{"type": "text", "text": "phone [redacted phone]"}]


@pytest.mark.parametrize("content", ["tell me about project   FALCON", "Project Falcon?"])
def test_a_denied_phrase_is_a_400_and_reaches_no_provider(gateway_client, api_key, provider, content):
    response = chat(gateway_client, api_key, content, model="fake-model")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "content_blocked"
    assert provider.calls == []


def test_a_phrase_inside_a_word_is_not_denied(gateway_client, api_key):
    assert chat(gateway_client, api_key, "project falconry").status_code == 200


def test_personal_data_in_an_answer_is_masked_before_the_caller_sees_it(gateway_client, api_key, provider):
    provider.outcomes.append("Write to jo@example.com or call 555-123-4567.")
    response = chat(gateway_client, api_key, "how do I reach support?", model="fake-model")
    assert response.get_json()["choices"][0]["message"]["content"] == \
        "Write to [redacted email] or call [redacted phone]."
    native = gateway_client.post("/api/v1/completions", headers={"X-API-Key": api_key}, json={
        "model": "fake-model", "messages": [{"role": "user", "content": "and the card?"}]})
    assert native.get_json()["pii_in_answer"] is None  # the fake's default answer holds none
    provider.outcomes.append("Card 4111 1111 1111 1111 on file.")
    native = gateway_client.post("/api/v1/completions", headers={"X-API-Key": api_key}, json={
        "model": "fake-model", "messages": [{"role": "user", "content": "and the card?"}]})
    assert native.get_json()["content"] == "Card [redacted card] on file."
    assert native.get_json()["pii_in_answer"] == {"card": 1}


def test_a_streamed_answer_is_reported_in_its_last_event(gateway_client, api_key, provider):
    provider.outcomes.append("mail jo@example.com")
    body = chat(gateway_client, api_key, "hi", model="fake-model", stream=True).get_data(as_text=True)
    events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["gateway"] == {"checks": {"pii_guard": "flagged"}, "pii_in_answer": {"email": 1}}


def test_answers_can_be_left_alone(tmp_path, provider):
    app = make_app(tmp_path, {"plugin_settings": {"pii_guard": {"answers": False}}},
                   plugins=(gateway_pii_guard, ProviderPlugin(provider)))
    provider.outcomes.append("mail jo@example.com")
    response = chat(app.test_client(), issue_key(app), "hi", model="fake-model")
    assert response.get_json()["choices"][0]["message"]["content"] == "mail jo@example.com"
