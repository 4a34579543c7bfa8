"""Refusals are counted, not written one by one: thousands of 429s of the gateway's own limits (per
minute, concurrency, on completions and on admit routes) become a handful of request-log rows whose
counts add up exactly, the EMF metrics count each of them, the usage API counts a row of N as N
requests, and nothing is lost when a served worker stops."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway import metric_names as names
from gateway.refusals import MINUTE, RefusalTally, folded, is_refusal
from gateway.request_log import RequestLogWriter, writer_for
from gateway.store.sqlite import SQLiteStore
from gateway.testing import chat, issue_key, make_app
from gateway.types import RequestLogRecord
from gateway.usage import percentile
from tests.fakes import servers

REFUSED = 2000


def metric_sum(out: str, name: str) -> float:
    """The sum of every value of metric ``name`` in the EMF lines of ``out``."""
    total = 0.0
    for line in out.splitlines():
        if line.startswith("{") and name in (emf := json.loads(line)):
            values = emf[name]
            total += sum(values) if isinstance(values, list) else values
    return total


def refusal(key: str = "k1", at: float | None = None, code: str = "rate_limit_exceeded", **extra) -> RequestLogRecord:
    return RequestLogRecord(request_id=os.urandom(8).hex(), correlation_id="c",
                            timestamp=time.time() if at is None else at, user_id="u1", api_key_id=key,
                            tier="free", status=429, error_code=code, **extra)


def test_what_counts_as_a_refusal_and_how_it_folds():
    assert is_refusal(refusal()) and is_refusal(refusal(code="concurrency_limit_exceeded"))
    assert not is_refusal(refusal(code="provider_rate_limited"))  # the upstream's 429: a real call
    tally = RefusalTally()
    assert tally.add(refusal(at=120.5, latency_ms=1.0)) is True  # the first: the writer must wake
    assert tally.add(refusal(at=179.9, latency_ms=3.0)) is False
    tally.add(refusal(at=180.0))
    tally.add(refusal(key="k2", at=121.0))
    assert tally.take(now=179.0) == []
    ended = {r.request_id: r for r in tally.take(now=180.0)}
    assert {rid: (r.count, r.timestamp) for rid, r in ended.items()} == {
        "refused-k1-2-rate_limit_exceeded": (2, 120.0), "refused-k2-2-rate_limit_exceeded": (1, 120.0)}
    assert ended["refused-k1-2-rate_limit_exceeded"].latency_ms == 2.0
    assert [r.request_id for r in tally.take()] == ["refused-k1-3-rate_limit_exceeded"]
    assert folded(refusal(at=60.0)).request_id == "refused-k1-1-rate_limit_exceeded"


def test_thousands_of_refusals_become_a_handful_of_rows_that_add_up_and_exact_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GATEWAY_METRICS_EMF", "true")
    app = make_app(tmp_path, {"request_log_writes": "background", "rate_limit_free_tier_rpm": 5})
    client, key = app.test_client(), issue_key(app)
    capsys.readouterr()
    statuses = Counter()
    for i in range(REFUSED):
        answer = chat(client, key) if i % 2 else client.get("/v1/models", headers={"X-API-Key": key})
        statuses[answer.status_code, "chat" if i % 2 else "models"] += 1
    gateway = app.extensions["gateway"]
    writer_for(gateway).close()  # what every worker does as it exits
    refused = statuses[429, "chat"] + statuses[429, "models"]
    assert refused >= REFUSED - 20 and statuses[200, "chat"] >= 1
    rows = gateway.store.records_for_user("alice")
    folded_rows = [r for r in rows if r.status == 429]
    assert sum(r.count for r in folded_rows) == refused
    assert len(folded_rows) <= 2  # one per minute the run spanned
    assert len(rows) == len(folded_rows) + statuses[200, "chat"]  # answers are written one by one
    out = capsys.readouterr().out
    assert metric_sum(out, names.RATE_LIMITED) == refused
    assert metric_sum(out, names.REQUESTS) == refused + statuses[200, "chat"]


def test_a_refusals_minute_is_written_when_it_ends_without_a_flush_and_the_current_one_waits(tmp_path):
    store = SQLiteStore(str(tmp_path / "log.db"))
    writer = RequestLogWriter(store, 90, background=True)
    writer.submit(refusal(at=time.time() - MINUTE - 1))  # a minute already over
    for _ in range(3):
        writer.submit(refusal(code="concurrency_limit_exceeded"))  # this minute: held until it ends
    deadline = time.monotonic() + 5
    while not store.records_for_user("u1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(r.error_code, r.count) for r in store.records_for_user("u1")] == [("rate_limit_exceeded", 1)]
    writer.flush()  # the usage API reads its own writes: it flushes what is folded so far
    writer.submit(refusal(code="concurrency_limit_exceeded"))
    writer.close()
    counts = {r.error_code: r.count for r in store.records_for_user("u1")}
    assert counts == {"rate_limit_exceeded": 1, "concurrency_limit_exceeded": 4}  # one row, added to twice
    assert len(store.records_for_user("u1")) == 2


def test_in_the_request_thread_each_refusal_is_added_to_its_row_at_once(tmp_path):
    app = make_app(tmp_path, {"rate_limit_free_tier_rpm": 1})  # sync writes, as on Lambda
    client, key = app.test_client(), issue_key(app)
    answers = [chat(client, key).status_code for _ in range(30)]
    rows = [r for r in app.extensions["gateway"].store.records_for_user("alice") if r.status == 429]
    assert sum(r.count for r in rows) == answers.count(429) >= 28 and len(rows) <= 2


def test_the_usage_api_counts_a_folded_row_as_its_requests(tmp_path):
    app = make_app(tmp_path, {"rate_limit_free_tier_rpm": 3})
    client, key = app.test_client(), issue_key(app)
    answers = [chat(client, key).status_code for _ in range(12)]
    usage = client.get("/api/v1/usage", headers={"X-API-Key": issue_key(app, "alice", tier="premium")}).get_json()
    assert usage["totals"]["rate_limited"] == answers.count(429) >= 9
    assert usage["totals"]["requests"] == len(answers) and usage["totals"]["errors"] == answers.count(429)


def test_percentiles_weigh_a_folded_records_mean_by_its_count():
    assert percentile([1.0, 100.0], 50, [9, 1]) == 1.0
    assert percentile([1.0, 100.0], 95, [9, 1]) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_a_served_gateway_loses_no_refusal_when_it_stops(tmp_path):
    app = make_app(tmp_path, {"rate_limit_free_tier_rpm": 2})
    key = issue_key(app, "flood")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(GATEWAY_SQLITE_PATH=str(tmp_path / "gateway.db"), GATEWAY_LOG_LEVEL="WARNING")
    # One pool of kept-alive connections, as SDKs keep: a 429 answered before the body is read must
    # leave its connection usable (gateway/http.py drains the body; without it a few requests of a
    # thousand met a closed connection and no answer).
    with servers.gateway_server(tmp_path, env, workers=2) as url, \
            httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        def one(i: int) -> int:
            return client.post("/v1/chat/completions", json={
                "model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(1000)))
    rows = SQLiteStore(str(tmp_path / "gateway.db")).records_for_user("flood")
    refused = [r for r in rows if r.status == 429]
    assert sum(r.count for r in refused) == statuses.count(429) >= 990
    assert len(refused) <= 4  # one per minute the run spanned, per worker at most
    assert len(rows) - len(refused) == statuses.count(200)


@pytest.mark.parametrize("code", ["rate_limit_exceeded", "concurrency_limit_exceeded"])
def test_a_folded_refusal_the_store_refuses_is_kept_in_a_log_line(tmp_path, caplog, code):
    class Refusing(SQLiteStore):
        def add_records(self, items):
            raise OSError("disk full")

    writer = RequestLogWriter(Refusing(str(tmp_path / "log.db")), 90, background=False)
    writer.submit(refusal(code=code))
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]
    assert line.record["count"] == 1 and line.record["error_code"] == code
