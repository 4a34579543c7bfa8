"""Catalog search: query understanding, measured ranking quality, and DynamoDB index use.

Quality is measured on ``tests/data/search_queries.json``: shopping queries over the demo
catalog, each with every product that answers it, labelled by hand from the catalog.

- precision@5: of the (at most 5) products the search shows first, the share that is
  relevant. This is what context injection puts in front of the model, so extra
  unrelated products count against it even when fewer than 5 products are relevant.
- recall@10: of the relevant products, the share found in the first 10.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.catalog import read_products
from gateway.store.base import Product
from gateway.store.sqlite import SQLiteStore
from plugins.catalog_search import BM25, CatalogSearch, Query, parse_query, rank, stem, tokens
from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo_catalog.json"
LABELLED = json.loads((Path(__file__).parent / "data" / "search_queries.json").read_text())["queries"]
THRESHOLD = 0.8


@pytest.fixture(scope="module")
def demo_products() -> list[Product]:
    return read_products(DEMO)


@pytest.fixture(scope="module")
def search(demo_products, tmp_path_factory) -> CatalogSearch:
    store = SQLiteStore(str(tmp_path_factory.mktemp("search") / "catalog.db"))
    store.init()
    store.put_products(demo_products)
    return CatalogSearch(store)


def precision_at_5(found: list[str], relevant: set[str]) -> float:
    shown = found[:5]
    return sum(p in relevant for p in shown) / len(shown) if shown else 0.0


def recall_at_10(found: list[str], relevant: set[str]) -> float:
    return sum(p in relevant for p in found[:10]) / len(relevant)


def test_the_labelled_set_is_big_enough_and_names_real_products(demo_products):
    ids = {p.product_id for p in demo_products}
    assert len(LABELLED) >= 40
    assert len({row["query"] for row in LABELLED}) == len(LABELLED)
    for row in LABELLED:
        assert row["relevant"] and set(row["relevant"]) <= ids, row["query"]
    category = {p.product_id: p.category for p in demo_products}
    covered = {category[pid] for row in LABELLED for pid in row["relevant"]}
    assert covered == set(category.values())  # every category is asked about


def test_search_quality_meets_the_bar(search):
    precisions, recalls, misses = [], [], []
    for row in LABELLED:
        relevant = set(row["relevant"])
        found = [p.product_id for p in search.search(search.understand(row["query"]), limit=10)]
        precisions.append(precision_at_5(found, relevant))
        recalls.append(recall_at_10(found, relevant))
        if precisions[-1] < 1 or recalls[-1] < 1:
            misses.append(f"{row['query']!r}: found {found[:5]}, relevant {sorted(relevant)}")
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    print(f"\nprecision@5 {precision:.3f}  recall@10 {recall:.3f}  over {len(LABELLED)} queries")
    assert precision >= THRESHOLD, "\n".join(misses)
    assert recall >= THRESHOLD, "\n".join(misses)


def test_the_metrics_fail_a_bad_ranking(demo_products):
    """The quality test can fail: ranking by price alone, ignoring the words, scores far below the bar."""
    cheapest = [p.product_id for p in sorted(demo_products, key=lambda p: p.price)]
    precision = sum(precision_at_5(cheapest, set(r["relevant"])) for r in LABELLED) / len(LABELLED)
    assert precision < THRESHOLD


# Query understanding

BRANDS = ["Sonique", "Ferro & Salt", "Kestrel Tech", "Campfire Co.", "Aurial"]


@pytest.mark.parametrize(("text", "expected"), [
    ("headphones under $50", {"category": "audio", "max_price": 50.0}),
    ("speakers between 100 and 200 dollars", {"category": "audio", "min_price": 100.0, "max_price": 200.0}),
    ("toys less than 30", {"category": "toys", "max_price": 30.0}),
    ("a $20-$40 board game", {"min_price": 20.0, "max_price": 40.0}),
    ("tents over $300", {"category": "outdoors", "min_price": 300.0}),
    ("running shoes in stock", {"category": "sports", "in_stock": True}),
    ("yoga mat rated 4+", {"category": "sports", "min_rating": 4.0}),
    ("webcam with at least 4.5 stars", {"category": "electronics", "min_rating": 4.5}),
    ("highly rated coffee", {"category": "food", "min_rating": 4.5}),
    ("Ferro and Salt skillet", {"category": "kitchen", "brand": "Ferro & Salt"}),
    ("anything from sonique?", {"brand": "Sonique"}),
    ("20000mAh power bank under 60", {"max_price": 60.0}),
    ("27-inch monitor", {"category": "electronics", "max_price": None, "min_price": None}),
    ("sunscreen spf 50", {"category": "beauty", "max_price": None, "min_price": None}),
])
def test_parse_query_understands_constraints(text, expected):
    query = parse_query(text, BRANDS)
    for name, value in expected.items():
        assert getattr(query, name) == value, (text, name, query)


def test_parse_query_knows_the_catalogs_own_categories():
    assert parse_query("garden tools under 40", categories=["garden", "toys"]).category == "garden"
    assert parse_query("a teddy", categories=["garden"]).category is None  # toys: not in this catalog


def test_parse_query_keeps_the_words_and_maps_synonyms():
    query = parse_query("I need some earphones and sneakers, under $80 please")
    assert query.terms == ["earbud", "shoe"]
    assert query.category is None  # two categories named: neither is imposed
    assert query.max_price == 80.0
    assert parse_query("kids tennis racket").terms == ["junior", "tennis", "racket"]
    assert [stem(w) for w in ("headphones", "batteries", "glass", "bus")] == ["headphone", "battery", "glass", "bus"]
    assert tokens("USB-C Hub & Dock") == ["usb-c", "usb", "c", "hub", "and", "dock"]


def test_ranking_uses_rating_between_equal_matches_and_filters_constraints():
    products = [Product("a", "Trail Kettle", "kitchen", 30.0, rating=3.0),
                Product("b", "Trail Kettle", "kitchen", 30.0, rating=5.0),
                Product("c", "Trail Kettle", "kitchen", 90.0, rating=5.0, availability="out-of-stock"),
                Product("d", "Desk Lamp", "home", 10.0, rating=5.0)]
    index = BM25(products)
    assert [p.product_id for p in rank(index, Query(terms=["kettle"]), 10)] == ["b", "c", "a"]
    assert [p.product_id for p in rank(index, Query(terms=["kettle"], in_stock=True, max_price=50), 10)] \
        == ["b", "a"]
    assert [p.product_id for p in rank(index, Query(), 2)] == ["d", "b"]  # no words: best rated, cheapest


def test_search_cache_is_reused_until_invalidated(demo_products, tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    store.init()
    store.put_products(demo_products[:5])
    search = CatalogSearch(store, ttl=3600)
    query = search.understand("mouse")
    assert [p.product_id for p in search.search(query)] == ["ELE-0001"]
    store.put_products([Product("ELE-9999", "Budget Mouse", "electronics", 9.0, rating=4.0)])
    assert [p.product_id for p in search.search(query)] == ["ELE-0001"]  # cached read
    search.invalidate()
    assert {p.product_id for p in search.search(query)} == {"ELE-0001", "ELE-9999"}


# DynamoDB: a search that knows its category or brand Queries an index, never Scans

@pytest.fixture
def dynamodb_store(monkeypatch, demo_products):
    from moto import mock_aws

    from gateway.config import load_settings
    from gateway.store import open_store

    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        store = open_store(load_settings({"store": "dynamodb", "table_prefix": "search"}, environ={}))
        store.init()
        store.put_products(demo_products)
        yield store


def test_dynamodb_search_queries_the_indexes(dynamodb_store):
    calls: list[tuple[str, str | None]] = []

    def record(model, params, **_kwargs):
        calls.append((model.name, json.loads(params["body"]).get("IndexName")))

    search = CatalogSearch(dynamodb_store)
    search.vocabulary()  # brands and categories: read once per cache period
    dynamodb_store.client.meta.events.register("before-call.dynamodb.*", record)
    try:
        found = search.search(search.understand("noise cancelling headphones under $300"), limit=5)
        assert [p.product_id for p in found[:2]] == ["AUD-0015", "AUD-0008"]
        assert calls == [("Query", "CategoryPriceGlobalSecondaryIndex")]
        calls.clear()
        found = search.search(search.understand("anything from Sonique rated 4+"), limit=10)
        assert {p.brand for p in found} == {"Sonique"} and len(found) == 4
        assert calls == [("Query", "BrandAvailabilityGlobalSecondaryIndex")]
        calls.clear()
        search.search(search.understand("noise cancelling headphones"), limit=5)
        assert calls == []  # the category's products are cached for catalog_cache_ttl
    finally:
        dynamodb_store.client.meta.events.unregister("before-call.dynamodb.*", record)
