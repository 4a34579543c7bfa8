"""The store contract: every adapter (see conftest's ``store`` fixture) passes these tests."""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace

import pytest

from gateway.store.base import ApiKey, Product
from gateway.types import RequestLogRecord


def _key(key_id: str, user_id: str = "u1", created_at: float = 100.0, **extra) -> ApiKey:
    return ApiKey(key_id=key_id, user_id=user_id, key_hash=f"hash-{key_id}", created_at=created_at, **extra)


def _record(request_id: str, user_id: str = "u1", timestamp: float = 1000.0, **extra) -> RequestLogRecord:
    return RequestLogRecord(request_id=request_id, correlation_id=f"c-{request_id}", timestamp=timestamp,
                       user_id=user_id, **extra)


CATALOG = [
    Product("p1", "Laptop", "electronics", 999.99, "Acme", "in-stock", "A laptop", 4.5),
    Product("p2", "Phone", "electronics", 499.0, "Acme", "limited", "A phone", 4.1),
    Product("p3", "Cable", "electronics", 9.5, "Wireco", "in-stock", "A cable", 3.9),
    Product("p4", "Charger", "electronics", 9.5, "Acme", "out-of-stock", "", 0.0),
    Product("p5", "Novel", "books", 15.25, "Pagemill", "in-stock", "A novel", 4.8),
    Product("p6", "Atlas", "books", 45.0, "Acme", "limited", "An atlas", 4.0),
    Product("p7", "Mug", "kitchen", 12.0, "", "in-stock", "No brand", 3.0),
]


def _ids(products: list[Product]) -> list[str]:
    return [p.product_id for p in products]


@pytest.fixture
def catalog(store):
    assert store.put_products(CATALOG) == len(CATALOG)
    return store


def _dynamodb_only(store):
    if not hasattr(store, "client"):
        pytest.skip("DynamoDB adapter only")


# API keys

def test_key_put_then_get_round_trips(store):
    key = _key("k1", tier="premium", permissions=["admin", "completions"], name="ci key")
    store.put_key(key)
    assert store.get_key("k1") == key
    assert store.get_key("missing") is None


def test_put_key_replaces(store):
    store.put_key(_key("k1", tier="free"))
    store.put_key(_key("k1", tier="enterprise", name="renamed"))
    got = store.get_key("k1")
    assert (got.tier, got.name) == ("enterprise", "renamed")
    assert len(store.list_keys()) == 1


def test_list_keys_by_user_oldest_first_and_isolated(store):
    store.put_key(_key("k3", created_at=300.0))
    store.put_key(_key("k1", created_at=100.0))
    store.put_key(_key("k2", created_at=200.0))
    store.put_key(_key("other", user_id="u2", created_at=50.0))
    assert [k.key_id for k in store.list_keys("u1")] == ["k1", "k2", "k3"]
    assert [k.key_id for k in store.list_keys("u2")] == ["other"]
    assert store.list_keys("nobody") == []


def test_list_all_keys_by_created_at_then_id(store):
    store.put_key(_key("b", user_id="u1", created_at=200.0))
    store.put_key(_key("a", user_id="u2", created_at=200.0))
    store.put_key(_key("c", user_id="u3", created_at=100.5))
    assert [k.key_id for k in store.list_keys()] == ["c", "a", "b"]


def test_list_keys_empty_store(store):
    assert store.list_keys() == []


def test_revoke_and_reactivate(store):
    store.put_key(_key("k1"))
    assert store.set_key_active("k1", False) is True
    assert store.get_key("k1").active is False
    assert store.set_key_active("k1", True) is True
    assert store.get_key("k1").active is True


def test_revoke_missing_key_is_false_and_creates_nothing(store):
    assert store.set_key_active("missing", False) is False
    assert store.get_key("missing") is None
    assert store.list_keys() == []


@pytest.mark.parametrize("per_minute,per_hour,in_flight", [(60, 1000, 8), (60, None, None), (None, 500, None),
                                                           (None, None, 3), (None, None, None)])
def test_rate_limit_round_trips(store, per_minute, per_hour, in_flight):
    key = _key("k1", requests_per_minute=per_minute, requests_per_hour=per_hour, concurrent_requests=in_flight)
    store.put_key(key)
    got = store.get_key("k1")
    assert (got.requests_per_minute, got.requests_per_hour, got.concurrent_requests) == (per_minute, per_hour,
                                                                                        in_flight)
    assert type(got.requests_per_minute) is type(per_minute)
    assert type(got.concurrent_requests) is type(in_flight)


@pytest.mark.parametrize("expires_at", [None, 1767225600.25])
def test_expires_at_round_trips(store, expires_at):
    store.put_key(_key("k1", expires_at=expires_at))
    assert store.get_key("k1").expires_at == expires_at


@pytest.mark.parametrize("permissions", [["completions"], ["admin", "completions", "health", "mcp"], []])
def test_permissions_round_trip(store, permissions):
    store.put_key(_key("k1", permissions=permissions))
    assert store.get_key("k1").permissions == permissions
    assert store.list_keys("u1")[0].permissions == permissions


def test_created_at_keeps_fractions(store):
    store.put_key(_key("k1", created_at=1732700000.123456))
    assert store.get_key("k1").created_at == 1732700000.123456


@pytest.mark.parametrize("allowed", [None, [], ["echo", "gpt-4o-mini"]])
def test_allowed_models_round_trip(store, allowed):
    store.put_key(_key("k1", allowed_models=allowed))
    assert store.get_key("k1").allowed_models == allowed
    assert store.list_keys()[0].allowed_models == allowed


@pytest.mark.parametrize("mcp_context", [None, True, False])
def test_mcp_context_round_trips_and_updates(store, mcp_context):
    store.put_key(_key("k1", mcp_context=mcp_context))
    assert store.get_key("k1").mcp_context is mcp_context
    assert store.list_keys("u1")[0].mcp_context is mcp_context
    assert store.update_key("k1", {"mcp_context": not mcp_context}).mcp_context is (not mcp_context)
    assert store.update_key("k1", {"mcp_context": None}).mcp_context is None


@pytest.mark.parametrize("grounding", [None, "off", "annotate", "block"])
def test_grounding_round_trips_and_updates(store, grounding):
    store.put_key(_key("k1", grounding=grounding))
    assert store.get_key("k1").grounding == grounding
    assert store.list_keys("u1")[0].grounding == grounding
    assert store.update_key("k1", {"grounding": "block"}).grounding == "block"
    assert store.get_key("k1").grounding == "block"
    assert store.update_key("k1", {"grounding": None}).grounding is None
    assert store.get_key("k1") == _key("k1")


def test_update_key_changes_only_given_fields(store):
    store.put_key(_key("k1", tier="free", name="ci", requests_per_minute=5, requests_per_hour=50,
                       last_used_at=123.5))
    updated = store.update_key("k1", {"tier": "premium", "requests_per_minute": 500,
                                      "permissions": ["completions", "mcp"], "allowed_models": ["echo"],
                                      "expires_at": 2000000000.5, "concurrent_requests": 6})
    assert updated == store.get_key("k1")
    assert updated == _key("k1", tier="premium", name="ci", requests_per_minute=500, requests_per_hour=50,
                           permissions=["completions", "mcp"], allowed_models=["echo"],
                           expires_at=2000000000.5, last_used_at=123.5, concurrent_requests=6)


def test_update_key_clears_optional_fields(store):
    store.put_key(_key("k1", name="ci", requests_per_minute=5, requests_per_hour=50, expires_at=5.0,
                       allowed_models=["echo"], concurrent_requests=2))
    store.update_key("k1", {"requests_per_minute": None, "requests_per_hour": None, "expires_at": None,
                            "allowed_models": None, "name": "", "active": False, "concurrent_requests": None})
    assert store.get_key("k1") == _key("k1", active=False)


def test_update_key_missing_or_forbidden_field(store):
    assert store.update_key("missing", {"tier": "basic"}) is None
    assert store.get_key("missing") is None
    store.put_key(_key("k1"))
    for field in ("key_hash", "user_id", "key_id", "last_used_at"):
        with pytest.raises(ValueError, match=field):
            store.update_key("k1", {field: "x"})
    assert store.get_key("k1") == _key("k1")


def test_touch_last_used_at_most_once_per_interval(store):
    store.put_key(_key("k1"))
    assert store.touch_last_used("k1", 1732700000.25, min_interval=60) is True
    assert store.get_key("k1").last_used_at == 1732700000.25
    assert store.touch_last_used("k1", 1732700059.0, min_interval=60) is False
    assert store.get_key("k1").last_used_at == 1732700000.25
    assert store.touch_last_used("k1", 1732700060.25, min_interval=60) is True
    assert store.get_key("k1").last_used_at == 1732700060.25
    assert store.touch_last_used("missing", 1.0) is False
    assert store.get_key("missing") is None


# Products

def test_put_products_then_get(catalog):
    for product in CATALOG:
        assert catalog.get_product(product.product_id) == product
    assert catalog.get_product("missing") is None


def test_put_products_replaces_and_last_duplicate_wins(store):
    store.put_products([CATALOG[0]])
    cheaper = Product("p1", "Laptop", "electronics", 899.0, "Acme")
    newest = Product("p1", "Laptop 2", "electronics", 799.0, "Acme")
    assert store.put_products([cheaper, newest]) == 2
    assert store.get_product("p1") == newest
    assert len(store.list_products()) == 1


def test_put_many_products(store):
    many = [Product(f"p{i:03}", f"Item {i}", "bulk", float(i % 7), "Bulkco") for i in range(60)]
    assert store.put_products(many) == 60
    assert store.put_products([]) == 0
    listed = store.list_products(category="bulk")
    assert len(listed) == 60
    assert listed == sorted(many, key=lambda p: (p.price, p.product_id))


def test_list_without_filters_is_everything_by_price_then_id(catalog):
    assert _ids(catalog.list_products()) == ["p3", "p4", "p7", "p5", "p6", "p2", "p1"]


def test_list_by_category_cheapest_first(catalog):
    assert _ids(catalog.list_products(category="electronics")) == ["p3", "p4", "p2", "p1"]
    assert _ids(catalog.list_products(category="books")) == ["p5", "p6"]
    assert catalog.list_products(category="garden") == []


@pytest.mark.parametrize("bounds,expected", [
    ({"min_price": 9.5}, ["p3", "p4", "p2", "p1"]),
    ({"min_price": 10}, ["p2", "p1"]),
    ({"max_price": 499.0}, ["p3", "p4", "p2"]),
    ({"min_price": 9.5, "max_price": 9.5}, ["p3", "p4"]),
    ({"min_price": 100, "max_price": 600}, ["p2"]),
    ({"min_price": 600, "max_price": 100}, []),
])
def test_list_by_category_with_price_bounds(catalog, bounds, expected):
    assert _ids(catalog.list_products(category="electronics", **bounds)) == expected


def test_list_by_brand(catalog):
    assert _ids(catalog.list_products(brand="Acme")) == ["p4", "p6", "p2", "p1"]
    assert _ids(catalog.list_products(brand="Acme", availability="limited")) == ["p6", "p2"]
    assert _ids(catalog.list_products(brand="Acme", max_price=50)) == ["p4", "p6"]
    assert catalog.list_products(brand="Nobody") == []


def test_list_by_availability(catalog):
    assert _ids(catalog.list_products(availability="in-stock")) == ["p3", "p7", "p5", "p1"]
    assert _ids(catalog.list_products(availability="out-of-stock")) == ["p4"]


def test_list_by_price_only(catalog):
    assert _ids(catalog.list_products(min_price=10, max_price=50)) == ["p7", "p5", "p6"]
    assert _ids(catalog.list_products(min_price=500)) == ["p1"]
    assert _ids(catalog.list_products(max_price=9.5)) == ["p3", "p4"]


def test_list_with_every_filter(catalog):
    assert _ids(catalog.list_products(category="electronics", brand="Acme", availability="limited",
                                      min_price=100, max_price=500)) == ["p2"]
    assert catalog.list_products(category="books", brand="Wireco") == []


def test_product_without_brand_is_listed(catalog):
    assert catalog.get_product("p7").brand == ""
    assert _ids(catalog.list_products(category="kitchen")) == ["p7"]
    assert _ids(catalog.list_products(brand="")) == ["p7"]


def test_delete_product(catalog):
    assert catalog.delete_product("p2") is True
    assert catalog.get_product("p2") is None
    assert "p2" not in _ids(catalog.list_products(category="electronics"))
    assert catalog.delete_product("p2") is False
    assert catalog.delete_product("missing") is False
    assert len(catalog.list_products()) == len(CATALOG) - 1


# Request log

def test_record_round_trips_with_exact_floats(store):
    record = _record("r1", api_key_id="k1", tier="basic", model="gpt-4o-mini", provider="openai",
                     prompt_tokens=12, completion_tokens=30, cost=0.000123, latency_ms=812.5,
                     upstream_latency_ms=790.25, status=502, error_code="upstream_error",
                     streamed=True, cached=True, timestamp=1732700000.123456)
    store.put_record(record, expires_at=1740000000)
    [got] = store.records_for_user("u1")
    assert got == record
    assert got.cost == 0.000123
    assert isinstance(got.prompt_tokens, int) and isinstance(got.status, int)
    assert got.tokens == 42


def test_record_checks_round_trip(store):
    records = [_record("r1", checks={"grounding": "flagged"}),
               _record("r2", timestamp=1001.0, checks={"grounding": "passed", "tone": "replaced"}),
               _record("r3", timestamp=1002.0, status=502, checks={"grounding": "blocked"}),
               _record("r4", timestamp=1003.0)]
    store.put_record(records[0], expires_at=1740000000)
    store.put_records([(record, 1740000000) for record in records[1:]])
    assert store.records_for_user("u1") == records
    assert store.records_for_user("u1")[3].checks == {}


def test_record_defaults_round_trip(store):
    record = _record("r1")
    store.put_record(record, expires_at=1740000000)
    assert store.records_for_user("u1") == [record]


def test_records_time_bounds_start_inclusive_end_exclusive(store):
    for i, ts in enumerate([100.0, 200.0, 300.0, 400.0]):
        store.put_record(_record(f"r{i}", timestamp=ts), expires_at=1740000000)
    assert [r.timestamp for r in store.records_for_user("u1")] == [100.0, 200.0, 300.0, 400.0]
    assert [r.timestamp for r in store.records_for_user("u1", start=200.0)] == [200.0, 300.0, 400.0]
    assert [r.timestamp for r in store.records_for_user("u1", start=200.0, end=400.0)] == [200.0, 300.0]
    assert [r.timestamp for r in store.records_for_user("u1", end=200.0)] == [100.0]
    assert store.records_for_user("u1", start=250.0, end=260.0) == []
    assert store.records_for_user("u1", start=300.0, end=300.0) == []


def test_records_oldest_first_then_by_id(store):
    store.put_record(_record("r-c", timestamp=300.0), expires_at=1)
    store.put_record(_record("r-b", timestamp=100.0), expires_at=1)
    store.put_record(_record("r-a", timestamp=100.0), expires_at=1)
    assert [r.request_id for r in store.records_for_user("u1")] == ["r-a", "r-b", "r-c"]


def test_records_are_isolated_between_users(store):
    store.put_record(_record("r1", user_id="alice"), expires_at=1740000000)
    store.put_record(_record("r2", user_id="bob"), expires_at=1740000000)
    store.put_record(_record("r3", user_id="alice", timestamp=2000.0), expires_at=1740000000)
    assert [r.request_id for r in store.records_for_user("alice")] == ["r1", "r3"]
    assert [r.request_id for r in store.records_for_user("bob")] == ["r2"]
    assert store.records_for_user("carol") == []


def test_record_cache_saving_and_content_round_trip(store):
    record = _record("r1", cached=True, cost=0.0, saved_cost=0.000321,
                     prompt_text="user: what is [email]?", completion_text="It is hidden. ✓")
    store.put_record(record, expires_at=1740000000)
    assert store.records_for_user("u1") == [record]


def test_purge_removes_only_expired_records(store):
    store.put_record(_record("old"), expires_at=1000)
    store.put_record(_record("edge", timestamp=1001.0), expires_at=2000)
    store.put_record(_record("fresh", timestamp=1002.0), expires_at=3000)
    deleted = store.purge_expired_records(now=2000)
    left = [r.request_id for r in store.records_for_user("u1")]
    assert "fresh" in left
    if hasattr(store, "client"):  # DynamoDB: its TTL expires items itself, the purge is a no-op
        assert deleted == 0 and left == ["old", "edge", "fresh"]
    else:
        assert deleted == 2 and left == ["fresh"]
        assert store.purge_expired_records(now=2000) == 0


def test_put_records_stores_every_record_readably(store):
    records = [_record(f"r{i:03d}", timestamp=1000.0 + i, prompt_tokens=i, cost=i / 1000, status=200 + i)
               for i in range(60)]  # more than two BatchWriteItem calls' worth
    store.put_records([(record, 1740000000) for record in records])
    assert store.records_for_user("u1") == records


def test_put_records_keeps_users_apart_and_the_last_of_a_repeated_id(store):
    bob = _record("r2", user_id="bob")
    store.put_records([(_record("r1", user_id="alice"), 1740000000), (bob, 1740000000), (bob, 1740000000),
                       (_record("r1", user_id="alice", model="second"), 1740000000)])
    assert [(r.request_id, r.model) for r in store.records_for_user("alice")] == [("r1", "second")]
    assert [r.request_id for r in store.records_for_user("bob")] == ["r2"]


def test_put_records_honours_each_records_expiry(store):
    store.put_records([(_record("old"), 1000), (_record("edge", timestamp=1001.0), 2000),
                       (_record("fresh", timestamp=1002.0), 3000)])
    deleted = store.purge_expired_records(now=2000)
    left = [r.request_id for r in store.records_for_user("u1")]
    if hasattr(store, "client"):  # DynamoDB: each item carries its own TTL attribute
        assert deleted == 0 and left == ["old", "edge", "fresh"]
        ttl = {request_id: store.client.get_item(TableName=store.request_log_table,
                                                 Key={"requestId": {"S": request_id}})["Item"]["expirationTimestamp"]
               for request_id in left}
        assert ttl == {"old": {"N": "1000"}, "edge": {"N": "2000"}, "fresh": {"N": "3000"}}
    else:
        assert deleted == 2 and left == ["fresh"]


def test_add_records_creates_a_row_then_adds_each_count_to_it(store):
    first = _record("refused-k1-20-rate_limit_exceeded", api_key_id="k1", status=429,
                    error_code="rate_limit_exceeded", latency_ms=2.0, count=3)
    store.add_records([(first, 2000)])
    store.add_records([(replace(first, count=5, latency_ms=4.0), 2000), (_record("other", count=2), 2000)])
    store.add_records([(replace(first, count=1, latency_ms=2.0), 2000)])
    rows = {r.request_id: r for r in store.records_for_user("u1")}
    folded = rows["refused-k1-20-rate_limit_exceeded"]
    assert (folded.count, folded.status, folded.error_code, folded.api_key_id) == (9, 429, "rate_limit_exceeded", "k1")
    assert rows["other"].count == 2 and len(rows) == 2
    if not hasattr(store, "client"):  # SQLite keeps the mean latency of all nine
        assert folded.latency_ms == pytest.approx((3 * 2.0 + 5 * 4.0 + 2.0) / 9)
    store.put_record(_record("plain"), 2000)
    assert {r.request_id: r.count for r in store.records_for_user("u1")}["plain"] == 1


def test_dynamodb_add_records_counts_an_update_botocore_resends_once(store):
    """An update whose answer is lost after DynamoDB applied it is sent again by botocore's retries:
    the resend must not add the count a second time."""
    _dynamodb_only(store)
    resent: list[int] = []

    def lose_the_first_answer(attempts, **kwargs):
        if attempts == 1 and not resent:
            resent.append(attempts)
            return 0  # retry at once, as after a read timeout
        return None

    first = _record("refused-k1-20-rate_limit_exceeded", status=429, error_code="rate_limit_exceeded", count=3)
    store.client.meta.events.register("needs-retry.dynamodb.UpdateItem", lose_the_first_answer)
    try:
        store.add_records([(first, 2000)])
        store.add_records([(replace(first, count=4), 2000)])
    finally:
        store.client.meta.events.unregister("needs-retry.dynamodb.UpdateItem", lose_the_first_answer)
    assert resent == [1]
    assert [r.count for r in store.records_for_user("u1")] == [7]


def test_put_records_of_nothing_writes_nothing(store):
    calls: list[str] = []
    if hasattr(store, "client"):
        store.client.meta.events.register("before-call.dynamodb.*", lambda model, **kwargs: calls.append(model.name))
    else:
        store._connection().set_trace_callback(calls.append)  # every SQL statement run
    store.put_records([])
    assert calls == []


# Lifecycle

def test_init_is_idempotent(store):
    store.put_key(_key("k1"))
    store.put_products(CATALOG[:2])
    store.put_record(_record("r1"), expires_at=1740000000)
    store.init()
    store.init()
    assert store.get_key("k1") == _key("k1")
    assert _ids(store.list_products()) == ["p2", "p1"]
    assert len(store.records_for_user("u1")) == 1


def test_ping(store):
    assert store.ping() is None


# DynamoDB adapter specifics

def test_dynamodb_ping_raises_without_tables(store):
    _dynamodb_only(store)
    from botocore.exceptions import ClientError

    from gateway.store.dynamodb import DynamoDBStore

    missing = DynamoDBStore(store.client, api_key_table="absent-api-keys", product_table="absent-products",
                            request_log_table="absent-request-log")
    with pytest.raises(ClientError) as raised:
        missing.ping()
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_dynamodb_uses_indexes_not_scans(store):
    _dynamodb_only(store)
    store.put_products(CATALOG)
    store.put_key(_key("k1"))
    store.put_record(_record("r1"), expires_at=1740000000)
    calls: list[tuple[str, str | None]] = []

    def count(model, params, **kwargs):
        calls.append((model.name, json.loads(params["body"]).get("IndexName")))

    store.client.meta.events.register("before-call.dynamodb.*", count)
    try:
        assert _ids(store.list_products(category="electronics", min_price=10)) == ["p2", "p1"]
        assert calls == [("Query", "CategoryPriceGlobalSecondaryIndex")]
        calls.clear()
        assert _ids(store.list_products(brand="Acme", availability="limited")) == ["p6", "p2"]
        assert calls == [("Query", "BrandAvailabilityGlobalSecondaryIndex")]
        calls.clear()
        assert store.list_keys("u1")[0].key_id == "k1"
        assert store.records_for_user("u1", start=0, end=5000)[0].request_id == "r1"
        assert calls == [("Query", "UserIdGlobalSecondaryIndex"),
                         ("Query", "UserAnalyticsGlobalSecondaryIndex")]
        calls.clear()
        store.list_products(availability="in-stock")
        assert calls == [("Scan", None)]
    finally:
        store.client.meta.events.unregister("before-call.dynamodb.*", count)


def test_dynamodb_reads_every_page(store):
    _dynamodb_only(store)
    store.put_products(CATALOG)
    for i in range(5):
        store.put_key(_key(f"k{i}", created_at=float(i)))
        store.put_record(_record(f"r{i}", timestamp=float(i)), expires_at=1740000000)
    store.page_size = 2
    calls: list[str] = []

    def count(model, **kwargs):
        calls.append(model.name)

    store.client.meta.events.register("before-call.dynamodb.*", count)
    try:
        assert _ids(store.list_products(category="electronics")) == ["p3", "p4", "p2", "p1"]
        assert _ids(store.list_products(brand="Acme")) == ["p4", "p6", "p2", "p1"]
        assert len(store.list_products()) == len(CATALOG)
        assert [k.key_id for k in store.list_keys("u1")] == [f"k{i}" for i in range(5)]
        assert [k.key_id for k in store.list_keys()] == [f"k{i}" for i in range(5)]
        assert [r.request_id for r in store.records_for_user("u1")] == [f"r{i}" for i in range(5)]
    finally:
        store.client.meta.events.unregister("before-call.dynamodb.*", count)
    assert calls.count("Query") >= 9 and calls.count("Scan") >= 6


def test_dynamodb_item_shape_and_ttl(store):
    _dynamodb_only(store)
    store.put_key(_key("k1", requests_per_minute=60, requests_per_hour=None))
    store.put_record(_record("r1", cost=0.5, prompt_tokens=3, completion_tokens=4, model="m", provider="p"),
                     expires_at=1740000000)
    client = store.client
    key_item = client.get_item(TableName=store.api_key_table, Key={"apiKeyId": {"S": "k1"}})["Item"]
    assert {"apiKeyId", "userId", "apiKeyHash", "tier", "createdAt", "permissions", "active"} <= set(key_item)
    assert key_item["rateLimit"] == {"M": {"requestsPerMinute": {"N": "60"}}}
    assert key_item["permissions"] == {"L": [{"S": "completions"}]}
    assert key_item["active"] == {"BOOL": True}
    assert "grounding" not in key_item and "mcpContext" not in key_item  # unset: no attribute
    store.update_key("k1", {"grounding": "block"})
    assert client.get_item(TableName=store.api_key_table, Key={"apiKeyId": {"S": "k1"}})["Item"]["grounding"] == {
        "S": "block"}
    store.put_record(_record("r2", checks={"grounding": "flagged"}), expires_at=1740000000)
    checked = client.get_item(TableName=store.request_log_table, Key={"requestId": {"S": "r2"}})["Item"]
    assert checked["checks"] == {"M": {"grounding": {"S": "flagged"}}}
    record_item = client.get_item(TableName=store.request_log_table, Key={"requestId": {"S": "r1"}})["Item"]
    assert record_item["expirationTimestamp"] == {"N": "1740000000"}
    assert record_item["tokens"] == {"N": "7"}
    assert {"timestamp", "userId", "model", "cost", "latency", "provider", "correlationId"} <= set(record_item)
    ttl = client.describe_time_to_live(TableName=store.request_log_table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    assert ttl["AttributeName"] == "expirationTimestamp"
    indexes = {
        table: {i["IndexName"] for i in client.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]}
        for table in (store.api_key_table, store.product_table, store.request_log_table)}
    assert indexes == {
        store.api_key_table: {"UserIdGlobalSecondaryIndex"},
        store.product_table: {"CategoryPriceGlobalSecondaryIndex", "BrandAvailabilityGlobalSecondaryIndex"},
        store.request_log_table: {"UserAnalyticsGlobalSecondaryIndex"},
    }
    assert store.api_key_table.endswith("-dev-api-keys")


def test_dynamodb_put_records_sends_25_items_per_batch_write(store):
    _dynamodb_only(store)
    sizes: list[int] = []

    def count(model, params, **kwargs):
        if model.name == "BatchWriteItem":
            sizes.extend(len(requests) for requests in json.loads(params["body"])["RequestItems"].values())
        else:
            sizes.append(model.name)

    store.client.meta.events.register("before-call.dynamodb.*", count)
    try:
        store.put_records([(_record(f"r{i:02d}"), 1740000000) for i in range(60)])
    finally:
        store.client.meta.events.unregister("before-call.dynamodb.*", count)
    assert sizes == [25, 25, 10]
    assert len(store.records_for_user("u1")) == 60


class _Throttled:
    """A DynamoDB client whose BatchWriteItem, for its first ``times`` calls, writes all but the
    last request and returns that one as unprocessed (as DynamoDB does when it throttles); it
    notes each call's size and time."""

    def __init__(self, client, times: int):
        self.client, self.times, self.sizes, self.at = client, times, [], []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def batch_write_item(self, **params):
        self.at.append(time.monotonic())
        ((table, requests),) = params["RequestItems"].items()
        self.sizes.append(len(requests))
        if self.times <= 0:
            return self.client.batch_write_item(**params)
        self.times -= 1
        *written, held = requests
        if written:
            self.client.batch_write_item(RequestItems={table: written})
        return {"UnprocessedItems": {table: [held]}}

    def pauses(self) -> list[float]:
        return [later - earlier for earlier, later in itertools.pairwise(self.at)]


def _on_client(store, client):
    from gateway.store.dynamodb import DynamoDBStore

    return DynamoDBStore(client, api_key_table=store.api_key_table, product_table=store.product_table,
                         request_log_table=store.request_log_table)


def test_dynamodb_put_records_sends_unprocessed_items_again_after_a_growing_pause(store):
    _dynamodb_only(store)
    from gateway.store import dynamodb

    client = _Throttled(store.client, times=2)
    _on_client(store, client).put_records([(_record(f"r{i}"), 1740000000) for i in range(3)])
    assert client.sizes == [3, 1, 1]
    first, second = client.pauses()
    assert first >= dynamodb.UNPROCESSED_BACKOFF and second >= 2 * dynamodb.UNPROCESSED_BACKOFF
    assert [r.request_id for r in store.records_for_user("u1")] == ["r0", "r1", "r2"]


def test_dynamodb_put_records_gives_up_on_items_left_unprocessed_after_its_retries(store):
    _dynamodb_only(store)
    from gateway.store import dynamodb

    client = _Throttled(store.client, times=1000)
    with pytest.raises(dynamodb.UnprocessedItemsError):
        _on_client(store, client).put_records([(_record("r0"), 1740000000), (_record("r1"), 1740000000)])
    assert client.sizes == [2] + [1] * dynamodb.UNPROCESSED_RETRIES
    assert [pause >= dynamodb.UNPROCESSED_BACKOFF * 2 ** i for i, pause in enumerate(client.pauses())] == [
        True] * dynamodb.UNPROCESSED_RETRIES
    assert dynamodb.UNPROCESSED_BACKOFF * (2 ** dynamodb.UNPROCESSED_RETRIES - 1) < 1  # a writer waits < 1 s
    assert [r.request_id for r in store.records_for_user("u1")] == ["r0"]


def test_dynamodb_put_products_resends_unprocessed_items_too(store):
    _dynamodb_only(store)
    client = _Throttled(store.client, times=1)
    assert _on_client(store, client).put_products(CATALOG[:3]) == 3
    assert client.sizes == [3, 1]
    assert _ids(store.list_products()) == _ids(sorted(CATALOG[:3], key=lambda p: (p.price, p.product_id)))
