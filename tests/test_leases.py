"""The leases of calls in flight (gateway/leases.py) on every store that holds them: SQLite, Redis
(a real redis-server), DynamoDB (a moto server) and memory. Each grants exactly ``limit`` leases
however many threads race for them, frees a slot on release and when a holder stops renewing
(a crashed worker), and keeps a renewed lease past its first expiry."""
from __future__ import annotations

import threading
import time

import pytest

from gateway.leases import DynamoDBLeases, leases_for
from tests.test_limit_storage import build_storage, moto_endpoint, redis_uri  # noqa: F401 (fixtures)


@pytest.fixture(params=["sqlite", "redis", "dynamodb", "memory"])
def storage(request, tmp_path, monkeypatch):
    return build_storage(request.param, request, tmp_path, monkeypatch)


@pytest.fixture
def leases(storage):
    return leases_for(storage)


def test_grants_up_to_the_limit_per_key(leases):
    assert [leases.acquire("k", f"l{i}", 3, 30) for i in range(4)] == [True, True, True, False]
    assert leases.acquire("other", "l0", 3, 30) is True


def test_release_frees_one_slot(leases):
    for name in ("a", "b"):
        assert leases.acquire("k", name, 2, 30)
    leases.release("k", "a")
    leases.release("k", "a")  # twice: nothing more happens
    assert leases.acquire("k", "c", 2, 30) is True
    assert leases.acquire("k", "d", 2, 30) is False


def test_racing_threads_get_exactly_the_limit(leases):
    granted: list[bool] = []
    start = threading.Barrier(16)

    def take(i: int) -> None:
        start.wait()
        granted.append(leases.acquire("shared", f"lease-{i}", 5, 30))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 5


def test_a_holder_that_stops_renewing_frees_its_slot(leases):
    assert leases.acquire("k", "crashed", 1, 1)
    assert leases.acquire("k", "waiting", 1, 30) is False
    time.sleep(1.2)
    assert leases.acquire("k", "waiting", 1, 30) is True
    assert leases.acquire("k", "third", 1, 30) is False


def test_renewal_keeps_a_lease_past_its_first_expiry_but_never_revives_one(leases):
    assert leases.acquire("k", "long", 1, 1.5)
    assert leases.acquire("gone", "dead", 1, 1)
    time.sleep(0.8)
    leases.renew({"k": ["long"]}, 1.5)
    time.sleep(0.7)  # past the first expiry of "long" and of "dead"
    leases.renew({"gone": ["dead"]}, 30)
    assert leases.acquire("k", "next", 1, 30) is False
    assert leases.acquire("gone", "next", 1, 30) is True


def test_dynamodb_lease_items_carry_a_ttl_after_the_last_expiry(request, tmp_path, monkeypatch):
    storage = build_storage("dynamodb", request, tmp_path, monkeypatch)
    leases = DynamoDBLeases(storage)
    assert leases.acquire("k", "a", 2, 30)
    leases.renew({"k": ["a"]}, 60)
    item = storage.client.get_item(TableName=storage.table, Key={"counterKey": {"S": "LEASES/k"}})["Item"]
    assert int(item["expirationTimestamp"]["N"]) >= time.time() + 59
    assert float(item["leases"]["M"]["a"]["N"]) >= time.time() + 59
