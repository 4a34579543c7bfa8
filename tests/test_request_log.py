"""The request log: one record per request, none lost (load, full queue, shutdown, store failure)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.request_log import RequestLogWriter, writer_for
from gateway.store.sqlite import SQLiteStore
from gateway.testing import issue_key, make_app, serve
from gateway.types import RequestLogRecord
from tests.fakes.net import free_port, wait_until_up

CHAT = "/v1/chat/completions"
DAY = 86_400


def ask(client, key, content="hello", model="echo"):
    return client.post(CHAT, headers={"X-API-Key": key},
                       json={"model": model, "messages": [{"role": "user", "content": content}]})


def record(n: int, user: str = "u1", timestamp: float | None = None) -> RequestLogRecord:
    return RequestLogRecord(request_id=f"r{n:05d}", correlation_id=f"c{n}",
                       timestamp=time.time() if timestamp is None else timestamp, user_id=user)


class SlowStore:
    """A SQLite store whose writes take a while (so the queue fills) and are counted by thread."""

    def __init__(self, path, delay=0.01):
        self.inner = SQLiteStore(str(path))
        self.delay = delay
        self.threads: set[str] = set()

    def put_record(self, rec, expires_at):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        self.inner.put_record(rec, expires_at)

    def put_records(self, items):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        self.inner.put_records(items)

    def purge_expired_records(self, now):
        return self.inner.purge_expired_records(now)


class GatedStore:
    """A SQLite store that logs every call, whose first write waits for ``open()`` (so records
    queue up behind it), and which can refuse batches and chosen records."""

    def __init__(self, path, refuse_batches=False, refused_ids=()):
        self.inner = SQLiteStore(str(path))
        self.refuse_batches, self.refused_ids = refuse_batches, set(refused_ids)
        self.calls: list[tuple[str, int]] = []
        self.writing, self._gate = threading.Event(), threading.Event()

    def open(self):
        self._gate.set()

    def _wait(self, call):
        self.calls.append(call)
        self.writing.set()
        assert self._gate.wait(timeout=60)

    def put_record(self, rec, expires_at):
        self._wait(("put_record", 1))
        if rec.request_id in self.refused_ids:
            raise sqlite3.OperationalError("disk I/O error")
        self.inner.put_record(rec, expires_at)

    def put_records(self, items):
        self._wait(("put_records", len(items)))
        if self.refuse_batches:
            raise sqlite3.OperationalError("database is locked")
        self.inner.put_records(items)

    def purge_expired_records(self, now):
        return 0


def queue_behind_a_blocked_write(writer, store, count):
    """Submit record 0 and wait until the writer is stuck storing it, then queue ``count`` more."""
    writer.submit(record(0))
    assert store.writing.wait(timeout=60)
    for n in range(1, count + 1):
        writer.submit(record(n))
    assert writer._queue.qsize() == count


class FailingStore:
    """Refuses the first ``failures`` writes (single records: it has no ``put_records``)."""

    def __init__(self, path, failures):
        self.inner = SQLiteStore(str(path))
        self.failures = failures
        self.attempts = 0

    def put_record(self, rec, expires_at):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        self.inner.put_record(rec, expires_at)

    def purge_expired_records(self, now):
        return 0


def test_record_count_equals_request_count_under_concurrent_load(tmp_path):
    app = make_app(tmp_path, {"request_log_writes": "background", "rate_limit_free_tier_rpm": 10_000})
    users = {f"user{i}": issue_key(app, user=f"user{i}") for i in range(4)}
    per_user = 40

    with serve(app) as url:
        def burst(user):
            with httpx.Client(base_url=url, timeout=30) as http:
                statuses = [http.post(CHAT, headers={"X-API-Key": users[user]},
                                      json={"model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]}
                                      ).status_code for i in range(per_user)]
            return statuses

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(burst, [u for u in users for _ in range(2)]))
    assert all(status == 200 for statuses in results for status in statuses)
    gateway = app.extensions["gateway"]
    writer = writer_for(gateway)
    assert writer.background
    writer.flush()
    for user in users:
        rows = gateway.store.records_for_user(user)
        assert len(rows) == 2 * per_user
        assert len({r.request_id for r in rows}) == len(rows)
    writer.close()


def test_served_workers_write_every_record_before_they_exit(tmp_path):
    db = tmp_path / "served.db"
    key = issue_key(make_app(tmp_path, {"sqlite_path": str(db)}), user="load", tier="premium")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
           "GATEWAY_SQLITE_PATH": str(db), "GATEWAY_REQUEST_LOG_WRITES": "background", "GATEWAY_METRICS_EMF": "false"}
    gateway_cmd = [sys.executable, "-m", "gateway.cli"]
    port = free_port()
    server = subprocess.Popen([*gateway_cmd, "serve", "--port", str(port), "--workers", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", server)

        def one(i):
            return httpx.post(f"{url}{CHAT}", headers={"X-API-Key": key}, timeout=30,
                              json={"model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]}).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            assert set(pool.map(one, range(40))) == {200}
    finally:
        server.send_signal(signal.SIGTERM)  # graceful stop: as workers exit, close_at_exit drains their queues
        server.wait(timeout=60)
    assert len(SQLiteStore(str(db)).records_for_user("load")) == 40


def test_background_writes_happen_off_the_request_thread(tmp_path):
    store = SlowStore(tmp_path / "log.db", delay=0.05)
    writer = RequestLogWriter(store, 90, background=True, queue_size=100)
    started = time.perf_counter()
    for n in range(5):
        writer.submit(record(n))
    assert time.perf_counter() - started < 0.2  # five 50 ms writes did not run here
    writer.close()
    assert store.threads == {"request-log-writer"}
    assert len(store.inner.records_for_user("u1")) == 5


def test_a_full_queue_writes_in_the_callers_thread_and_loses_nothing(tmp_path):
    store = SlowStore(tmp_path / "log.db", delay=0.005)
    writer = RequestLogWriter(store, 90, background=True, queue_size=2)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="request") as pool:
        list(pool.map(writer.submit, [record(n) for n in range(120)]))
    writer.close()
    assert "request-log-writer" in store.threads
    assert any(name.startswith("request_") for name in store.threads)  # overflow written inline
    assert len(store.inner.records_for_user("u1")) == 120


def test_a_backlog_is_written_without_gathering_and_close_drains_it_at_full_speed(tmp_path):
    store = SQLiteStore(str(tmp_path / "log.db"))
    writer = RequestLogWriter(store, 90, background=True, queue_size=10_000, batch_wait=5.0)
    for n in range(1000):
        writer.submit(record(n))
    started = time.perf_counter()
    writer.close()  # ten batches: a 5 s gather before each would take 45 s more
    assert time.perf_counter() - started < 3.0
    assert len(store.records_for_user("u1")) == 1000


def test_close_drains_the_queue_and_later_records_are_written_inline(tmp_path):
    store = SlowStore(tmp_path / "log.db", delay=0.01)
    writer = RequestLogWriter(store, 90, background=True, queue_size=1000)
    for n in range(50):
        writer.submit(record(n))
    writer.close()  # what atexit calls at shutdown
    assert len(store.inner.records_for_user("u1")) == 50
    writer.submit(record(50))
    assert len(store.inner.records_for_user("u1")) == 51
    writer.close()  # idempotent


def test_on_lambda_writes_complete_inside_the_request(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ai-gateway-dev")
    app = make_app(tmp_path, {"request_log_writes": "auto"})
    writer = writer_for(app.extensions["gateway"])
    assert not writer.background
    ask(app.test_client(), issue_key(app))
    assert writer._thread is None
    assert len(app.extensions["gateway"].store.records_for_user("alice")) == 1


def test_elsewhere_auto_means_background(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    app = make_app(tmp_path, {"request_log_writes": "auto"})
    assert writer_for(app.extensions["gateway"]).background


def test_a_refused_write_is_retried_once(tmp_path, caplog):
    store = FailingStore(tmp_path / "log.db", failures=1)
    RequestLogWriter(store, 90, background=False).write(record(1))
    assert store.attempts == 2 and len(store.inner.records_for_user("u1")) == 1
    assert not [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]


def test_store_failure_falls_back_to_a_log_line_and_a_metric(tmp_path, caplog, capsys):
    app = make_app(tmp_path, {"metrics_emf": True})
    gateway = app.extensions["gateway"]
    key = issue_key(app)

    def refuse(rec, expires_at):
        raise sqlite3.OperationalError("disk I/O error")

    gateway.store.put_record = refuse
    with caplog.at_level(logging.ERROR, logger="gateway.request_log"):
        response = ask(app.test_client(), key, "kept in the log")
    assert response.status_code == 200  # the caller never notices
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]
    from gateway.logs import JSONFormatter

    logged = json.loads(JSONFormatter().format(line))
    kept = logged["record"]
    assert kept["request_id"] == response.get_json()["id"].removeprefix("chatcmpl-")
    assert kept["user_id"] == "alice" and kept["model"] == "echo" and kept["prompt_tokens"] == 4
    assert kept["expiration_timestamp"] == int(kept["timestamp"]) + 90 * DAY
    assert logged["error"] == "OperationalError" and logged["level"] == "ERROR"
    assert logged["correlation_id"] == kept["correlation_id"] == response.headers["X-Correlation-ID"]
    emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if "RequestLogFallbacks" in x]
    assert len(emf) == 1 and emf[0]["RequestLogFallbacks"] == [1.0] and emf[0]["Stage"] == "dev"


def test_every_completion_is_recorded_including_failures_and_rate_limits(tmp_path):
    app = make_app(tmp_path, {"rate_limit_free_tier_rpm": 2})
    client, key = app.test_client(), issue_key(app)
    assert ask(client, key).status_code == 200
    assert ask(client, key, model="nope").status_code == 404
    assert ask(client, key).status_code == 429
    rows = sorted(app.extensions["gateway"].store.records_for_user("alice"), key=lambda r: r.status)
    assert [(r.status, r.error_code, r.count) for r in rows] == [(200, "", 1), (404, "model_not_found", 1),
                                                                  (429, "rate_limit_exceeded", 1)]
    assert rows[0].correlation_id and rows[0].latency_ms > 0 and rows[0].api_key_id
    assert rows[2].request_id.startswith(f"refused-{rows[0].api_key_id}-")  # the refusal is folded


def test_prompts_and_answers_are_not_stored_by_default(tmp_path):
    app = make_app(tmp_path)
    ask(app.test_client(), issue_key(app), "my email is a@b.example")
    [row] = app.extensions["gateway"].store.records_for_user("alice")
    assert (row.prompt_text, row.completion_text) == ("", "")


def test_stored_content_is_redacted_by_the_hook(tmp_path):
    from gateway import hookimpl

    class Orders:
        @hookimpl
        def gateway_redact(self, text):
            from plugins.analytics import redact

            return redact(text).replace("ORD-123456", "[order]")

    secret = "gw_test_0123abcd_" + "s" * 30
    content = f"mail jo@corp.example card 4111 1111 1111 1111 key {secret} order ORD-123456"
    plain = make_app(tmp_path / "a", {"request_log_content": True})
    ask(plain.test_client(), issue_key(plain), content)
    [row] = plain.extensions["gateway"].store.records_for_user("alice")
    assert row.prompt_text == "user: mail [email] card [card-number] key [api-key] order ORD-123456"
    assert row.completion_text == "mail [email] card [card-number] key [api-key] order ORD-123456"
    custom = make_app(tmp_path / "b", {"request_log_content": True}, plugins=(Orders(),))
    ask(custom.test_client(), issue_key(custom), content)
    [row] = custom.extensions["gateway"].store.records_for_user("alice")
    assert row.completion_text.endswith("order [order]") and "jo@corp" not in row.completion_text


def test_purge_command_deletes_expired_records(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gateway.cli import build_cli
    from gateway.config import load_settings
    from gateway.plugins import build_plugin_manager

    db = tmp_path / "cli.db"
    store = SQLiteStore(str(db))
    store.put_record(record(1, timestamp=1000.0), expires_at=2000)
    store.put_record(record(2), expires_at=int(time.time()) + DAY)
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(db))
    result = CliRunner().invoke(build_cli(build_plugin_manager(load_settings())), ["analytics", "purge"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "purged 1 expired records"
    assert [r.request_id for r in store.records_for_user("u1")] == ["r00002"]


def test_writer_purges_expired_records_on_its_own_about_hourly(tmp_path):
    store = SQLiteStore(str(tmp_path / "log.db"))
    store.put_record(record(1, timestamp=1000.0), expires_at=2000)
    now = [5000.0]
    writer = RequestLogWriter(store, 90, background=False, clock=lambda: now[0])
    writer.write(record(2))
    assert [r.request_id for r in store.records_for_user("u1")] == ["r00002"]
    store.put_record(record(3, timestamp=1000.0), expires_at=2000)
    writer.write(record(4))  # within the hour: no second purge
    assert len(store.records_for_user("u1")) == 3
    now[0] += 3599
    writer.write(record(5))  # still within the hour
    assert len(store.records_for_user("u1")) == 4
    now[0] += 2
    writer.write(record(6))
    assert [r.request_id for r in store.records_for_user("u1")] == ["r00002", "r00004", "r00005", "r00006"]


def test_an_older_sqlite_file_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE request_log (request_id TEXT PRIMARY KEY, correlation_id TEXT NOT NULL,
            timestamp REAL NOT NULL, user_id TEXT NOT NULL, api_key_id TEXT NOT NULL, tier TEXT NOT NULL,
            model TEXT NOT NULL, provider TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cost REAL NOT NULL, latency_ms REAL NOT NULL,
            upstream_latency_ms REAL NOT NULL, status INTEGER NOT NULL, error_code TEXT NOT NULL,
            streamed INTEGER NOT NULL, cached INTEGER NOT NULL, expires_at INTEGER NOT NULL);
        INSERT INTO request_log VALUES ('old', 'c', 5.0, 'u1', 'k', 'free', 'echo', 'echo', 1, 1, 0, 1, 0,
            200, '', 0, 0, 99999999999);
    """)
    conn.close()
    store = SQLiteStore(str(path))
    store.put_record(record(1, timestamp=6.0), expires_at=99999999999)
    old, new = store.records_for_user("u1")
    assert (old.request_id, old.saved_cost, old.prompt_text) == ("old", 0.0, "")
    assert new.request_id == "r00001"


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_usage_api_reads_its_own_writes(tmp_path, mode):
    app = make_app(tmp_path, {"request_log_writes": mode})
    client, key = app.test_client(), issue_key(app)
    for _ in range(3):
        ask(client, key)
    assert client.get("/api/v1/usage", headers={"X-API-Key": key}).get_json()["totals"]["requests"] == 3
    writer_for(app.extensions["gateway"]).close()


def test_a_fallback_line_from_the_writer_thread_carries_the_requests_correlation_id(tmp_path, caplog):
    from gateway.logs import JSONFormatter

    writer = RequestLogWriter(FailingStore(tmp_path / "log.db", failures=2), 90, background=True)
    with caplog.at_level(logging.ERROR, logger="gateway.request_log"):
        writer.submit(record(7))
        writer.close()
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]
    assert line.threadName == "request-log-writer"
    assert json.loads(JSONFormatter().format(line))["correlation_id"] == "c7"


def test_the_writer_thread_survives_a_failing_fallback(tmp_path):
    store = FailingStore(tmp_path / "log.db", failures=2)
    calls = []

    def broken_metric():
        calls.append(1)
        raise RuntimeError("metrics sink down")

    writer = RequestLogWriter(store, 90, background=True, on_fallback=broken_metric)
    writer.submit(record(1))  # refused twice: fallback line, then the metric raises
    writer.flush()
    writer.submit(record(2))
    writer.flush()
    writer.close()
    assert calls == [1]
    assert [r.request_id for r in store.inner.records_for_user("u1")] == ["r00002"]


def test_the_writer_takes_what_is_already_queued_as_one_batch_of_at_most_100(tmp_path):
    store = GatedStore(tmp_path / "log.db")
    batches: list[list[str]] = []
    writer = RequestLogWriter(store, 90, background=True,
                              on_records=lambda records: batches.append([r.request_id for r in records]))
    queue_behind_a_blocked_write(writer, store, 150)
    store.open()
    writer.flush()
    assert store.calls == [("put_record", 1), ("put_records", 100), ("put_records", 50)]
    assert [len(batch) for batch in batches] == [1, 100, 50]  # the metrics go out per batch too
    assert [r.request_id for r in store.inner.records_for_user("u1")] == [f"r{n:05d}" for n in range(151)]
    assert writer._queue.unfinished_tasks == 0
    writer.close()


def test_at_low_load_each_record_is_written_alone_without_waiting_for_a_batch(tmp_path):
    store = GatedStore(tmp_path / "log.db")
    store.open()
    writer = RequestLogWriter(store, 90, background=True)
    for n in range(3):
        writer.submit(record(n))
        writer.flush()  # returns once this one record is stored: nothing waits for company
        assert len(store.inner.records_for_user("u1")) == n + 1
    assert store.calls == [("put_record", 1)] * 3
    writer.close()


def test_a_refused_batch_is_written_record_by_record(tmp_path, caplog):
    store = GatedStore(tmp_path / "log.db", refuse_batches=True)
    writer = RequestLogWriter(store, 90, background=True)
    queue_behind_a_blocked_write(writer, store, 5)
    with caplog.at_level(logging.WARNING, logger="gateway.request_log"):
        store.open()
        writer.close()
    assert store.calls == [("put_record", 1), ("put_records", 5)] + [("put_record", 1)] * 5
    assert len(store.inner.records_for_user("u1")) == 6
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (warning.error, warning.batch_size) == ("OperationalError", 5)
    assert not [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]


def test_a_record_the_store_refuses_does_not_take_its_batch_with_it(tmp_path, caplog):
    store = GatedStore(tmp_path / "log.db", refuse_batches=True, refused_ids={"r00003"})
    fallbacks = []
    writer = RequestLogWriter(store, 90, background=True, on_fallback=lambda: fallbacks.append(1))
    queue_behind_a_blocked_write(writer, store, 5)
    with caplog.at_level(logging.ERROR, logger="gateway.request_log"):
        store.open()
        writer.close()
    assert store.calls.count(("put_record", 1)) == 1 + 4 + 2  # record 3 was tried twice
    assert [r.request_id for r in store.inner.records_for_user("u1")] == ["r00000", "r00001", "r00002",
                                                                        "r00004", "r00005"]
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]
    assert line.record["request_id"] == "r00003" and line.correlation_id == "c3"
    assert fallbacks == [1]


def test_sqlite_refuses_a_batch_with_a_bad_record_whole_and_the_writer_keeps_the_good_ones(tmp_path, caplog):
    bad = RequestLogRecord(request_id="bad", correlation_id="c-bad", timestamp=time.time(), user_id=None)
    sqlite = SQLiteStore(str(tmp_path / "alone.db"))
    with pytest.raises(sqlite3.IntegrityError):  # user_id is NOT NULL
        sqlite.put_records([(record(1), 2_000_000_000), (bad, 2_000_000_000), (record(2), 2_000_000_000)])
    assert sqlite.records_for_user("u1") == []  # one transaction: none of it was kept

    store = GatedStore(tmp_path / "log.db")  # batches go to SQLite itself
    writer = RequestLogWriter(store, 90, background=True)
    queue_behind_a_blocked_write(writer, store, 1)
    writer.submit(bad)
    writer.submit(record(2))
    with caplog.at_level(logging.ERROR, logger="gateway.request_log"):
        store.open()
        writer.close()
    assert store.calls == [("put_record", 1), ("put_records", 3)] + [("put_record", 1)] * 4
    assert [r.request_id for r in store.inner.records_for_user("u1")] == ["r00000", "r00001", "r00002"]
    [line] = [r for r in caplog.records if getattr(r, "event", "") == "request_log_fallback"]
    assert line.record["request_id"] == "bad" and line.error == "IntegrityError"


def test_a_record_queued_behind_the_stop_marker_is_written_and_marked_done(tmp_path):
    store = GatedStore(tmp_path / "log.db")
    writer = RequestLogWriter(store, 90, background=True)
    queue_behind_a_blocked_write(writer, store, 0)
    closing = threading.Thread(target=writer.close)
    closing.start()
    while writer._queue.qsize() == 0:  # close() has queued its stop marker
        time.sleep(0.001)
    writer._queue.put_nowait(record(1))  # what a submit racing close() can leave behind it
    store.open()
    closing.join(timeout=60)
    assert not closing.is_alive()
    assert len(store.inner.records_for_user("u1")) == 2
    assert writer._queue.unfinished_tasks == 0
    writer.flush()  # returns: every item taken was marked done


def test_records_gather_for_the_batch_wait_and_flush_cuts_it_short(tmp_path):
    store = GatedStore(tmp_path / "log.db")
    store.open()
    writer = RequestLogWriter(store, 90, background=True, batch_wait=30.0)
    for n in range(5):
        writer.submit(record(n))
    started = time.monotonic()
    writer.flush()
    assert time.monotonic() - started < 10  # woken by flush, not after the 30 s gathering time
    assert store.calls == [("put_records", 5)]
    assert len(store.inner.records_for_user("u1")) == 5
    writer.close()


def test_close_writes_a_gathering_batch_without_waiting_it_out(tmp_path):
    store = GatedStore(tmp_path / "log.db")
    store.open()
    writer = RequestLogWriter(store, 90, background=True, batch_wait=30.0)
    writer.submit(record(1))
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 10
    assert [r.request_id for r in store.inner.records_for_user("u1")] == ["r00001"]


def test_the_background_writer_gathers_for_the_configured_time(tmp_path):
    gateway = make_app(tmp_path, {"request_log_writes": "background",
                                  "request_log_batch_wait_ms": 7}).extensions["gateway"]
    assert writer_for(gateway).batch_wait == 0.007
