"""The usage and metrics API: own usage, BOLA, admin usage and metrics, on SQLite and DynamoDB."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from gateway.errors import ProviderError
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import RequestLogRecord

CHAT = "/v1/chat/completions"
NOT_FOUND = {"error": {"message": "No usage found for that user.", "type": "not_found_error", "param": None,
                       "code": "not_found"}}


def ask(client, key, model="echo", content="one two three", **body):
    return client.post(CHAT, headers={"X-API-Key": key},
                       json={"model": model, "messages": [{"role": "user", "content": content}], **body})


def get(client, path, api_key, **params):
    return client.get(path, headers={"X-API-Key": api_key} if api_key else {}, query_string=params)


@pytest.fixture
def app(tmp_path):
    provider = FakeProvider(outcomes=["a", "b", ProviderError("down", code="upstream_error"), "c", "d"])
    return make_app(tmp_path, plugins=(ProviderPlugin(provider),))


@pytest.fixture
def traffic(app):
    """alice: 2 echo + 2 fake (one failed); bob: 1 fake. Returns their keys and an admin key."""
    client = app.test_client()
    keys = {"alice": issue_key(app, user="alice"), "bob": issue_key(app, user="bob"),
            "admin": issue_key(app, user="ops", permissions=("admin",))}
    ask(client, keys["alice"])
    ask(client, keys["alice"], content="four five")
    ask(client, keys["alice"], model="fake-model")
    ask(client, keys["bob"], model="fake-model")
    assert ask(client, keys["alice"], model="fake-model").status_code == 502
    return keys


def test_own_usage_grouped_by_model_provider_and_day(app, traffic):
    client = app.test_client()
    body = get(client, "/api/v1/usage", traffic["alice"]).get_json()
    assert body["user"] == "alice" and body["group_by"] == "model"
    totals = body["totals"]
    assert (totals["requests"], totals["errors"], totals["tokens"]) == (4, 1, 6 + 4 + 15)
    assert totals["cost"] == pytest.approx(20 / 1e6)
    assert [(g["model"], g["requests"]) for g in body["groups"]] == [("echo", 2), ("fake-model", 2)]
    by_provider = get(client, "/api/v1/usage", traffic["alice"], group_by="provider").get_json()
    assert [(g["provider"], g["tokens"]) for g in by_provider["groups"]] == [("echo", 10), ("fake", 15)]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    by_day = get(client, "/api/v1/usage", traffic["alice"], group_by="day").get_json()
    assert [(g["day"], g["requests"]) for g in by_day["groups"]] == [(today, 4)]
    assert get(client, "/api/v1/usage", traffic["bob"]).get_json()["totals"]["requests"] == 1


def test_usage_window_from_and_to(app, traffic):
    client = app.test_client()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    whole_day = get(client, "/api/v1/usage", traffic["alice"], **{"from": today, "to": today}).get_json()
    assert whole_day["totals"]["requests"] == 4 and whole_day["to"].endswith("T00:00:00Z")
    past = get(client, "/api/v1/usage", traffic["alice"], **{"from": "2020-01-01", "to": "2020-01-31"})
    assert past.get_json()["totals"]["requests"] == 0 and past.get_json()["groups"] == []
    now = time.time()
    epoch = get(client, "/api/v1/usage", traffic["alice"], **{"from": str(now - 600), "to": str(now + 5)})
    assert epoch.get_json()["totals"]["requests"] == 4


@pytest.mark.parametrize("params,fragment", [
    ({"group_by": "user"}, "'group_by' must be one of model, provider, day"),
    ({"from": "yesterday"}, "'from' must be an ISO 8601"),
    ({"to": "nan"}, "'to' must be an ISO 8601"),
    ({"from": "2026-02-01", "to": "2026-01-01"}, "'from' must be before 'to'"),
    ({"from": "2020-01-01", "to": "2026-01-01"}, "limited to 400 days"),
])
def test_bad_parameters_are_a_400_naming_them(app, traffic, params, fragment):
    response = get(app.test_client(), "/api/v1/usage", traffic["alice"], **params)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]["message"]
    assert response.get_json()["error"]["code"] == "invalid_parameter"


def test_bola_another_users_usage_is_a_404_like_a_missing_one(app, traffic):
    client = app.test_client()
    other = get(client, "/api/v1/usage", traffic["alice"], user="bob")
    missing = get(client, "/api/v1/usage", traffic["alice"], user="nobody")
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == missing.get_json() == NOT_FOUND
    assert "bob" not in other.get_data(as_text=True)
    assert get(client, "/api/v1/usage", traffic["alice"], user="alice").status_code == 200


def test_bola_another_users_key_is_a_404(app, traffic):
    client, store = app.test_client(), app.extensions["gateway"].store
    [bob_key] = store.list_keys("bob")
    [alice_key] = store.list_keys("alice")
    assert get(client, "/api/v1/usage", traffic["alice"], api_key_id=bob_key.key_id).status_code == 404
    assert get(client, "/api/v1/usage", traffic["alice"], api_key_id="no-such-key").status_code == 404
    own = get(client, "/api/v1/usage", traffic["alice"], api_key_id=alice_key.key_id)
    assert own.status_code == 200 and own.get_json()["totals"]["requests"] == 4
    second = issue_key(app, user="alice")
    ask(client, second)
    only_second = get(client, "/api/v1/usage", traffic["alice"], api_key_id=store.list_keys("alice")[1].key_id)
    assert only_second.get_json()["totals"]["requests"] == 1


def test_admin_endpoints_need_the_admin_permission(app, traffic):
    client = app.test_client()
    for path in ("/api/v1/admin/usage", "/api/v1/admin/metrics"):
        assert get(client, path, None, user="bob").status_code == 401
        denied = get(client, path, traffic["alice"], user="bob")
        assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "permission_denied"
    assert get(client, "/api/v1/usage", None).status_code == 401


def test_admin_sees_any_users_usage(app, traffic):
    client = app.test_client()
    bob = get(client, "/api/v1/admin/usage", traffic["admin"], user="bob").get_json()
    assert bob["user"] == "bob" and bob["totals"]["requests"] == 1 and bob["groups"][0]["model"] == "fake-model"
    missing = get(client, "/api/v1/admin/usage", traffic["admin"])
    assert missing.status_code == 400 and "'user' is required" in missing.get_json()["error"]["message"]


def test_admin_metrics_per_provider_and_model(app, traffic):
    client = app.test_client()
    ask(client, traffic["bob"], model="fake-model", temperature=0)
    ask(client, traffic["bob"], model="fake-model", temperature=0)  # a cache hit
    body = get(client, "/api/v1/admin/metrics", traffic["admin"]).get_json()
    rows = {(r["provider"], r["model"]): r for r in body["by_provider_model"]}
    assert set(rows) == {("echo", "echo"), ("fake", "fake-model")}
    fake = rows[("fake", "fake-model")]
    assert fake["requests"] == 5 and fake["errors"] == 1 and fake["errors_by_type"] == {"upstream_error": 1}
    assert fake["cache_hit_rate"] == 0.2 and fake["rate_limited"] == 0
    assert fake["saved_cost"] == pytest.approx(20 / 1e6)
    latency = fake["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert body["totals"]["requests"] == 7
    assert [u["user"] for u in body["top_users"]] == ["bob", "alice"]
    assert [e["error_code"] for e in body["recent_errors"]] == ["upstream_error"]
    series = {s["name"]: s for s in body["timeseries"]["series"]}
    assert sum(series["fake/fake-model"]["requests"]) == 5 and sum(series["echo/echo"]["tokens"]) == 10
    assert len(body["timeseries"]["buckets"]) == len(series["echo/echo"]["requests"]) <= 60


def test_rate_limited_requests_are_counted(tmp_path):
    app = make_app(tmp_path, {"rate_limit_free_tier_rpm": 1})
    client, key = app.test_client(), issue_key(app)
    admin = issue_key(app, user="ops", permissions=("admin",), tier="premium")
    ask(client, key)
    assert ask(client, key).status_code == 429
    rows = get(client, "/api/v1/admin/metrics", admin).get_json()["by_provider_model"]
    # The limit is checked before the body is read, so a refused request has no model yet.
    assert [(r["provider"], r["model"], r["requests"], r["rate_limited"]) for r in rows] == [
        ("echo", "echo", 1, 0), ("unknown", "unknown", 1, 1)]
    assert rows[1]["errors_by_type"] == {"rate_limit_exceeded": 1}


def test_percentiles_are_nearest_rank():
    from gateway.usage import percentile

    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_on_dynamodb_aggregations_query_the_analytics_index_and_never_scan_the_log(tmp_path, monkeypatch):
    from moto import mock_aws

    from tests.contract.conftest import FAKE_AWS

    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        app = make_app(tmp_path, {"store": "dynamodb", "table_prefix": "usage"})
        store = app.extensions["gateway"].store
        store.init()
        app.extensions["gateway"].limiter.init()  # every authenticated route counts against the limits
        client = app.test_client()
        keys = {user: issue_key(app, user=user) for user in ("alice", "bob")}
        admin = issue_key(app, user="ops", permissions=("admin",))
        for key in keys.values():
            ask(client, key)
        store.put_record(RequestLogRecord("other", "c", time.time(), user_id="bob", model="m", provider="p"),
                         expires_at=int(time.time()) + 60)
        calls: list[tuple[str, str, str | None]] = []

        def count(model, params, **kwargs):
            body = json.loads(params["body"])
            calls.append((model.name, body.get("TableName", ""), body.get("IndexName")))

        store.client.meta.events.register("before-call.dynamodb.*", count)
        try:
            metrics = get(client, "/api/v1/admin/metrics", admin).get_json()
            own = get(client, "/api/v1/usage", keys["bob"]).get_json()
        finally:
            store.client.meta.events.unregister("before-call.dynamodb.*", count)
    assert metrics["totals"]["requests"] == 3 and own["totals"]["requests"] == 2
    log_calls = [c for c in calls if c[1] == store.request_log_table]
    assert log_calls and all(c[0] == "Query" and c[2] == "UserAnalyticsGlobalSecondaryIndex" for c in log_calls)
    assert not [c for c in calls if c[0] == "Scan" and c[1] == store.request_log_table]


def _checked(n: int, user: str, model: str, checks: dict[str, str], **fields) -> RequestLogRecord:
    return RequestLogRecord(f"checked-{n}", f"c{n}", time.time() - 60, user_id=user, provider="fake", model=model,
                            checks=checks, **fields)


@pytest.fixture
def checked_answers(app, traffic):
    """alice: 5 grounding-checked answers of fake-model (2 flagged, 1 blocked with a 502), 1 also checked
    for tone, 1 unchecked; 1 of echo, passed. bob: 1 of fake-model, flagged."""
    outcomes = [("fake-model", {"grounding": "passed"}), ("fake-model", {"grounding": "flagged"}),
                ("fake-model", {"grounding": "replaced", "tone": "passed"}), ("fake-model", {"grounding": "passed"}),
                ("fake-model", {}), ("echo", {"grounding": "passed"})]
    store = app.extensions["gateway"].store
    store.put_records([(_checked(n, "alice", model, checks), int(time.time()) + 3600)
                       for n, (model, checks) in enumerate(outcomes)]
                      + [(_checked(9, "alice", "fake-model", {"grounding": "blocked"}, status=502,
                                   error_code="grounding_mismatch"), int(time.time()) + 3600),
                         (_checked(10, "bob", "fake-model", {"grounding": "flagged"}), int(time.time()) + 3600)])
    return traffic


def test_usage_reports_each_answer_checks_flagged_rate(app, checked_answers):
    client = app.test_client()
    body = get(client, "/api/v1/usage", checked_answers["alice"]).get_json()
    assert body["totals"]["checks"] == {"grounding": {"checked": 6, "flagged": 3, "rate": 0.5},
                                        "tone": {"checked": 1, "flagged": 0, "rate": 0.0}}
    assert body["totals"]["requests"] == 4 + 7  # the existing figures are unchanged
    groups = {g["model"]: g["checks"] for g in body["groups"]}
    assert groups["fake-model"]["grounding"] == {"checked": 5, "flagged": 3, "rate": 0.6}
    assert groups["echo"] == {"grounding": {"checked": 1, "flagged": 0, "rate": 0.0}}
    by_day = get(client, "/api/v1/usage", checked_answers["alice"], group_by="day").get_json()
    assert by_day["groups"][0]["checks"]["grounding"]["checked"] == 6
    bob = get(client, "/api/v1/usage", checked_answers["bob"]).get_json()
    assert bob["totals"]["checks"] == {"grounding": {"checked": 1, "flagged": 1, "rate": 1.0}}


def test_admin_metrics_report_each_answer_checks_figures_per_provider_and_model(app, checked_answers):
    body = get(app.test_client(), "/api/v1/admin/metrics", checked_answers["admin"]).get_json()
    rows = {(r["provider"], r["model"]): r for r in body["by_provider_model"]}
    assert rows[("fake", "fake-model")]["checks"] == {"grounding": {"checked": 6, "flagged": 4, "rate": 0.6667},
                                                      "tone": {"checked": 1, "flagged": 0, "rate": 0.0}}
    assert rows[("echo", "echo")]["checks"] == {}  # the echo provider's own answers were never checked
    assert rows[("fake", "echo")]["checks"] == {"grounding": {"checked": 1, "flagged": 0, "rate": 0.0}}
    assert body["totals"]["checks"]["grounding"] == {"checked": 7, "flagged": 4, "rate": 0.5714}
    assert rows[("fake", "fake-model")]["errors_by_type"] == {"upstream_error": 1, "grounding_mismatch": 1}
    series = {s["name"]: s for s in body["timeseries"]["series"]}
    assert sum(series["fake/fake-model"]["flagged"]["grounding"]) == 4
    assert sum(series["fake/fake-model"]["flagged"]["tone"]) == 0
    assert series["echo/echo"]["flagged"] == {}
    assert len(series["fake/fake-model"]["flagged"]["grounding"]) == len(body["timeseries"]["buckets"])
    assert isinstance(body["answer_checks"], list)


def test_answer_check_figures_weigh_each_record_by_its_count():
    from gateway.usage import summarize

    records = [RequestLogRecord("a", "c", 0.0, count=3, checks={"grounding": "flagged"}),
               RequestLogRecord("b", "c", 0.0, checks={"grounding": "passed"}), RequestLogRecord("c", "c", 0.0)]
    assert summarize(records)["checks"] == {"grounding": {"checked": 4, "flagged": 3, "rate": 0.75}}
    assert summarize([])["checks"] == {}


def test_checked_completions_show_in_the_usage_and_metrics_apis(tmp_path):
    from tests.fakes.answer_checks import PromiseCheck

    provider = FakeProvider(outcomes=["we guarantee it", "maybe", "we guarantee that too", "fine"])
    app = make_app(tmp_path, plugins=(ProviderPlugin(provider), PromiseCheck()))
    client, key = app.test_client(), issue_key(app)
    admin = issue_key(app, "ops", permissions=("admin",))
    for _ in range(3):
        assert ask(client, key, model="fake-model").status_code == 200
    events = ask(client, key, model="fake-model", stream=True).get_data(as_text=True).split("\n\n")
    assert events[-2] == "data: [DONE]" and not any('"gateway"' in event for event in events)  # passed quietly
    ask(client, key)  # echo: checked too
    own = get(client, "/api/v1/usage", key).get_json()
    assert {g["model"]: g["checks"]["promises"] for g in own["groups"]} == {
        "echo": {"checked": 1, "flagged": 0, "rate": 0.0},
        "fake-model": {"checked": 4, "flagged": 2, "rate": 0.5}}
    metrics = get(client, "/api/v1/admin/metrics", admin).get_json()
    assert "promises" in metrics["answer_checks"]
    assert metrics["totals"]["checks"]["promises"] == {"checked": 5, "flagged": 2, "rate": 0.4}


def test_answers_with_check_figures_are_what_the_openapi_document_describes(app, checked_answers):
    from jsonschema import Draft202012Validator

    client = app.test_client()
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    figures = schemas["MetricsReport"]["properties"]["by_provider_model"]["items"]["properties"]["checks"]
    assert figures["additionalProperties"]["required"] == ["checked", "flagged", "rate"]
    assert "flagged" in schemas["MetricsReport"]["properties"]["timeseries"]["description"]
    for path, key, schema in (("/api/v1/usage", checked_answers["alice"], "UsageReport"),
                              ("/api/v1/admin/metrics", checked_answers["admin"], "MetricsReport")):
        body = get(client, path, key).get_json()
        assert body["totals"]["checks"]  # figures to check against the document
        Draft202012Validator(schemas[schema]).validate(body)
    broken = {**body, "totals": {**body["totals"], "checks": {"grounding": {"checked": 1}}}}
    assert not Draft202012Validator(schemas["MetricsReport"]).is_valid(broken)
