"""Streaming failures: before the first chunk (an ordinary JSON error), mid-stream (an error event,
still logged), and a client that goes away (the upstream read stops; logged once)."""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from gateway.errors import ProviderError
from gateway.streaming import MeteredStream, render_sse
from gateway.testing import issue_key, serve
from gateway.types import Chunk, Usage
from tests.fakes.bedrock_server import converse_events, error_step
from tests.fakes.openai_server import Scripted, stream_events

MESSAGES = [{"role": "user", "content": "stream please"}]


def sdk(url, key):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)


def records(app):
    return app.extensions["gateway"].store.records_for_user("alice")


def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ---- units -----------------------------------------------------------------------------------

def test_metered_stream_finishes_once_whether_it_ends_or_is_closed():
    finished = []
    stream = MeteredStream(Chunk(text="a"), iter([Chunk(text="b"), Chunk(usage=Usage(3, 2))]),
                           lambda done, error: finished.append((done.usage, done.text, error)))
    assert [c.text for c in stream] == ["a", "b", ""]
    stream.close()
    assert finished == [(Usage(3, 2), "ab", None)]


def test_metered_stream_closed_early_records_client_closed_and_closes_upstream():
    closed, finished = [], []

    def upstream():
        try:
            yield Chunk(text="b")
            yield Chunk(text="c")
        finally:
            closed.append(True)

    rest = upstream()
    stream = MeteredStream(Chunk(text="a"), rest, lambda done, error: finished.append(error))
    next(stream), next(stream)
    stream.close()
    assert closed == [True]
    assert [(e.status, e.code) for e in finished] == [(499, "client_closed")]


def test_a_stream_past_stream_max_seconds_ends_with_an_error_event_and_closes_upstream():
    closed, finished = [], []

    def endless():
        try:
            while True:
                time.sleep(0.02)
                yield Chunk(text="more ")
        finally:
            closed.append(True)

    stream = MeteredStream(None, endless(), lambda done, error: finished.append(error), max_seconds=0.1)
    events = list(render_sse(stream, completion_id="c", created=1, model="m", include_usage=False))
    assert 2 <= len(events) <= 7  # a chunk each 20 ms for 100 ms, then the error event
    assert events[-1].startswith(b'data: {"error":{"message":"The stream went on longer')
    assert closed == [True]
    assert [(e.status, e.code) for e in finished] == [(504, "stream_too_long")]


def test_render_sse_error_mid_stream_is_one_error_event_without_done():
    def failing():
        yield Chunk(text="part")
        raise ProviderError("Provider 'x' dropped the connection.", code="provider_unreachable")

    stream = MeteredStream(None, failing(), lambda done, error: None)
    events = list(render_sse(stream, completion_id="c", created=1, model="m", include_usage=True))
    assert events[-1].startswith(b'data: {"error":{"message":"Provider \'x\' dropped')
    assert b"[DONE]" not in b"".join(events)


# ---- over HTTP ---------------------------------------------------------------------------------

@pytest.fixture
def served(upstreams_app):
    def start(settings=None):
        app = upstreams_app(settings)
        return app, issue_key(app)
    return start


def test_failure_before_the_first_chunk_is_an_ordinary_json_error(served, fake_openai):
    app, key = served()
    fake_openai.push(*[Scripted(status=500, body={"error": {"message": "down"}})] * 3)
    with serve(app) as url:
        with pytest.raises(openai.InternalServerError) as info:
            sdk(url, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert info.value.status_code == 502
    assert info.value.response.headers["content-type"] == "application/json"
    assert len(fake_openai.requests) == 3  # retried before anything was sent
    record = records(app)[-1]
    assert (record.status, record.streamed, record.error_code) == (502, True, "provider_error")


def test_stream_retried_before_first_chunk_then_served(served, fake_openai):
    app, key = served()
    fake_openai.push(Scripted(status=429, body={"error": {"message": "slow"}}))
    with serve(app) as url:
        chunks = list(sdk(url, key).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "upstream: stream please"
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize("fault", ["reset", "malformed"])
def test_openai_failure_mid_stream_ends_with_an_error_event_and_is_logged(served, fake_openai, fault):
    app, key = served()
    events = stream_events("gpt-4o-mini", "one two three four")
    if fault == "reset":
        fake_openai.push(Scripted(events=events, reset_after=3))
    else:
        fake_openai.push(Scripted(events=events[:3] + ["{this is not json"] + events[3:]))
    received = []
    with serve(app) as url:
        with pytest.raises(openai.APIError) as info:
            for chunk in sdk(url, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                                stream=True):
                received.append(chunk.choices[0].delta.content)
    assert "".join(r or "" for r in received) == "one two"
    assert "127.0.0.1" not in str(info.value.message)
    record = records(app)[-1]
    expected = "provider_unreachable" if fault == "reset" else "provider_bad_response"
    assert (record.status, record.error_code, record.streamed) == (502, expected, True)
    assert len(fake_openai.requests) == 1  # nothing is retried once the stream has started


def test_bedrock_exception_event_mid_stream(served, fake_bedrock):
    app, key = served()
    events = converse_events("alpha beta gamma")[:3] + [("throttlingException", {"message": "slow"})]
    fake_bedrock.push(Scripted(events=events))
    with serve(app) as url:
        with pytest.raises(openai.APIError):
            list(sdk(url, key).chat.completions.create(model="claude-3-haiku", messages=MESSAGES,
                                                        stream=True))
    record = records(app)[-1]
    assert (record.provider, record.status, record.streamed) == ("bedrock", 429, True)  # throttled: Bedrock's 429
    assert record.error_code == "provider_rate_limited"


def test_bedrock_connection_reset_mid_stream(served, fake_bedrock):
    app, key = served()
    fake_bedrock.push(Scripted(events=converse_events("alpha beta gamma"), reset_after=2))
    with serve(app) as url:
        with pytest.raises(openai.APIError):
            list(sdk(url, key).chat.completions.create(model="claude-3-haiku", messages=MESSAGES,
                                                        stream=True))
    assert records(app)[-1].error_code == "provider_unreachable"


def test_bedrock_stream_errors_before_first_chunk_are_retried(served, fake_bedrock):
    app, key = served()
    fake_bedrock.push(error_step(503, "ServiceUnavailableException"))
    with serve(app) as url:
        chunks = list(sdk(url, key).chat.completions.create(
            model="claude-3-haiku", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens == 11
    assert len(fake_bedrock.requests) == 2


@pytest.mark.parametrize("model, fake_name", [("gpt-4o-mini", "fake_openai"), ("claude-3-haiku", "fake_bedrock")])
def test_client_disconnect_stops_the_upstream_read_and_is_logged_once(served, request, model, fake_name):
    fake = request.getfixturevalue(fake_name)
    app, key = served()
    words = " ".join(f"w{i}" for i in range(60))
    events = stream_events(model, words) if fake_name == "fake_openai" else converse_events(words)
    fake.push(Scripted(events=events, event_delay=0.05))
    with serve(app) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"X-API-Key": key}, timeout=15,
                          json={"model": model, "messages": MESSAGES, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
        wait_for(lambda: fake.aborted and fake.aborted[0])  # the gateway hung up on the upstream
        wait_for(lambda: len(records(app)) == 1)
    assert fake.events_sent[0] < len(events)
    time.sleep(0.2)
    logged = records(app)
    assert len(logged) == 1
    assert (logged[0].status, logged[0].error_code, logged[0].streamed) == (499, "client_closed", True)


@pytest.mark.parametrize("model, fake_name", [("gpt-4o-mini", "fake_openai"), ("claude-3-haiku", "fake_bedrock")])
def test_an_upstream_hanging_mid_stream_times_out_into_an_error_event(served, request, model, fake_name):
    fake = request.getfixturevalue(fake_name)
    # Between events OpenAI streams have stream_idle_timeout; Bedrock's client has one read timeout.
    app, key = served({"provider_timeout": 0.3, "stream_idle_timeout": 1})
    # The first event carries text (so the stream has started), then the upstream stalls.
    events = stream_events(model, "slow words")[1:] if fake_name == "fake_openai" \
        else converse_events("slow words")[1:]
    fake.push(Scripted(events=events, event_delay=2.0))
    with serve(app) as url:
        with pytest.raises(openai.APIError) as info:
            list(sdk(url, key).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "did not answer in time" in info.value.message
    record = records(app)[-1]
    assert (record.status, record.error_code) == (504, "provider_timeout")
