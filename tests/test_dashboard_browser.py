"""The dashboard in headless Chromium: it loads offline, draws the API's data, logs no error."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.errors import ProviderError
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app, serve
from tests.fakes.chromium import Chromium, executable

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHARTS = ("chart-requests", "chart-latency", "chart-tokens", "chart-cost", "chart-percentiles", "chart-users")

if executable() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs the chromium package (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture
def busy_app(tmp_path):
    """An app with traffic from two users on two providers, one provider failure and one 404."""
    provider = FakeProvider(outcomes=["ok", ProviderError("upstream down", code="upstream_error"), "ok"])
    app = make_app(tmp_path, plugins=(ProviderPlugin(provider),))
    client = app.test_client()
    for user, model, count in (("alice", "echo", 3), ("bob", "fake-model", 3), ("carol", "echo", 1)):
        key = issue_key(app, user=user)
        for i in range(count):
            client.post("/v1/chat/completions", headers={"X-API-Key": key},
                        json={"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]})
    client.post("/v1/chat/completions", headers={"X-API-Key": issue_key(app, user="dave")},
                json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
    return app


def check_answers(app) -> None:
    """Record what an answer check said of some answers, as the pipeline does: bob's two fake-model
    answers were checked for grounding (one flagged), carol's echo answer too (passed)."""
    store = app.extensions["gateway"].store
    answered = [r for user in ("bob", "carol") for r in store.records_for_user(user) if r.status == 200]
    assert len(answered) == 3
    store.put_records([(replace(record, checks={"grounding": outcome}), int(time.time()) + 3600)
                       for record, outcome in zip(answered, ("flagged", "passed", "passed"), strict=True)])


def test_dashboard_draws_the_metrics_api_in_headless_chromium(busy_app, tmp_path):
    admin_key = issue_key(busy_app, user="ops", permissions=("admin",))
    check_answers(busy_app)
    with serve(busy_app) as url, Chromium(tmp_path / "profile") as browser:
        api = httpx.get(f"{url}/api/v1/admin/metrics", headers={"X-API-Key": admin_key}).json()
        assert api["totals"]["requests"] == 8 and api["totals"]["errors"] == 2

        browser.send("Emulation.setDeviceMetricsOverride", width=1400, height=1600, deviceScaleFactor=1,
                     mobile=False)
        browser.open(f"{url}/dashboard")
        assert browser.evaluate("typeof window.Chart") == "function"  # served locally, no CDN
        assert browser.evaluate("document.getElementById('status').textContent").startswith("Enter an admin key")

        browser.evaluate(f"document.getElementById('admin-key').value = {admin_key!r};"
                         "document.getElementById('key-form').requestSubmit()")
        browser.wait_for("window.gatewayDashboard.loaded === true")

        # The key lives in this tab's sessionStorage only, and left the input.
        assert browser.evaluate("sessionStorage.getItem('gatewayAdminKey')") == admin_key
        assert browser.evaluate("localStorage.length + document.cookie.length") == 0
        assert browser.evaluate("document.getElementById('admin-key').value") == ""

        drawn = browser.evaluate("(() => { const ids = " + json.dumps(CHARTS) + """;
            const out = {};
            for (const id of ids) {
                const chart = Chart.getChart(id);
                const canvas = document.getElementById(id);
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) painted++; }
                out[id] = {labels: chart.data.labels, datasets: chart.data.datasets.map(
                    d => ({label: d.label, data: d.data})), painted: painted};
            }
            return out;
        })()""")
        for chart_id in CHARTS:
            assert drawn[chart_id]["painted"] > 500, f"{chart_id} drew nothing"

        series = {s["name"]: s for s in api["timeseries"]["series"]}
        requests = {d["label"]: d["data"] for d in drawn["chart-requests"]["datasets"]}
        assert requests == {name: s["requests"] for name, s in series.items()}
        assert sum(sum(v) for v in requests.values()) == 8
        assert {"echo/echo", "fake/fake-model", "unknown/no-such-model"} == set(requests)
        tokens = {d["label"]: d["data"] for d in drawn["chart-tokens"]["datasets"]}
        assert tokens == {name: s["tokens"] for name, s in series.items()}
        percentiles = drawn["chart-percentiles"]
        assert [d["label"] for d in percentiles["datasets"]] == ["p50", "p95", "p99"]
        assert percentiles["labels"] == [f"{m['provider']}/{m['model']}" for m in api["by_provider_model"]]
        assert drawn["chart-users"]["labels"] == [u["user"] for u in api["top_users"]]
        assert drawn["chart-users"]["labels"][0] == "bob"  # the only paying user

        # Each answer check's flagged rate per provider/model, from the checked records; a dash where it never ran.
        headers = browser.evaluate("[...document.querySelectorAll('#table-models thead th')].map(th => th.textContent)")
        assert headers[-1] == "grounding flagged" and headers.count("grounding flagged") == 1
        cells = browser.evaluate("Object.fromEntries([...document.querySelectorAll('#table-models tbody tr')].map("
                                 "tr => [tr.children[0].textContent + '/' + tr.children[1].textContent,"
                                 " tr.lastElementChild.textContent]))")
        assert cells == {"fake/fake-model": "1 / 2 (50.0%)", "echo/echo": "0 / 1 (0.0%)",
                         "unknown/no-such-model": "–"}
        assert {f"{m['provider']}/{m['model']}": m["checks"].get("grounding") for m in api["by_provider_model"]} == {
            "fake/fake-model": {"checked": 2, "flagged": 1, "rate": 0.5},
            "echo/echo": {"checked": 1, "flagged": 0, "rate": 0.0}, "unknown/no-such-model": None}
        browser.evaluate("document.getElementById('window').dispatchEvent(new Event('change'))")
        browser.wait_for("document.getElementById('status').textContent.startsWith('Showing')")
        assert browser.evaluate("document.querySelectorAll('#table-models thead th[data-check]').length") == 1

        error_rows = browser.evaluate("[...document.querySelectorAll('#table-errors tbody tr')]"
                                      ".map(tr => tr.children[5].textContent)")
        assert sorted(error_rows) == ["model_not_found", "upstream_error"]
        assert browser.evaluate("document.getElementById('totals').textContent").startswith("8requests")

        browser.screenshot(ARTIFACTS / "dashboard.png")
        assert browser.console_errors() == []
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_dashboard_page_is_public_but_holds_no_data_and_forbids_foreign_scripts(busy_app):
    response = busy_app.test_client().get("/dashboard")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "alice" not in page and "http://" not in page and "https://" not in page
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    vendor = busy_app.test_client().get("/dashboard/static/vendor/chart.umd.min.js")
    assert vendor.status_code == 200 and b"Chart.js v4" in vendor.data[:200]
