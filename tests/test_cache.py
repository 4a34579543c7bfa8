"""The response cache: when it answers, for whom, and on each storage (SQLite, memory, Redis, DynamoDB)."""
from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from gateway.cache import HIT, MISS, CachedAnswer, MemoryBackend, SQLiteBackend, backend_for, cache_uri, open_backend
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import ChatAnswer, Usage
from tests.fakes.net import free_port

CHAT = "/v1/chat/completions"


def ask(client, key, content="same question", headers=None, **body):
    return client.post(CHAT, headers={"X-API-Key": key, **(headers or {})},
                       json={"model": "fake-model", "messages": [{"role": "user", "content": content}], **body})


@pytest.fixture
def provider():
    return FakeProvider(outcomes=[f"answer {i}" for i in range(20)])


@pytest.fixture
def cached_app(tmp_path, provider):
    return make_app(tmp_path, plugins=(ProviderPlugin(provider),))


def records(app, user="alice"):
    return app.extensions["gateway"].store.records_for_user(user)


def test_temperature_zero_is_answered_from_the_cache_the_second_time(cached_app, provider):
    client, key = cached_app.test_client(), issue_key(cached_app)
    first = ask(client, key, temperature=0)
    second = ask(client, key, temperature=0)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == (MISS, HIT)
    assert first.get_json()["choices"][0]["message"]["content"] == "answer 0"
    assert second.get_json()["choices"][0]["message"]["content"] == "answer 0"
    assert second.headers["X-Gateway-Provider"] == "fake" and len(provider.calls) == 1
    paid, free = records(cached_app)
    assert paid.cost == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6) and not paid.cached
    assert (free.cached, free.cost, free.saved_cost) == (True, 0.0, paid.cost)
    assert (free.prompt_tokens, free.completion_tokens, free.provider) == (10, 5, "fake")
    assert free.upstream_latency_ms == 0


def test_native_api_reports_the_cached_answer_at_no_cost(cached_app):
    client, key = cached_app.test_client(), issue_key(cached_app)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "q"}], "temperature": 0}
    client.post("/api/v1/completions", headers={"X-API-Key": key}, json=body)
    hit = client.post("/api/v1/completions", headers={"X-API-Key": key}, json=body)
    assert hit.headers["X-Cache"] == HIT
    assert hit.get_json()["cost"] == 0 and hit.get_json()["content"] == "answer 0"


def test_other_temperatures_are_not_cached_unless_opted_in(cached_app, provider):
    client, key = cached_app.test_client(), issue_key(cached_app)
    assert "X-Cache" not in ask(client, key, temperature=0.7).headers
    assert "X-Cache" not in ask(client, key).headers
    assert len(provider.calls) == 2
    opted = {"X-Gateway-Cache": "on"}
    assert ask(client, key, headers=opted, temperature=0.7).headers["X-Cache"] == MISS
    hit = ask(client, key, headers=opted, temperature=0.7)
    assert hit.headers["X-Cache"] == HIT and hit.get_json()["choices"][0]["message"]["content"] == "answer 2"


def test_one_keys_cached_answer_never_reaches_another_key(cached_app, provider):
    client = cached_app.test_client()
    alice, bob = issue_key(cached_app, user="alice"), issue_key(cached_app, user="bob")
    alice_second_key = issue_key(cached_app, user="alice")
    ask(client, alice, "secret plans", temperature=0)
    for other in (bob, alice_second_key):
        answer = ask(client, other, "secret plans", temperature=0)
        assert answer.headers["X-Cache"] == MISS
        assert answer.get_json()["choices"][0]["message"]["content"] != "answer 0"
    assert len(provider.calls) == 3
    assert ask(client, alice, "secret plans", temperature=0).headers["X-Cache"] == HIT


def test_any_difference_in_the_request_is_a_different_entry(cached_app):
    client, key = cached_app.test_client(), issue_key(cached_app)
    ask(client, key, "q", temperature=0)
    assert ask(client, key, "q ", temperature=0).headers["X-Cache"] == MISS
    assert ask(client, key, "q", temperature=0, max_tokens=5).headers["X-Cache"] == MISS
    assert ask(client, key, "q", temperature=0.0).headers["X-Cache"] == HIT  # 0 and 0.0 are one request


def test_cache_control_no_cache_refreshes_and_no_store_skips(cached_app, provider):
    client, key = cached_app.test_client(), issue_key(cached_app)
    ask(client, key, temperature=0)
    fresh = ask(client, key, headers={"Cache-Control": "no-cache"}, temperature=0)
    assert fresh.headers["X-Cache"] == MISS and fresh.get_json()["choices"][0]["message"]["content"] == "answer 1"
    assert ask(client, key, temperature=0).get_json()["choices"][0]["message"]["content"] == "answer 1"
    skipped = ask(client, key, "new", headers={"Cache-Control": "no-store"}, temperature=0)
    assert "X-Cache" not in skipped.headers
    assert ask(client, key, "new", temperature=0).headers["X-Cache"] == MISS
    assert len(provider.calls) == 4


def test_failures_are_not_cached(tmp_path):
    from gateway.errors import ProviderError

    provider = FakeProvider(outcomes=[ProviderError("down", code="upstream_error"), "recovered"])
    app = make_app(tmp_path, plugins=(ProviderPlugin(provider),))
    client, key = app.test_client(), issue_key(app)
    assert ask(client, key, temperature=0).status_code == 502
    answer = ask(client, key, temperature=0)
    assert answer.status_code == 200 and answer.headers["X-Cache"] == MISS


def test_cache_off(tmp_path, provider):
    app = make_app(tmp_path, {"response_cache": ""}, plugins=(ProviderPlugin(provider),))
    client, key = app.test_client(), issue_key(app)
    assert "X-Cache" not in ask(client, key, temperature=0).headers
    assert "X-Cache" not in ask(client, key, temperature=0).headers
    assert len(provider.calls) == 2


def test_a_cache_that_is_down_costs_a_call_never_the_answer(tmp_path, provider):
    port = free_port()  # nothing listens here
    app = make_app(tmp_path, {"response_cache": f"redis://127.0.0.1:{port}/0"}, plugins=(ProviderPlugin(provider),))
    client, key = app.test_client(), issue_key(app)
    assert ask(client, key, temperature=0).status_code == 200
    assert ask(client, key, temperature=0).headers["X-Cache"] == MISS
    assert len(provider.calls) == 2


def test_memory_backend_is_a_bounded_lru_with_expiry():
    lru = MemoryBackend(max_entries=2)
    lru.set("a", b"1", ttl=60)
    lru.set("b", b"2", ttl=60)
    assert lru.get("a") == b"1"  # a is now the most recent
    lru.set("c", b"3", ttl=60)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (b"1", None, b"3", 2)
    lru.set("d", b"4", ttl=0)
    assert lru.get("d") is None


@pytest.mark.parametrize("uri,message", [
    ("memory://?max_entries=0", "max_entries"), ("memory://?max_entries=lots", "max_entries"),
    ("dynamodb://", "dynamodb://table"), ("sqlite:///c.db?max_entries=0", "max_entries"),
    ("sqlite://c.db", "sqlite:///"), ("sqlite:///", "sqlite:///"), ("auto", "use auto"),
])
def test_bad_cache_uris_stop_start_up(uri, message):
    with pytest.raises(ConfigError, match=message):
        open_backend(uri)


def test_setting_rejects_unknown_schemes(tmp_path):
    with pytest.raises(ConfigError, match="response_cache"):
        make_app(tmp_path, {"response_cache": "memcached://x"})


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A redis-server of our own on a free port, for this module."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs redis-server (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start within 30 s"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_redis_cache_is_shared_by_two_apps_and_isolated_by_key(tmp_path, redis_url):
    provider = FakeProvider(outcomes=["from redis", "other key"])
    config = {"response_cache": redis_url, "sqlite_path": str(tmp_path / "shared.db")}
    worker_a = make_app(tmp_path, config, plugins=(ProviderPlugin(provider),))
    worker_b = make_app(tmp_path, config, plugins=(ProviderPlugin(provider),))
    key = issue_key(worker_a)
    assert ask(worker_a.test_client(), key, "via redis", temperature=0).headers["X-Cache"] == MISS
    hit = ask(worker_b.test_client(), key, "via redis", temperature=0)
    assert hit.headers["X-Cache"] == HIT and hit.get_json()["choices"][0]["message"]["content"] == "from redis"
    other = ask(worker_b.test_client(), issue_key(worker_a, user="bob"), "via redis", temperature=0)
    assert other.headers["X-Cache"] == MISS and len(provider.calls) == 2
    import redis

    ttl = redis.Redis.from_url(redis_url).ttl(next(iter(redis.Redis.from_url(redis_url).keys("gateway:cache:*"))))
    assert 0 < ttl <= 3600


def test_dynamodb_cache_round_trips_and_ignores_expired_items(monkeypatch):
    from moto import mock_aws

    from tests.contract.conftest import FAKE_AWS

    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        backend = open_backend("dynamodb://gateway-response-cache", "us-east-1")
        backend.create_table()
        answer = CachedAnswer(ChatAnswer("cached text", "m", usage=Usage(3, 4, 1)), "openai", "gpt-4o-mini", 0.25)
        backend.set("k1:abc", answer.to_bytes(), ttl=60)
        assert CachedAnswer.from_bytes(backend.get("k1:abc")) == answer
        assert backend.get("k2:abc") is None
        backend.set("k1:old", answer.to_bytes(), ttl=-5)  # expired, not yet deleted by TTL
        assert backend.get("k1:old") is None
        ttl = backend.client.describe_time_to_live(TableName="gateway-response-cache")
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "expiresAt"


def gateway_of(app):
    return app.extensions["gateway"]


def test_the_default_on_the_sqlite_store_is_a_sqlite_file_beside_it(tmp_path):
    app = make_app(tmp_path)
    settings = gateway_of(app).settings
    assert settings.response_cache == "auto"
    assert cache_uri(settings) == f"sqlite:///{tmp_path / 'gateway-cache.db'}"
    backend = backend_for(gateway_of(app))
    assert isinstance(backend, SQLiteBackend) and backend.path == str(tmp_path / "gateway-cache.db")


def test_the_default_on_the_dynamodb_store_stays_in_memory():
    assert cache_uri(load_settings({"store": "dynamodb"})) == "memory://"
    assert isinstance(open_backend(cache_uri(load_settings({"store": "dynamodb"}))), MemoryBackend)


@pytest.mark.parametrize("value", ["", "memory://", "sqlite:///x.db", "redis://h:1/0", "dynamodb://t"])
def test_an_explicit_setting_is_used_as_given(value):
    assert cache_uri(load_settings({"response_cache": value})) == value


def test_two_workers_on_one_sqlite_file_share_answers(tmp_path):
    provider = FakeProvider(outcomes=["from worker a", "other key", "never"])
    worker_a = make_app(tmp_path, plugins=(ProviderPlugin(provider),))  # the default: auto
    worker_b = make_app(tmp_path, plugins=(ProviderPlugin(provider),))
    assert backend_for(gateway_of(worker_a)) is not backend_for(gateway_of(worker_b))
    key = issue_key(worker_a)
    assert ask(worker_a.test_client(), key, "shared", temperature=0).headers["X-Cache"] == MISS
    hit = ask(worker_b.test_client(), key, "shared", temperature=0)
    assert hit.headers["X-Cache"] == HIT
    assert hit.get_json()["choices"][0]["message"]["content"] == "from worker a"
    other = ask(worker_b.test_client(), issue_key(worker_a, user="bob"), "shared", temperature=0)
    assert other.headers["X-Cache"] == MISS and len(provider.calls) == 2
    mode = sqlite3.connect(tmp_path / "gateway-cache.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_memory_is_still_available_and_per_worker(tmp_path):
    provider = FakeProvider(outcomes=["a", "b", "c"])
    worker_a = make_app(tmp_path, {"response_cache": "memory://"}, plugins=(ProviderPlugin(provider),))
    worker_b = make_app(tmp_path, {"response_cache": "memory://"}, plugins=(ProviderPlugin(provider),))
    assert isinstance(backend_for(gateway_of(worker_a)), MemoryBackend)
    key = issue_key(worker_a)
    assert ask(worker_a.test_client(), key, temperature=0).headers["X-Cache"] == MISS
    assert ask(worker_a.test_client(), key, temperature=0).headers["X-Cache"] == HIT
    assert ask(worker_b.test_client(), key, temperature=0).headers["X-Cache"] == MISS
    assert not (tmp_path / "gateway-cache.db").exists()


def test_sqlite_backend_upserts_and_ignores_expired_rows(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'c.db'}")
    backend.set("k", b"one", ttl=60)
    backend.set("k", b"two", ttl=60)
    assert (backend.get("k"), backend.get("other"), len(backend)) == (b"two", None, 1)
    backend.set("old", b"stale", ttl=0)
    assert backend.get("old") is None
    backend.set("old", b"fresh", ttl=60)  # an expired row is replaced, not kept
    assert backend.get("old") == b"fresh"


def test_sqlite_backend_stays_near_max_entries_dropping_expired_then_oldest(tmp_path):
    backend = SQLiteBackend(str(tmp_path / "c.db"), max_entries=10, prune_every=5)
    for i in range(5):
        backend.set(f"expired{i}", b"x", ttl=-1)
    for i in range(100):
        backend.set(f"k{i:03}", b"x", ttl=60 + i)  # later writes live longer: the oldest expire first
        assert len(backend) <= 10 + 5
    backend.prune()
    assert len(backend) == 10
    assert [backend.get(f"k{i:03}") for i in (89, 90, 99)] == [None, b"x", b"x"]
    assert all(backend.get(f"expired{i}") is None for i in range(5))


def test_sqlite_backend_is_safe_across_threads(tmp_path):
    backend = SQLiteBackend(str(tmp_path / "new" / "c.db"), prune_every=7)
    errors = []

    def work(n):
        try:
            for i in range(30):
                backend.set(f"{n}:{i}", str(i).encode(), ttl=60)
                assert backend.get(f"{n}:{i}") == str(i).encode()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(backend) == 240


@pytest.mark.parametrize("make_path", [
    lambda tmp: tmp / "a-file" / "cache.db",  # its directory is a file: cannot be created
    lambda tmp: tmp / "garbage.db",  # not a database
])
def test_an_unusable_sqlite_cache_is_a_miss_not_an_error(tmp_path, provider, make_path):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "garbage.db").write_bytes(b"this is not a SQLite database" * 100)
    path = make_path(tmp_path)
    app = make_app(tmp_path, {"response_cache": f"sqlite:///{path}"}, plugins=(ProviderPlugin(provider),))
    client, key = app.test_client(), issue_key(app)
    first, second = ask(client, key, temperature=0), ask(client, key, temperature=0)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == (MISS, MISS)
    assert len(provider.calls) == 2
