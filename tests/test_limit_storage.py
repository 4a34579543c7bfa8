"""The limits storages written here (SQLite, DynamoDB) pass the same counter tests as the
``limits`` library's Redis storage, on a real redis-server."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from limits.storage import storage_from_string

from gateway.limit_storage import DynamoDBStorage, SQLiteStorage, batch
from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS
from tests.fakes import servers


@pytest.fixture(scope="module")
def redis_uri(tmp_path_factory):
    with servers.redis_server(tmp_path_factory.mktemp("redis")) as uri:
        yield uri


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A moto server in its own process, as DynamoDB stands in for (one item, one writer at a time)."""
    with servers.moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def build_storage(kind: str, request, tmp_path, monkeypatch):
    """A fresh ``limits`` storage of ``kind`` (sqlite, redis, dynamodb on a moto server, memory)."""
    if kind == "sqlite":
        built = storage_from_string(f"sqlite:///{tmp_path}/counters.db")
        assert isinstance(built, SQLiteStorage)
        return built
    if kind == "redis":
        built = storage_from_string(request.getfixturevalue("redis_uri"))
        built.reset()
        return built
    if kind == "memory":
        return storage_from_string("memory://")
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))
    built = storage_from_string(f"dynamodb://counters-{uuid.uuid4().hex[:6]}?region=us-east-1")
    assert isinstance(built, DynamoDBStorage)
    built.create_table()
    built.create_table()  # idempotent
    return built


@pytest.fixture(params=["sqlite", "dynamodb", "redis"])
def storage(request, tmp_path, monkeypatch):
    return build_storage(request.param, request, tmp_path, monkeypatch)


def test_incr_counts_and_get_reads(storage):
    assert storage.get("k") == 0
    assert [storage.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert storage.incr("k", 60, amount=10) == 13
    assert storage.get("k") == 13
    assert storage.get("other") == 0


def test_window_end_is_set_once(storage):
    before = time.time()
    storage.incr("k", 60)
    end = storage.get_expiry("k")
    assert before + 59 <= end <= time.time() + 61
    storage.incr("k", 60)
    assert storage.get_expiry("k") == pytest.approx(end, abs=1)


def test_expired_window_starts_again(storage):
    storage.incr("k", 1, amount=5)
    time.sleep(1.3)
    assert storage.get("k") == 0
    assert storage.incr("k", 60) == 1


def test_clear_and_reset(storage):
    storage.incr("a", 60)
    storage.incr("b", 60)
    storage.clear("a")
    assert (storage.get("a"), storage.get("b")) == (0, 1)
    storage.reset()
    assert storage.get("b") == 0
    assert storage.check() is True


def test_concurrent_increments_are_never_lost(storage):
    results: list[int] = []
    lock = threading.Lock()

    def work():
        for _ in range(10):
            count = storage.incr("shared", 60)
            with lock:
                results.append(count)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 81))


def test_dynamodb_counters_carry_a_ttl(storage):
    if not isinstance(storage, DynamoDBStorage):
        pytest.skip("DynamoDB only")
    storage.incr("k", 60)
    item = storage.client.get_item(TableName=storage.table, Key={"counterKey": {"S": "k"}})["Item"]
    assert int(item["expirationTimestamp"]["N"]) >= time.time() + 59
    ttl = storage.client.describe_time_to_live(TableName=storage.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expirationTimestamp"


def test_unreachable_dynamodb_raises_a_botocore_error(monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{servers.free_port()}")
    storage = DynamoDBStorage("dynamodb://nowhere?region=us-east-1")
    assert storage.check() is False
    with pytest.raises(EndpointConnectionError):
        storage.incr("k", 60)


def test_a_batch_counts_all_of_its_increments_or_none(storage):
    """SQLite groups a batch in one transaction; other storages count each call as it comes."""
    key_a, key_b = f"batch-a-{uuid.uuid4().hex}", f"batch-b-{uuid.uuid4().hex}"
    with batch(storage):
        assert storage.incr(key_a, 60) == 1
        assert storage.incr(key_b, 3600, 5) == 5
    assert (storage.get(key_a), storage.get(key_b)) == (1, 5)
    with pytest.raises(RuntimeError), batch(storage):
        storage.incr(key_a, 60)
        raise RuntimeError("the request failed between two increments")
    expected = 1 if isinstance(storage, SQLiteStorage) else 2
    assert storage.get(key_a) == expected
