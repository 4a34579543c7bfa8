"""Per-key limits through the app: tiers, key overrides, headers, tokens, budgets, fail modes."""
from __future__ import annotations

import logging
import time

import pytest

from gateway.request_log import writer_for
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import RequestLogRecord
from tests.fakes import servers
from tests.test_errors import CHAT, assert_envelope, body


def ask(client, key, **overrides):
    return client.post(CHAT, json=body(**overrides), headers={"X-API-Key": key})


def test_headers_on_every_answer_and_429_with_retry_after(app, client):
    key = issue_key(app, requests_per_minute=2)
    first, second = ask(client, key), ask(client, key, model="no-such-model")
    assert first.status_code == 200 and second.status_code == 404
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second)] == ["1", "0"]
    refused = ask(client, key)
    assert_envelope(refused, 429, "rate_limit_exceeded")
    for response in (first, second, refused):
        assert response.headers["X-RateLimit-Limit"] == "2"
        assert abs(int(response.headers["X-RateLimit-Reset"]) - (time.time() + 60)) <= 5
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_free_tier_default_is_10_per_minute(app, client):
    key = issue_key(app, tier="free")
    assert [ask(client, key).status_code for _ in range(11)] == [200] * 10 + [429]


def test_key_rate_limit_overrides_tier(app, client):
    key = issue_key(app, tier="free", requests_per_minute=3)
    assert [ask(client, key).status_code for _ in range(4)] == [200] * 3 + [429]


def test_tier_table_setting(tmp_path):
    app = make_app(tmp_path, {"tiers": {"basic": {"requests_per_minute": 2}}})
    key = issue_key(app, tier="basic")
    client = app.test_client()
    assert [ask(client, key).status_code for _ in range(3)] == [200, 200, 429]
    assert app.extensions["gateway"].settings.tier("basic").tokens_per_minute == 100_000


def test_hourly_limit(app, client):
    key = issue_key(app, requests_per_minute=100, requests_per_hour=2)
    ask(client, key), ask(client, key)
    refused = ask(client, key)
    assert_envelope(refused, 429, "rate_limit_exceeded")
    assert "per hour" in refused.get_json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) > 60


def test_keys_are_limited_separately(app, client):
    one, two = issue_key(app, requests_per_minute=1), issue_key(app, requests_per_minute=1)
    assert [ask(client, k).status_code for k in (one, two, one)] == [200, 200, 429]


@pytest.fixture
def fake():
    return FakeProvider()  # 10 prompt + 5 completion tokens a call, $1/$2 per million


def test_tokens_per_minute_count_real_usage(tmp_path, fake):
    app = make_app(tmp_path, {"tiers": {"free": {"tokens_per_minute": 20}}}, plugins=(ProviderPlugin(fake),))
    key = issue_key(app)
    client = app.test_client()
    assert [ask(client, key, model="fake-model").status_code for _ in range(2)] == [200, 200]
    refused = ask(client, key, model="fake-model")
    assert_envelope(refused, 429, "rate_limit_exceeded")
    assert "tokens per minute" in refused.get_json()["error"]["message"]
    assert len(fake.calls) == 2
    gateway = app.extensions["gateway"]
    key_id = key.split("_")[2]
    assert gateway.limiter.storage.get(f"LIMITER/tokens/{key_id}/20/1/minute") == 30


def test_usage_is_charged_per_key_in_one_batch_and_cached_answers_cost_nothing(tmp_path):
    app = make_app(tmp_path)
    limiter = app.extensions["gateway"].limiter
    records = [RequestLogRecord("r1", "c", 0, api_key_id="k1", tier="free", prompt_tokens=3, completion_tokens=4,
                           cost=0.5),
               RequestLogRecord("r2", "c", 0, api_key_id="k1", tier="free", prompt_tokens=1, completion_tokens=2,
                           cost=0.25),
               RequestLogRecord("r3", "c", 0, api_key_id="k2", tier="premium", prompt_tokens=5, cost=0.0),
               RequestLogRecord("r4", "c", 0, api_key_id="k2", tier="premium", prompt_tokens=50, cached=True,
                           saved_cost=1.0),
               RequestLogRecord("r5", "c", 0, api_key_id="", tier="free", prompt_tokens=9)]  # refused before a key
    limiter.charge(records)
    free, premium = (app.extensions["gateway"].settings.tier(name).tokens_per_minute for name in ("free", "premium"))
    month = time.strftime("%Y-%m", time.gmtime())
    assert limiter.storage.get(f"LIMITER/tokens/k1/{free}/1/minute") == 10
    assert limiter.storage.get(f"LIMITER/tokens/k2/{premium}/1/minute") == 5
    assert limiter.storage.get(f"LIMITER/budget/k1/{month}") == 750_000
    assert limiter.storage.get(f"LIMITER/budget/k2/{month}") == 0


def test_a_background_request_log_charges_the_limits_when_it_writes(tmp_path, fake):
    app = make_app(tmp_path, {"request_log_writes": "background", "tiers": {"free": {"tokens_per_minute": 20}}},
                   plugins=(ProviderPlugin(fake),))
    client, key = app.test_client(), issue_key(app)
    assert [ask(client, key, model="fake-model").status_code for _ in range(2)] == [200, 200]
    writer_for(app.extensions["gateway"]).flush()
    assert_envelope(ask(client, key, model="fake-model"), 429, "rate_limit_exceeded")
    assert len(fake.calls) == 2


def test_max_tokens_above_tier_cap_is_400_before_upstream(tmp_path, fake):
    app = make_app(tmp_path, {"tiers": {"free": {"tokens_per_minute": 100}}}, plugins=(ProviderPlugin(fake),))
    client, key = app.test_client(), issue_key(app)
    assert_envelope(ask(client, key, model="fake-model", max_tokens=101), 400, "max_tokens_exceeds_limit")
    assert_envelope(ask(client, key, model="fake-model", max_completion_tokens=500), 400,
                    "max_tokens_exceeds_limit")
    assert fake.calls == []
    assert ask(client, key, model="fake-model", max_tokens=100).status_code == 200


def test_monthly_budget_exhausted_is_insufficient_quota(tmp_path, fake):
    # One call costs 10 * $1 + 5 * $2 per million = $0.00002.
    app = make_app(tmp_path, {"tiers": {"free": {"monthly_budget_usd": 0.00003}}},
                   plugins=(ProviderPlugin(fake),))
    client, key = app.test_client(), issue_key(app)
    assert [ask(client, key, model="fake-model").status_code for _ in range(2)] == [200, 200]
    refused = ask(client, key, model="fake-model")
    assert_envelope(refused, 429, "insufficient_quota")
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(fake.calls) == 2


@pytest.fixture
def unreachable_redis():
    return f"redis://127.0.0.1:{servers.free_port()}/0"


def test_fail_closed_answers_503(tmp_path, unreachable_redis):
    app = make_app(tmp_path, {"rate_limit_storage_uri": unreachable_redis, "rate_limit_fail_mode": "closed"})
    assert_envelope(ask(app.test_client(), issue_key(app)), 503, "rate_limit_store_unavailable")
    assert app.extensions["gateway"].limiter.store_errors == 1


def test_fail_open_serves_logs_and_counts(tmp_path, unreachable_redis, caplog):
    app = make_app(tmp_path, {"rate_limit_storage_uri": unreachable_redis, "rate_limit_fail_mode": "open"})
    client, key = app.test_client(), issue_key(app, requests_per_minute=1)
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        assert [ask(client, key).status_code for _ in range(2)] == [200, 200]
    warnings = [r for r in caplog.records if r.name == "gateway.ratelimit"]
    assert warnings and all(r.levelno == logging.WARNING and r.metric == "RateLimitStoreErrors"
                            for r in warnings)
    assert app.extensions["gateway"].limiter.store_errors >= 2
    assert unreachable_redis not in caplog.text


def test_redis_storage(tmp_path):
    with servers.redis_server(tmp_path) as uri:
        app = make_app(tmp_path, {"rate_limit_storage_uri": uri})
        client, key = app.test_client(), issue_key(app, requests_per_minute=2)
        assert [ask(client, key).status_code for _ in range(3)] == [200, 200, 429]


def test_default_storage_is_a_sqlite_file_shared_by_instances(tmp_path):
    first = make_app(tmp_path)
    second = make_app(tmp_path)
    assert first.extensions["gateway"].limiter.storage.path == str(tmp_path / "gateway-ratelimits.db")
    key = issue_key(first, requests_per_minute=2)
    assert ask(first.test_client(), key).status_code == 200
    assert ask(second.test_client(), key).status_code == 200
    assert ask(first.test_client(), key).status_code == 429


def test_memory_storage_is_per_instance(tmp_path):
    """memory:// is documented as per process: two instances each admit the full limit."""
    first = make_app(tmp_path, {"rate_limit_storage_uri": "memory://"})
    second = make_app(tmp_path, {"rate_limit_storage_uri": "memory://"})
    key = issue_key(first, requests_per_minute=1)
    assert [ask(app.test_client(), key).status_code for app in (first, second, first)] == [200, 200, 429]


def test_invalid_fail_mode_stops_start_up(tmp_path):
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="rate_limit_fail_mode"):
        make_app(tmp_path, {"rate_limit_fail_mode": "sometimes"})


def test_tiers_from_the_environment_and_bad_tier_fields():
    from gateway.config import load_settings
    from gateway.errors import ConfigError

    tiers = '{"premium": {"tokens_per_minute": 7, "monthly_budget_usd": 9.5}}'
    settings = load_settings(environ={"GATEWAY_TIERS": tiers, "RATE_LIMIT_FREE_TIER_RPM": "4"})
    assert settings.tier("premium").tokens_per_minute == 7
    assert settings.tier("premium").monthly_budget_usd == 9.5
    assert settings.tier("premium").requests_per_minute == 1000
    assert settings.tier("free").requests_per_minute == 4
    for bad in ('{"free": {"tokens": 5}}', '{"gold": {}}', '{"free": {"monthly_budget_usd": 0}}'):
        with pytest.raises(ConfigError, match="tiers"):
            load_settings(environ={"GATEWAY_TIERS": bad})


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/echo", "/api/v1/usage"])
def test_every_authenticated_route_counts_against_the_rate_limit(tmp_path, path):
    app = make_app(tmp_path)
    client, key = app.test_client(), issue_key(app, requests_per_minute=3)
    statuses = [client.get(path, headers={"X-API-Key": key}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 429, "rate_limit_exceeded")


def test_admin_routes_count_against_the_admins_rate_limit(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    admin = issue_key(app, user="ops", permissions=("admin",), requests_per_minute=2)
    statuses = [client.get("/api/v1/admin/keys", headers={"X-API-Key": admin}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
