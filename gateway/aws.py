"""The gateway's AWS clients and DynamoDB tables: one boto3 client per service and region, per process.

The store, the rate-limit counters (and their leases), the response cache and the remote
settings all ask :func:`client` for theirs, so a Lambda container signs in, resolves its
endpoint and pools its connections once per service instead of once per user. Clients
are thread-safe; building one is not (boto3's default session), hence the lock. A forked child
starts with none.

The endpoint is boto3's own: ``AWS_ENDPOINT_URL_<SERVICE>`` or ``AWS_ENDPOINT_URL`` when
set (DynamoDB Local, moto), else AWS. A client keeps what it found when it was built, so
whatever changes those (tests) calls :func:`forget_clients` afterwards.

boto3 is imported on the first :func:`client` call, never by importing this module: a
cold start on the SQLite store, or one that has not reached DynamoDB yet, does not pay for it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: One configuration for every use of a service: short enough for the request path (an API key
#: read, a counter, a cache lookup), long enough for an admin Scan page (1 MB at most). botocore's
#: standard retries cover throttling and 5xx: 3 attempts in all.
_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 5}
_RETRIES = {"mode": "standard", "max_attempts": 3}

_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A forked child (``gunicorn --preload``) builds its own clients: a client's pooled
    connections must not be shared by two processes, and the lock may have been held."""
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def client(service: str, region: str) -> Any:
    """This process's boto3 client for ``service`` in ``region``, built on first use."""
    key = (service, region)
    built = _clients.get(key)
    if built is None:
        with _lock:
            built = _clients.get(key)
            if built is None:
                import boto3
                from botocore.config import Config

                built = _clients[key] = boto3.client(service, region_name=region,
                                                     config=Config(**_TIMEOUTS, retries=_RETRIES))
    return built


def forget_clients() -> None:
    """Drop every client, so the next :func:`client` builds one from the environment of now."""
    with _lock:
        _clients.clear()


@dataclass(frozen=True)
class Table:
    """A DynamoDB table the gateway uses: on-demand, a string hash key, optional GSIs and TTL.

    ``indexes`` maps an index name to its (hash, range) key attributes (range None for none);
    ``attributes`` gives the types of the index key attributes ("S", "N"). Every index projects
    every attribute. cloudformation/data.yaml declares the same tables (tests/deploy checks it).
    """

    name: str
    key: str
    ttl_attribute: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    indexes: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    def create_arguments(self) -> dict[str, Any]:
        """The ``CreateTable`` arguments of this table."""
        arguments: dict[str, Any] = {
            "TableName": self.name, "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": self.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": name, "AttributeType": kind}
                                     for name, kind in {self.key: "S", **self.attributes}.items()],
        }
        if self.indexes:
            arguments["GlobalSecondaryIndexes"] = [
                {"IndexName": name, "Projection": {"ProjectionType": "ALL"},
                 "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"}]
                 + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])}
                for name, (hash_key, range_key) in self.indexes.items()]
        return arguments


def create_tables(dynamodb: Any, tables: Iterable[Table]) -> None:
    """Create the tables that do not exist, wait until all are active, and turn on TTL where a
    table has one (idempotent). On AWS CloudFormation creates them; this is for local use and tests."""
    tables = list(tables)
    for table in tables:
        try:
            dynamodb.create_table(**table.create_arguments())
        except dynamodb.exceptions.ResourceInUseException:
            pass
    waiter = dynamodb.get_waiter("table_exists")
    for table in tables:
        waiter.wait(TableName=table.name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        if table.ttl_attribute is None:
            continue
        ttl = dynamodb.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(TableName=table.name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": table.ttl_attribute})
