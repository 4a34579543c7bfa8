"""Retries, backoff, timeouts, fallbacks and circuit breakers, against the local OpenAI and Bedrock fakes.

Every count below is of requests the fake upstream actually received.
"""
from __future__ import annotations

import time

import pytest

from gateway.config import load_settings
from gateway.resilience import CircuitBreaker, backoff_delay
from gateway.testing import issue_key
from tests.fakes.bedrock_server import error_step
from tests.fakes.openai_server import Scripted

CHAT = "/v1/chat/completions"


def ask(app, model="gpt-4o-mini", key=None, **extra):
    key = key or issue_key(app)
    return app.test_client().post(CHAT, headers={"X-API-Key": key}, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def records(app):
    return app.extensions["gateway"].store.records_for_user("alice")


def server_error(status=500):
    return Scripted(status=status, body={"error": {"message": "upstream broke at 10.1.2.3"}})


# ---- units -----------------------------------------------------------------------------------

def test_backoff_is_full_jitter_capped_and_at_least_retry_after():
    assert backoff_delay(0, 0.5, 4.0, rng=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 4.0, rng=lambda: 1.0) == 4.0  # 0.5 * 8 capped at 4
    assert backoff_delay(10, 0.5, 4.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(0, 0.5, 4.0, retry_after=2.5, rng=lambda: 0.3) == 2.5
    delays = {backoff_delay(2, 1.0, 10.0) for _ in range(50)}
    assert all(0 <= d <= 4.0 for d in delays) and len(delays) > 40


def test_breaker_opens_after_threshold_then_lets_one_probe_through():
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again for a full cool-down
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.failures == 0


def test_settings_default_timeouts_fit_inside_api_gateways_29_seconds():
    settings = load_settings({}, environ={})
    assert settings.provider_connect_timeout < settings.provider_timeout < settings.request_timeout < 29
    assert settings.circuit_breaker_failure_threshold == 5


def test_a_provider_bug_frees_the_half_open_probe(tmp_path):
    from gateway.resilience import Resilience
    from gateway.testing import FakeProvider
    from gateway.types import RequestLogRecord

    now = [0.0]
    resilience = Resilience(load_settings({"circuit_breaker_failure_threshold": 1,
                                           "circuit_breaker_cooldown": 5}, environ={}),
                            sleep=lambda _: None, clock=lambda: now[0])
    provider = FakeProvider()
    breaker = resilience.breaker("fake", "m")
    breaker.failure()
    now[0] = 5.0

    def buggy(provider, model):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        resilience.call([(provider, "m")], buggy, RequestLogRecord("r", "c", 0.0))
    assert breaker.allow()  # the probe slot was given back


def test_an_injected_clock_serves_the_deadline_too():
    """One clock for everything: on a clock of its own the retry loop still retries (its request
    budget is read on that clock, not on the process's), and still stops at that clock's deadline."""
    from gateway.errors import ProviderError
    from gateway.resilience import Resilience, time_left
    from gateway.testing import FakeProvider
    from gateway.types import RequestLogRecord

    now = [0.0]
    resilience = Resilience(load_settings({"retry_attempts": 3, "request_timeout": 10, "retry_base_delay": 0.01,
                                           "retry_max_delay": 0.01}, environ={}),
                            sleep=lambda seconds: None, clock=lambda: now[0])
    budgets = []

    def fails_twice(provider, model):
        budgets.append(time_left())
        if len(budgets) < 3:
            raise ProviderError("upstream broke", retryable=True)
        return "answer"

    answer, _, _ = resilience.call([(FakeProvider(), "m")], fails_twice, RequestLogRecord("r", "c", 0.0))
    assert (answer, budgets) == ("answer", [10.0, 10.0, 10.0])

    def slow_failure(provider, model):
        budgets.append(time_left())
        now[0] += 6.0
        raise ProviderError("upstream broke", retryable=True)

    budgets.clear()
    with pytest.raises(ProviderError):
        resilience.call([(FakeProvider(), "m")], slow_failure, RequestLogRecord("r", "c", 0.0))
    assert budgets == [10.0, 4.0]  # the third try would start past the deadline


# ---- OpenAI upstream -------------------------------------------------------------------------

def test_5xx_is_retried_then_answers(upstreams_app, fake_openai):
    app = upstreams_app()
    fake_openai.push(server_error(500), server_error(503))
    response = ask(app)
    assert response.status_code == 200
    assert len(fake_openai.requests) == 3
    assert records(app)[-1].status == 200


def test_every_retry_failing_is_a_502_without_upstream_details(upstreams_app, fake_openai):
    app = upstreams_app({"retry_attempts": 2})
    fake_openai.push(*[server_error()] * 3)
    response = ask(app)
    assert response.status_code == 502
    assert len(fake_openai.requests) == 3
    text = response.get_data(as_text=True)
    assert "10.1.2.3" not in text and "127.0.0.1" not in text and "sk-test" not in text
    assert "Traceback" not in text
    assert (records(app)[-1].status, records(app)[-1].error_code) == (502, "provider_error")


def test_429_waits_at_least_retry_after(upstreams_app, fake_openai):
    app = upstreams_app()
    waits = []
    app.extensions["gateway"].resilience.sleep = waits.append
    fake_openai.push(Scripted(status=429, body={"error": {"message": "slow down"}},
                              headers={"Retry-After": "0.2"}))
    assert ask(app).status_code == 200
    assert len(fake_openai.requests) == 2
    assert waits == [pytest.approx(0.2)] or waits[0] >= 0.2


def test_retry_after_beyond_the_request_budget_is_not_waited_for_but_passed_on(upstreams_app, fake_openai):
    app = upstreams_app({"request_timeout": 2.0})
    fake_openai.push(Scripted(status=429, body={"error": {"message": "slow"}}, headers={"Retry-After": "30"}))
    response = ask(app)
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "provider_rate_limited"
    assert response.headers["Retry-After"] == "30"
    assert len(fake_openai.requests) == 1


def test_an_upstream_429_after_every_retry_is_a_429_with_retry_after(upstreams_app, fake_openai):
    app = upstreams_app({"retry_attempts": 1})
    app.extensions["gateway"].resilience.sleep = lambda seconds: None
    for _ in range(2):
        fake_openai.push(Scripted(status=429, body={"error": {"message": "slow"}}, headers={"retry-after-ms": "1500"}))
    response = ask(app)
    error = response.get_json()["error"]
    assert response.status_code == 429 and error["type"] == "rate_limit_error"
    assert response.headers["Retry-After"] == "2" and len(fake_openai.requests) == 2


def test_other_4xx_is_never_retried(upstreams_app, fake_openai):
    app = upstreams_app()
    fake_openai.push(Scripted(status=422, body={"error": {"message": "bad tools"}}))
    response = ask(app)
    assert response.status_code == 422 and "bad tools" in response.get_json()["error"]["message"]
    assert len(fake_openai.requests) == 1


def test_a_hang_past_the_timeout_is_a_504_after_retries(upstreams_app, fake_openai):
    app = upstreams_app({"provider_timeout": 0.3, "retry_attempts": 1})
    fake_openai.push(*[Scripted(body={}, delay=1.5)] * 2)
    response = ask(app)
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "provider_timeout"
    assert len(fake_openai.requests) == 2
    assert records(app)[-1].error_code == "provider_timeout"


def test_a_malformed_body_is_a_502_bad_response(upstreams_app, fake_openai):
    app = upstreams_app()
    fake_openai.push(Scripted(body="{not json at all"))
    response = ask(app)
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "provider_bad_response"


def test_fallback_chain_answers_from_bedrock_when_openai_fails(upstreams_app, fake_openai, fake_bedrock):
    app = upstreams_app(models={"gpt-4o-mini": {"provider": "openai", "input": 0.15, "output": 0.6,
                                                "fallbacks": ["claude-3-haiku"]}})
    fake_openai.push(*[server_error()] * 3)
    response = ask(app)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Provider"] == "bedrock"
    assert response.headers["X-Gateway-Model"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert response.get_json()["choices"][0]["message"]["content"] == "bedrock: hi"
    assert (len(fake_openai.requests), len(fake_bedrock.requests)) == (3, 1)
    record = records(app)[-1]
    assert (record.provider, record.status, record.prompt_tokens) == ("bedrock", 200, 11)


def test_all_candidates_failing_names_each_failure(upstreams_app, fake_openai, fake_bedrock):
    app = upstreams_app({"retry_attempts": 0},
                        models={"gpt-4o-mini": {"provider": "openai", "fallbacks": ["claude-3-haiku"]}})
    fake_openai.push(server_error())
    fake_bedrock.push(error_step(503, "ServiceUnavailableException"))
    response = ask(app)
    error = response.get_json()["error"]
    assert response.status_code == 502
    assert error["message"].startswith("All 2 providers for this model failed")
    assert "'openai'" in error["message"] and "'bedrock'" in error["message"]
    assert fake_bedrock.base_url not in error["message"]
    assert records(app)[-1].status == 502


def circuit_state(app, name: str) -> str:
    """A breaker's state as an admin sees it."""
    admin = issue_key(app, user="ops", permissions=("admin",))
    return app.test_client().get("/api/v1/admin/metrics", headers={"X-API-Key": admin}).get_json()[
        "circuits"][name]["state"]


@pytest.mark.parametrize("status, body", [
    (400, {"error": {"message": "bad input", "type": "invalid_request_error"}}),
    (429, {"error": {"message": "slow down"}}),
    (401, {"error": {"message": "bad key"}}),
])
def test_failures_the_upstream_did_not_cause_never_open_a_breaker(upstreams_app, fake_openai, status, body):
    app = upstreams_app({"retry_attempts": 0, "circuit_breaker_failure_threshold": 2})
    key = issue_key(app)
    fake_openai.push(*[Scripted(status=status, body=body)] * 4)
    assert [ask(app, key=key).status_code for _ in range(4)] != [503] * 4
    assert len(fake_openai.requests) == 4  # every request still reached the upstream
    assert circuit_state(app, "openai/gpt-4o-mini") == "closed"


def test_breaker_opens_after_threshold_and_stops_upstream_calls(upstreams_app, fake_openai):
    app = upstreams_app({"retry_attempts": 0, "circuit_breaker_failure_threshold": 3,
                         "circuit_breaker_cooldown": 0.5})
    key = issue_key(app)
    fake_openai.push(*[server_error()] * 3)
    assert [ask(app, key=key).status_code for _ in range(3)] == [502] * 3
    assert len(fake_openai.requests) == 3
    paused = [ask(app, key=key) for _ in range(2)]
    assert [r.status_code for r in paused] == [503, 503]
    assert paused[0].get_json()["error"]["code"] == "circuit_open"
    assert len(fake_openai.requests) == 3  # nothing went upstream while open
    ready = app.test_client().get("/api/v1/health/ready").get_json()
    assert (ready["status"], ready["checks"]["circuits"]) == ("degraded", "degraded")  # which one: admin only
    assert circuit_state(app, "openai/gpt-4o-mini") == "open"
    assert [r.error_code for r in records(app)][-2:] == ["circuit_open"] * 2
    time.sleep(0.6)  # past the cool-down: one probe goes through, succeeds, and closes it
    assert ask(app, key=key).status_code == 200
    assert len(fake_openai.requests) == 4
    ready = app.test_client().get("/api/v1/health/ready").get_json()
    assert (ready["status"], ready["checks"]["circuits"]) == ("ok", "ok")
    assert circuit_state(app, "openai/gpt-4o-mini") == "closed"


def test_an_open_breaker_moves_straight_to_the_fallback(upstreams_app, fake_openai, fake_bedrock):
    app = upstreams_app({"retry_attempts": 0, "circuit_breaker_failure_threshold": 1,
                         "circuit_breaker_cooldown": 60},
                        models={"gpt-4o-mini": {"provider": "openai", "fallbacks": ["claude-3-haiku"]}})
    key = issue_key(app)
    fake_openai.push(server_error())
    assert ask(app, key=key).headers["X-Gateway-Provider"] == "bedrock"
    assert ask(app, key=key).headers["X-Gateway-Provider"] == "bedrock"
    assert (len(fake_openai.requests), len(fake_bedrock.requests)) == (1, 2)


# ---- Bedrock upstream ------------------------------------------------------------------------

def test_bedrock_throttling_with_retry_after_is_retried(upstreams_app, fake_bedrock):
    app = upstreams_app()
    waits = []
    app.extensions["gateway"].resilience.sleep = waits.append
    fake_bedrock.push(error_step(429, "ThrottlingException", headers={"Retry-After": "1"}))
    response = ask(app, model="claude-3-haiku")
    assert response.status_code == 200
    assert len(fake_bedrock.requests) == 2 and waits[0] >= 1


def test_bedrock_500s_exhaust_retries(upstreams_app, fake_bedrock):
    app = upstreams_app()
    fake_bedrock.push(*[error_step(500, "InternalServerException")] * 3)
    response = ask(app, model="claude-3-haiku")
    assert response.status_code == 502 and len(fake_bedrock.requests) == 3


def test_bedrock_validation_error_is_the_callers_400_and_not_retried(upstreams_app, fake_bedrock):
    app = upstreams_app()
    fake_bedrock.push(error_step(400, "ValidationException", "maxTokens too large"))
    response = ask(app, model="claude-3-haiku")
    assert response.status_code == 400 and "maxTokens too large" in response.get_json()["error"]["message"]
    assert len(fake_bedrock.requests) == 1


def test_bedrock_hang_is_a_504(upstreams_app, fake_bedrock):
    app = upstreams_app({"provider_timeout": 0.3, "retry_attempts": 1})
    fake_bedrock.push(*[Scripted(body={}, delay=1.5)] * 2)
    response = ask(app, model="claude-3-haiku")
    assert response.status_code == 504 and len(fake_bedrock.requests) == 2


def test_bedrock_malformed_body_is_a_502(upstreams_app, fake_bedrock):
    app = upstreams_app()
    fake_bedrock.push(Scripted(body="<html>oops</html>"))
    response = ask(app, model="claude-3-haiku")
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "provider_bad_response"


def test_bedrock_breaker_opens_too(upstreams_app, fake_bedrock):
    app = upstreams_app({"retry_attempts": 0, "circuit_breaker_failure_threshold": 2,
                         "circuit_breaker_cooldown": 60})
    key = issue_key(app)
    fake_bedrock.push(*[error_step(503, "ServiceUnavailableException")] * 2)
    assert [ask(app, "claude-3-haiku", key).status_code for _ in range(4)] == [502, 502, 503, 503]
    assert len(fake_bedrock.requests) == 2
