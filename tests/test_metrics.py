"""CloudWatch Embedded Metric Format lines: they parse, carry the right dimensions and values."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway import metric_names as names
from gateway.errors import ProviderError
from gateway.metrics import REQUEST_LOG_FALLBACKS
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app

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
    assert (missing["Errors"], missing["Provider"], missing["Model"]) == ([1.0], "unknown", "missing")
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
    original = metrics.emit_request

    def spy(gateway, record):
        threads.append(threading.current_thread().name)
        original(gateway, record)

    monkeypatch.setattr(metrics, "emit_request", spy)
    capsys.readouterr()
    ask(app.test_client(), issue_key(app), model="echo")
    writer_for(app.extensions["gateway"]).close()
    assert threads == ["request-log-writer"]
    [line] = emf_lines(capsys)
    assert line["Provider"] == "echo" and line["Requests"] == [1.0]
