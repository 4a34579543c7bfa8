"""CloudWatch Embedded Metric Format lines: they parse, carry the right dimensions and values."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from gateway import metric_names as names
from gateway import metrics
from gateway.errors import ProviderError
from gateway.metrics import REQUEST_LOG_FALLBACKS
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import RequestLogRecord
from tests.fakes.answer_checks import PromiseCheck

CHAT = "/v1/chat/completions"
PEPPER = "staging-pepper-0123456789abcdef"


def emf_lines(capsys) -> list[dict]:
    """Every EMF object printed so far (each line is one JSON object with an ``_aws`` block)."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines and all("_aws" in line for line in lines)
    return lines


def metric_names_of(line: dict) -> list[str]:
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "AiModelGateway"
    return [m["Name"] for m in directive["Metrics"]]


def ask(client, key, model="fake-model", **body):
    return client.post(CHAT, headers={"X-API-Key": key} if key else {},
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body})


@pytest.fixture(autouse=True)
def _emf_on(gateway_environment, monkeypatch):
    """EMF lines are on by default only on Lambda; these tests turn them on as a host would."""
    monkeypatch.setenv("GATEWAY_METRICS_EMF", "true")


@pytest.fixture
def app(tmp_path):
    provider = FakeProvider(outcomes=["one", ProviderError("upstream down", code="upstream_error")])
    return make_app(tmp_path, {"stage": "staging", "key_pepper": PEPPER, "rate_limit_free_tier_rpm": 3},
                    plugins=(ProviderPlugin(provider),))


def test_a_completion_emits_one_line_with_all_its_metrics_and_dimensions(app, capsys):
    capsys.readouterr()
    key = issue_key(app, tier="premium")
    assert ask(app.test_client(), key, temperature=0).status_code == 200
    [line] = emf_lines(capsys)
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Stage", "Provider", "Model", "Tier"], ["Stage"]]
    assert (line["Stage"], line["Provider"], line["Model"], line["Tier"]) == ("staging", "fake", "fake-model",
                                                                              "premium")
    assert set(metric_names_of(line)) == {"Requests", "Errors", "Latency", "ProviderLatency", "Tokens", "Cost",
                                          "CacheHits", "RateLimited"}
    assert line["Requests"] == [1.0] and line["Errors"] == [0.0] and line["Tokens"] == [15.0]
    assert line["Cost"] == [pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)]
    assert line["Latency"][0] >= line["ProviderLatency"][0] > 0
    assert line["CacheHits"] == [0.0] and line["RateLimited"] == [0.0]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["Latency"] == "Milliseconds" and units["Requests"] == "Count"
    record = app.extensions["gateway"].store.records_for_user("alice")[0]
    assert line["_aws"]["Timestamp"] == int(record.timestamp * 1000)

    assert ask(app.test_client(), key, temperature=0).headers["X-Cache"] == "HIT"
    [cached] = emf_lines(capsys)
    assert cached["CacheHits"] == [1.0] and cached["Cost"] == [0.0] and "ProviderLatency" not in cached


def test_failures_rate_limits_and_auth_failures_are_counted(app, capsys):
    client, key = app.test_client(), issue_key(app)
    ask(client, key)
    capsys.readouterr()
    assert ask(client, key).status_code == 502
    assert ask(client, key, model="missing").status_code == 404
    assert ask(client, key).status_code == 429
    failed, missing, limited = emf_lines(capsys)
    assert (failed["Errors"], failed["Provider"], failed["RateLimited"]) == ([1.0], "fake", [0.0])
    # The caller's made-up model name is not a dimension value: it would mint a metric.
    assert (missing["Errors"], missing["Provider"], missing["Model"]) == ([1.0], "unknown", "unknown")
    assert (limited["RateLimited"], limited["Errors"], limited["Tier"]) == ([1.0], [1.0], "free")

    assert ask(client, None).status_code == 401
    assert ask(client, "gw_test_0000000000000000_" + "x" * 43).status_code == 401
    assert client.get("/api/v1/usage", headers={"X-API-Key": "not-a-gateway-key"}).status_code == 401
    lines = emf_lines(capsys)
    assert len(lines) == 3
    for line in lines:
        assert metric_names_of(line) == ["AuthFailures"] and line["AuthFailures"] == [1.0]
        assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"]] and line["Stage"] == "staging"


def test_every_emitted_name_is_a_declared_one(app, capsys):
    client, key = app.test_client(), issue_key(app)
    ask(client, key)
    ask(client, None)
    emitted = {name for line in emf_lines(capsys) for name in metric_names_of(line)}
    assert emitted == set(names.ALL)
    assert REQUEST_LOG_FALLBACKS not in names.ALL  # an operational counter, not one the alarms read


def test_metric_names_are_the_canonical_list():
    assert names.ALL == ("Requests", "Errors", "Latency", "ProviderLatency", "Tokens", "Cost", "CacheHits",
                         "RateLimited", "AuthFailures")
    assert names.DIMENSIONS == ("Stage", "Provider", "Model", "Tier")
    assert names.NAMESPACE == "AiModelGateway"


@pytest.mark.parametrize("dimensions", [
    {"Stage": "prod", "Provider": "openai", "Model": "gpt-4o-mini", "Tier": "basic"},
    {"Stage": "prod"},
])
def test_a_line_is_what_powertools_would_write(dimensions):
    """The EMF written by hand equals aws-lambda-powertools' own serialization of the same metrics
    (through its public API), so the format is the specification's, checked by an independent writer."""
    from aws_lambda_powertools.metrics import EphemeralMetrics

    values = [("Requests", "Count", 1), ("Latency", "Milliseconds", 12.5), ("Requests", "Count", 3),
              ("Cost", "None", 0.001), ("Latency", "Milliseconds", 7)]
    reference = EphemeralMetrics(namespace=names.NAMESPACE)
    reference.set_timestamp(int(MINUTE * 1000))
    for name, value in dimensions.items():
        reference.add_dimension(name=name, value=value)
    if len(dimensions) > 1:
        reference.add_dimensions(Stage=dimensions["Stage"])
    for name, unit, value in values:
        reference.add_metric(name=name, unit=unit, value=value)
    assert json.loads(metrics._line(dimensions, values, MINUTE)) == reference.serialize_metric_set()


def test_emf_can_be_turned_off(tmp_path, capsys):
    app = make_app(tmp_path, {"metrics_emf": False})
    capsys.readouterr()
    ask(app.test_client(), issue_key(app), model="echo")
    assert capsys.readouterr().out == ""


def test_importing_and_building_the_app_loads_no_metrics_or_cache_sdk():
    code = ("import sys, tempfile; from gateway.app import create_app; "
            "create_app({'sqlite_path': tempfile.mkdtemp() + '/g.db'}); "
            "print(sorted(m for m in ('aws_lambda_powertools', 'redis', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_with_background_writes_the_metrics_leave_the_request_thread_too(tmp_path, capsys, monkeypatch):
    import threading

    from gateway import metrics
    from gateway.request_log import writer_for

    app = make_app(tmp_path, {"request_log_writes": "background"})
    threads = []
    original = metrics.emit_requests

    def spy(gateway, records):
        threads.append(threading.current_thread().name)
        original(gateway, records)

    monkeypatch.setattr(metrics, "emit_requests", spy)
    capsys.readouterr()
    ask(app.test_client(), issue_key(app), model="echo")
    writer_for(app.extensions["gateway"]).close()
    assert threads == ["request-log-writer"]
    [line] = emf_lines(capsys)
    assert line["Provider"] == "echo" and line["Requests"] == [1.0]


#: A whole minute a little in the past (CloudWatch skips lines older than 14 days; powertools warns).
MINUTE = float(int(time.time()) // 60 * 60 - 600)


def _record(n: int, timestamp: float = MINUTE, **fields) -> RequestLogRecord:
    defaults = {"provider": "openai", "model": "gpt-4o-mini", "tier": "basic"}
    return RequestLogRecord(request_id=f"r{n}", correlation_id=f"c{n}", timestamp=timestamp, user_id="u",
                       **{**defaults, **fields})


def test_a_batch_sharing_dimensions_is_one_line_with_every_records_values(tmp_path, capsys):
    gateway = make_app(tmp_path, {"stage": "staging", "key_pepper": PEPPER}).extensions["gateway"]
    records = [
        _record(1, timestamp=MINUTE + 1.5, latency_ms=120.25, upstream_latency_ms=100.5, prompt_tokens=10,
                completion_tokens=5, cost=0.001),
        _record(2, timestamp=MINUTE + 0.25, latency_ms=80.0, status=502, error_code="upstream_error"),
        _record(3, timestamp=MINUTE + 2, latency_ms=3.5, cached=True),
        _record(4, timestamp=MINUTE + 3, latency_ms=1.0, status=429),
    ]
    capsys.readouterr()
    metrics.emit_requests(gateway, records)
    [line] = emf_lines(capsys)
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Stage", "Provider", "Model", "Tier"], ["Stage"]]
    assert (line["Stage"], line["Provider"], line["Model"], line["Tier"]) == ("staging", "openai", "gpt-4o-mini",
                                                                              "basic")
    assert line["_aws"]["Timestamp"] == int((MINUTE + 0.25) * 1000)  # the earliest record's time
    assert line["Requests"] == [1.0, 1.0, 1.0, 1.0]
    assert line["Errors"] == [0.0, 1.0, 0.0, 1.0]
    assert line["Latency"] == [120.25, 80.0, 3.5, 1.0]
    assert line["ProviderLatency"] == [100.5]  # only the record that reached a provider
    assert line["Tokens"] == [15.0, 0.0, 0.0, 0.0] and line["Cost"] == [0.001, 0.0, 0.0, 0.0]
    assert line["CacheHits"] == [0.0, 0.0, 1.0, 0.0] and line["RateLimited"] == [0.0, 0.0, 0.0, 1.0]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert len(units) == 8 and units["Latency"] == "Milliseconds" and units["Cost"] == "None"


def test_a_batch_splits_by_dimensions_and_by_minute(tmp_path, capsys):
    gateway = make_app(tmp_path).extensions["gateway"]
    minute = MINUTE
    records = [_record(1, timestamp=minute - 0.5), _record(2, timestamp=minute + 0.5),
               _record(3, timestamp=minute - 1, tier="premium"), _record(4, timestamp=minute - 2, latency_ms=7.0),
               _record(5, timestamp=minute - 3, provider="", model="")]
    capsys.readouterr()
    metrics.emit_requests(gateway, records)
    lines = {(line["Tier"], line["Provider"], line["_aws"]["Timestamp"]): line for line in emf_lines(capsys)}
    assert {key: line["Requests"] for key, line in lines.items()} == {
        ("basic", "openai", (minute - 2) * 1000): [1.0, 1.0],
        ("basic", "openai", (minute + 0.5) * 1000): [1.0],
        ("premium", "openai", (minute - 1) * 1000): [1.0],
        ("basic", "unknown", (minute - 3) * 1000): [1.0],
    }
    assert lines[("basic", "openai", (minute - 2) * 1000)]["Latency"] == [0.0, 7.0]
    assert lines[("basic", "unknown", (minute - 3) * 1000)]["Model"] == "unknown"


def test_a_line_carries_at_most_100_values_per_metric(tmp_path, capsys):
    gateway = make_app(tmp_path).extensions["gateway"]
    records = [_record(n, timestamp=MINUTE + n / 10, latency_ms=float(n)) for n in range(150)]
    capsys.readouterr()
    metrics.emit_requests(gateway, records)
    out = capsys.readouterr().out.splitlines()
    first, second = (json.loads(line) for line in out)  # nothing else was printed
    assert len(first["Requests"]) == metrics.VALUES_PER_LINE == 100 and len(second["Requests"]) == 50
    assert first["Latency"] + second["Latency"] == [float(n) for n in range(150)]
    assert (first["_aws"]["Timestamp"], second["_aws"]["Timestamp"]) == (MINUTE * 1000, int((MINUTE + 10) * 1000))


def test_batch_metrics_can_be_turned_off(tmp_path, capsys):
    gateway = make_app(tmp_path, {"metrics_emf": False}).extensions["gateway"]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(1), _record(2)])
    assert capsys.readouterr().out == ""


def test_a_line_carries_nothing_of_the_previous_one(tmp_path, capsys):
    gateway = make_app(tmp_path).extensions["gateway"]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(1, timestamp=MINUTE, tier="premium", latency_ms=9.0)])
    before = time.time()
    metrics.count_auth_failure(gateway)
    first, second = emf_lines(capsys)
    assert first["Tier"] == "premium" and first["_aws"]["Timestamp"] == MINUTE * 1000
    assert "Tier" not in second and "Latency" not in second and second["AuthFailures"] == [1.0]
    assert second["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"]]
    assert second["_aws"]["Timestamp"] >= int(before * 1000)  # its own time, not the previous line's


def test_a_made_up_model_name_is_emitted_as_unknown_and_a_known_one_keeps_its_name(app, capsys):
    client, key = app.test_client(), issue_key(app, tier="premium")
    capsys.readouterr()
    assert ask(client, key, model="made-up-model-1").status_code == 404
    assert ask(client, key, model="echo").status_code == 200
    made_up, echo = emf_lines(capsys)
    assert (made_up["Provider"], made_up["Model"], made_up["Errors"]) == ("unknown", "unknown", [1.0])
    assert (echo["Provider"], echo["Model"]) == ("echo", "echo")


def test_a_thousand_made_up_model_names_make_one_dimension_value(app, capsys):
    gateway = app.extensions["gateway"]
    records = [_record(n, model=f"made-up-{n}", provider=f"provider-{n % 7}") for n in range(1000)]
    records += [_record(1000 + n, model=f"made-up-{n}") for n in range(1000)]  # a registered provider
    capsys.readouterr()
    metrics.emit_requests(gateway, records)
    lines = emf_lines(capsys)
    assert {(line["Provider"], line["Model"]) for line in lines} == {("unknown", "unknown"), ("openai", "unknown")}
    assert sum(len(line["Requests"]) for line in lines) == 2000  # every record still counted
    assert len(lines) == 20  # 100 values a line, in two dimension sets


def test_dimension_values_come_from_the_model_table_and_the_providers(tmp_path, capsys):
    table = tmp_path / "models.json"
    table.write_text(json.dumps({"models": {"fast": {"aliases": ["quick"], "routes": [
        {"provider": "openai", "model": "gpt-4o-mini-2024-07-18"}]}}}))
    gateway = make_app(tmp_path, {"model_table_path": str(table)},
                       plugins=(ProviderPlugin(FakeProvider()),)).extensions["gateway"]
    names_sent = ["fast", "quick", "gpt-4o-mini-2024-07-18", "gpt-4o", "fake-model", "echo", "not-a-model", ""]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(n, model=model) for n, model in enumerate(names_sent)])
    emitted = {line["Model"] for line in emf_lines(capsys)}
    assert emitted == {"fast", "quick", "gpt-4o-mini-2024-07-18", "gpt-4o", "fake-model", "echo", "unknown"}
    known = metrics.known_dimensions(gateway)
    assert known is metrics.known_dimensions(gateway)  # built once per app
    assert known.providers >= {"openai", "bedrock", "echo", "fake"} and "not-a-provider" not in known.providers


def test_mcp_tool_records_keep_their_bounded_names(tmp_path, capsys):
    gateway = make_app(tmp_path).extensions["gateway"]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(1, provider="mcp", model="mcp:search_products"),
                                    _record(2, provider="mcp", model="mcp:made_up_tool")])
    assert {(line["Provider"], line["Model"]) for line in emf_lines(capsys)} == {
        ("mcp", "mcp:search_products"), ("mcp", "unknown")}


def test_a_declared_answer_check_is_a_metric_of_1_when_flagged_and_0_when_passed(tmp_path, capsys):
    gateway = make_app(tmp_path, {"stage": "staging", "key_pepper": PEPPER},
                       plugins=(PromiseCheck(),)).extensions["gateway"]
    outcomes = [{"promises": "passed"}, {"promises": "flagged"}, {}, {"promises": "replaced"},
                {"promises": "blocked"}, {"promises": "passed", "undeclared": "flagged"}]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(n, timestamp=MINUTE + n, checks=checks)
                                    for n, checks in enumerate(outcomes)])
    [line] = emf_lines(capsys)
    assert line["AnswersWithPromises"] == [0.0, 1.0, 1.0, 1.0, 0.0]  # one value per answer it checked
    assert sum(line["AnswersWithPromises"]) / len(line["AnswersWithPromises"]) == 0.6  # Average: the flagged rate
    assert line["Requests"] == [1.0] * 6
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Stage", "Provider", "Model", "Tier"], ["Stage"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["AnswersWithPromises"] == "Count"
    assert set(units) == (set(names.ALL) - {"ProviderLatency", "AuthFailures"}) | {"AnswersWithPromises"}


def test_answer_checks_split_with_their_records_dimensions(tmp_path, capsys):
    gateway = make_app(tmp_path, plugins=(PromiseCheck(),)).extensions["gateway"]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(1, checks={"promises": "flagged"}),
                                    _record(2, model="gpt-4o", checks={"promises": "passed"}),
                                    _record(3, model="gpt-4o")])
    lines = {line["Model"]: line for line in emf_lines(capsys)}
    assert lines["gpt-4o-mini"]["AnswersWithPromises"] == [1.0]
    assert lines["gpt-4o"]["AnswersWithPromises"] == [0.0] and lines["gpt-4o"]["Requests"] == [1.0, 1.0]


def test_without_a_declaration_a_records_checks_emit_nothing(tmp_path, capsys):
    gateway = make_app(tmp_path).extensions["gateway"]
    capsys.readouterr()
    metrics.emit_requests(gateway, [_record(1, checks={"undeclared": "flagged"})])
    [line] = emf_lines(capsys)
    assert set(metric_names_of(line)) == set(names.ALL) - {"ProviderLatency", "AuthFailures"}


def test_a_checked_completion_emits_its_checks_metric_from_the_request_log_writer(tmp_path, capsys):
    provider = FakeProvider(outcomes=["we guarantee delivery", "no promises"])
    app = make_app(tmp_path, plugins=(ProviderPlugin(provider), PromiseCheck()))
    client, key = app.test_client(), issue_key(app)
    capsys.readouterr()
    assert ask(client, key).status_code == 200 and ask(client, key).status_code == 200
    assert [line["AnswersWithPromises"] for line in emf_lines(capsys)] == [[1.0], [0.0]]
