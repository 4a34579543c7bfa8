"""The store contract suite, run against the tables cloudformation/data.yaml creates (in moto).

The code's table names, keys and indexes cannot drift from the template: every
contract test below reads and writes the template's tables through DynamoDBStore,
which is built from settings alone (no ``init()``: the tables must already exist).
"""
from __future__ import annotations

import pytest

from gateway import limit_storage
from gateway.cache import DynamoDBBackend
from gateway.config import load_settings
from gateway.store import open_store
from gateway.store.dynamodb import DynamoDBStore, tables
from tests.contract.test_store_contract import *  # noqa: F403  the whole contract suite, collected here too
from tests.deploy.conftest import STAGE

KEYS = {"api_key_table": "apiKeyId", "product_table": "productId", "request_log_table": "requestId"}


def _empty(store: DynamoDBStore) -> None:
    for attribute, key in KEYS.items():
        table = getattr(store, attribute)
        for item in store.client.scan(TableName=table, ProjectionExpression=key)["Items"]:
            store.client.delete_item(TableName=table, Key={key: item[key]})


@pytest.fixture
def store(stacks):
    """A DynamoDBStore on the template's tables, emptied after each test."""
    built = open_store(load_settings({"store": "dynamodb", "stage": STAGE}, environ={}))
    assert isinstance(built, DynamoDBStore)
    outputs = stacks["data"]
    assert (built.api_key_table, built.product_table, built.request_log_table) == (
        outputs["ApiKeysTableName"], outputs["ProductCatalogTableName"], outputs["RequestAnalyticsTableName"])
    yield built
    _empty(built)


def _shape(description: dict) -> dict:
    """The parts of a table that the code depends on: key, attribute types, indexes and their keys."""
    return {
        "key": description["KeySchema"],
        "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in description["AttributeDefinitions"]),
        "indexes": sorted((i["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]),
                           i["Projection"]["ProjectionType"]) for i in description.get("GlobalSecondaryIndexes", [])),
        "billing": description.get("BillingModeSummary", {}).get("BillingMode", description.get("BillingMode")),
    }


def test_template_tables_have_exactly_the_shape_the_code_creates(store):
    """Key schemas, attribute types and GSIs of the stack's tables equal gateway/store/dynamodb.py's."""
    for table in tables(store.api_key_table, store.product_table, store.request_log_table):
        made = store.client.describe_table(TableName=table.name)["Table"]
        assert _shape(made) == _shape(table.create_arguments()), table.name


@pytest.mark.parametrize("output, suffix, key, ttl_attribute", [
    ("RateLimitsTableName", "rate-limits", limit_storage.KEY_ATTRIBUTE, limit_storage.TTL_ATTRIBUTE),
    ("ResponseCacheTableName", "response-cache", DynamoDBBackend.KEY_ATTRIBUTE, DynamoDBBackend.TTL_ATTRIBUTE),
])
def test_expiring_tables_are_keyed_as_the_code_expects(stacks, store, output, suffix, key, ttl_attribute):
    name = stacks["data"][output]
    assert name == f"ai-gateway-{STAGE}-{suffix}"
    table = store.client.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
    ttl = store.client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", ttl_attribute)


def test_stacks_output_what_zappa_and_the_app_need(stacks):
    assert stacks["access"]["RoleArn"].endswith(f":role/ai-gateway-{STAGE}-lambda")
    assert stacks["security"]["KeyArn"].startswith("arn:aws:kms:")
    assert stacks["parameters"]["ParameterPath"] == f"/ai-gateway/{STAGE}/"
    assert stacks["observability"]["DashboardNames"].split(",") == [
        f"ai-gateway-{STAGE}-operational", f"ai-gateway-{STAGE}-security", f"ai-gateway-{STAGE}-business"]
