"""The answer-check hook (``gateway_check_response``): every chat completion answer passes the checks
before the caller gets it — annotated, replaced or refused — streamed or not, cached or not, from a
translated provider or an OpenAI-compatible upstream's own bytes; each outcome is in the request log."""
from __future__ import annotations

import json

import openai
import pytest
from marshmallow import fields as f

from gateway import hookimpl
from gateway.testing import chat, issue_key, make_app, serve
from gateway.types import Declaration

HEADER = "X-Shouting"


class ShoutingCheck:
    """Flags answers in capitals; in ``mode`` "replace" lowers them, in "refuse" refuses them."""

    def __init__(self, mode: str = "report"):
        self.mode = mode
        self.seen: list = []

    @hookimpl
    def gateway_declare(self):
        return Declaration(answer_checks={"shouting": "ShoutingAnswers"},
                           answer_fields={"shouting": f.Dict(allow_none=True)},
                           response_headers={HEADER: "How many words of the answer shout."})

    @hookimpl
    def gateway_check_response(self, completion, answer, caller):
        self.seen.append((answer.texts, answer.streamed, answer.provider, answer.model, caller.user_id,
                          completion.model))
        loud = [word for word in answer.text.split() if len(word) > 1 and word.isupper()]
        if not loud:
            answer.report("shouting", "passed")
        elif self.mode == "replace" and not answer.streamed:
            for index, text in enumerate(answer.texts):
                answer.replace("shouting", text.lower(), choice=index)
        elif self.mode == "refuse":
            answer.refuse("shouting", f"The answer shouts {len(loud)} words.", "answer_shouts",
                          fields={"shouting": {"words": loud}}, headers={HEADER: str(len(loud))})
        else:
            answer.report("shouting", "flagged", fields={"shouting": {"words": loud}}, headers={HEADER: str(len(loud))})


def _app(tmp_path, check, **config):
    app = make_app(tmp_path, config, plugins=(check,))
    return app, issue_key(app)


def _records(app):
    return app.extensions["gateway"].store.records_for_user("alice")


def _events(response) -> list:
    body = response.get_data(as_text=True)
    return [line[len("data: "):] for line in body.split("\n") if line.startswith("data: ")]


def test_a_passed_answer_is_unchanged_and_its_outcome_recorded(tmp_path):
    check = ShoutingCheck()
    app, key = _app(tmp_path, check)
    response = chat(app.test_client(), key, "all quiet here")
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "all quiet here"
    assert HEADER not in response.headers
    assert check.seen == [(["all quiet here"], False, "echo", "echo", "alice", "echo")]
    assert _records(app)[0].checks == {"shouting": "passed"}


def test_a_flagged_answer_carries_the_header_and_the_native_field(tmp_path):
    app, key = _app(tmp_path, ShoutingCheck())
    client = app.test_client()
    response = chat(client, key, "this is VERY LOUD")
    assert response.status_code == 200 and response.headers[HEADER] == "2"
    assert response.get_json()["choices"][0]["message"]["content"] == "this is VERY LOUD"
    native = client.post("/api/v1/completions", headers={"X-API-Key": key},
                         json={"model": "echo", "messages": [{"role": "user", "content": "so LOUD"}]})
    assert native.get_json()["shouting"] == {"words": ["LOUD"]} and native.headers[HEADER] == "1"
    assert [r.checks for r in _records(app)] == [{"shouting": "flagged"}] * 2


def test_a_replaced_answer_reaches_the_caller_and_the_log(tmp_path):
    app, key = _app(tmp_path, ShoutingCheck("replace"), request_log_content=True)
    response = chat(app.test_client(), key, "STOP SHOUTING", n=2)
    assert [c["message"]["content"] for c in response.get_json()["choices"]] == ["stop shouting"] * 2
    record = _records(app)[0]
    assert record.checks == {"shouting": "replaced"} and record.completion_text == "stop shouting"


def test_a_refused_answer_is_a_502_in_the_envelope_with_its_headers_and_recorded(tmp_path):
    app, key = _app(tmp_path, ShoutingCheck("refuse"))
    response = chat(app.test_client(), key, "NO WAY")
    assert response.status_code == 502 and response.headers[HEADER] == "2"
    assert response.get_json() == {"error": {"message": "The answer shouts 2 words.", "type": "answer_refused",
                                             "param": None, "code": "answer_shouts"}}
    record = _records(app)[0]
    assert (record.status, record.error_code, record.checks) == (502, "answer_shouts", {"shouting": "blocked"})
    assert record.completion_tokens == 2  # the answer came and is paid for, though refused


def test_a_cached_answer_is_checked_again(tmp_path):
    check = ShoutingCheck()
    app, key = _app(tmp_path, check)
    client = app.test_client()
    first, second = (chat(client, key, "CACHED answer", temperature=0) for _ in range(2))
    assert (first.headers.get("X-Cache"), second.headers.get("X-Cache")) == ("MISS", "HIT")
    assert second.headers[HEADER] == "1" and len(check.seen) == 2
    assert [r.checks for r in _records(app)] == [{"shouting": "flagged"}] * 2


def test_a_stream_ends_with_the_verdict_before_done(tmp_path):
    check = ShoutingCheck()
    app, key = _app(tmp_path, check)
    response = chat(app.test_client(), key, "a LOUD stream", stream=True)
    events = _events(response)
    assert HEADER not in response.headers  # sent before the stream ended: the final event says it
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"] == [] and final["object"] == "chat.completion.chunk"
    assert final["gateway"] == {"checks": {"shouting": "flagged"}, "shouting": {"words": ["LOUD"]}}
    assert check.seen[0][:2] == (["a LOUD stream"], True)
    assert _records(app)[0].checks == {"shouting": "flagged"}


def test_a_stream_all_checks_passed_quietly_ends_as_openai_ends_it(tmp_path):
    app, key = _app(tmp_path, ShoutingCheck())
    events = _events(chat(app.test_client(), key, "a quiet stream", stream=True,
                          stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]" and "usage" in json.loads(events[-2])  # the usage chunk stays last
    assert all("gateway" not in json.loads(event) for event in events[:-1])
    assert _records(app)[0].checks == {"shouting": "passed"}


def test_a_refused_stream_ends_with_the_verdict_then_the_error(tmp_path):
    app, key = _app(tmp_path, ShoutingCheck("refuse"))
    events = _events(chat(app.test_client(), key, "a LOUD stream", stream=True))
    assert "[DONE]" not in events
    assert json.loads(events[-2])["gateway"]["checks"] == {"shouting": "blocked"}
    assert json.loads(events[-1])["error"]["code"] == "answer_shouts"
    record = _records(app)[0]
    assert (record.status, record.error_code, record.streamed) == (502, "answer_shouts", True)


def test_a_stream_cannot_be_replaced_so_a_check_that_tries_fails_it_visibly(tmp_path):
    class Replacer:
        @hookimpl
        def gateway_check_response(self, answer):
            answer.replace("replacer", "something else")

    app, key = _app(tmp_path, Replacer())
    events = _events(chat(app.test_client(), key, "streamed text", stream=True))
    assert json.loads(events[-1])["error"]["code"] == "answer_check_failed"
    assert _records(app)[0].error_code == "answer_check_failed"


def test_a_failing_check_fails_the_answer_unless_its_plugin_is_optional(tmp_path):
    class Broken:
        @hookimpl
        def gateway_check_response(self, answer):
            raise RuntimeError("broken check")

    app, key = _app(tmp_path, Broken())
    assert chat(app.test_client(), key, "hi").status_code == 500

    class Optional(Broken):
        gateway_optional = True

    app, key = _app(tmp_path / "optional", Optional())
    assert chat(app.test_client(), key, "hi").status_code == 200


def test_without_checks_nothing_changes(tmp_path):
    app = make_app(tmp_path)
    events = _events(chat(app.test_client(), issue_key(app), "plain", stream=True))
    assert events[-1] == "[DONE]" and all("gateway" not in json.loads(e) for e in events[:-1])
    assert _records(app)[0].checks == {}


@pytest.fixture
def upstream_app(tmp_path, fake_openai):
    """An app routing OpenAI models to the local OpenAI fake, with the shouting check replacing."""
    check = ShoutingCheck("replace")
    app = make_app(tmp_path, {"plugin_settings": {"openai_provider": {
        "api_key": "sk-test-upstream-secret-0123456789", "base_url": fake_openai.url}}}, plugins=(check,))
    return app, issue_key(app), fake_openai


def test_an_upstream_body_is_rewritten_only_where_replaced(upstream_app):
    from tests.fakes.openai_server import Scripted, openai_completion

    app, key, upstream = upstream_app
    sent = openai_completion("gpt-4o-mini", "HELLO from upstream", n=1)
    sent["system_fingerprint"] = "fp_kept"
    upstream.push(Scripted(body=sent))
    answer = chat(app.test_client(), key, "hi", model="gpt-4o-mini").get_json()
    assert answer["choices"][0]["message"]["content"] == "hello from upstream"
    assert answer["system_fingerprint"] == "fp_kept" and answer["id"] == sent["id"]


def test_the_openai_sdk_reads_the_verdict_of_a_stream_from_an_upstream(upstream_app):
    app, key, upstream = upstream_app
    with serve(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "SHOUT back"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    verdict = chunks[-1].model_extra["gateway"]
    assert verdict["checks"] == {"shouting": "flagged"} and verdict["shouting"]["words"]
    assert set(verdict["shouting"]["words"]) <= set(text.split())


def test_the_openai_sdk_stream_helper_accumulates_past_the_verdict(upstream_app):
    app, key, _upstream = upstream_app
    with serve(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        with client.chat.completions.stream(model="gpt-4o-mini",
                                            messages=[{"role": "user", "content": "SHOUT back"}]) as stream:
            final = stream.get_final_completion()
    assert "SHOUT" in final.choices[0].message.content
