"""The DynamoDB store: the three tables of DESIGN.md ("Data"), through the low-level boto3 client.

The client is used rather than a boto3 resource because clients are thread-safe and
resources are not; it is the process's one DynamoDB client (:func:`gateway.aws.client`).
Items go through boto3's own ``TypeSerializer``/``TypeDeserializer``: numbers are written
from ``Decimal`` (a float through its ``repr``, as boto3 wants no float) and come back as
``float``/``int``. Empty strings are not written (DynamoDB rejects them as index keys,
e.g. a product without a brand); missing attributes read back as "".

This module imports boto3's DynamoDB types: :func:`gateway.store.open_store` imports it
only when the store is DynamoDB, so a gateway on SQLite never loads boto3.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.table import BatchWriter
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from gateway import aws
from gateway.store.base import UPDATABLE_KEY_FIELDS, ApiKey, Product
from gateway.types import RequestLogRecord

if TYPE_CHECKING:
    from gateway.config import Settings

USER_INDEX = "UserIdGlobalSecondaryIndex"
CATEGORY_INDEX = "CategoryPriceGlobalSecondaryIndex"
BRAND_INDEX = "BrandAvailabilityGlobalSecondaryIndex"
ANALYTICS_INDEX = "UserAnalyticsGlobalSecondaryIndex"
TTL_ATTRIBUTE = "expirationTimestamp"
#: The request log attribute holding the tokens of the adds applied to a row (``add_records``).
ADD_TOKENS = "addTokens"
#: How often in a row BatchWriter may get items back unprocessed (throttling) before the write
#: fails; the pause before each resend starts at UNPROCESSED_BACKOFF s and doubles (0.75 s in all).
UNPROCESSED_RETRIES = 4
UNPROCESSED_BACKOFF = 0.05

#: boto3's own (de)serializer, though it costs about twice the hand-written one it replaced:
#: 20-29 us against 12 us to build a request-log item, 16-23 against 13 us to read one (20
#: attributes; measured on a shared 2-core host). Where the request log is written in the
#: request's thread (Lambda) that is some 15 us, 1 % of a completion's CPU; elsewhere it is the
#: background writer's. One less converter of our own to keep right is worth it.
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class UnprocessedItemsError(RuntimeError):
    """BatchWriteItem still left items unprocessed after every retry."""


def _to_av(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB AttributeValue (boto3's serializer; a float as the Decimal of its repr)."""
    return _serializer.serialize(Decimal(repr(value)) if isinstance(value, float) else value)


def _item(attributes: dict[str, Any]) -> dict[str, Any]:
    """An item from plain attributes, leaving out None and empty strings."""
    return {name: _to_av(value) for name, value in attributes.items()
            if value is not None and value != ""}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item's attributes as Python values (boto3's deserializer: numbers as ``Decimal``)."""
    return {name: _deserializer.deserialize(av) for name, av in item.items()}


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _key_item(key: ApiKey) -> dict[str, Any]:
    limits = {"requestsPerMinute": key.requests_per_minute, "requestsPerHour": key.requests_per_hour,
              "concurrentRequests": key.concurrent_requests}
    return _item({
        "apiKeyId": key.key_id, "userId": key.user_id, "apiKeyHash": key.key_hash,
        "tier": key.tier, "permissions": sorted(key.permissions), "active": key.active,
        "createdAt": key.created_at, "expiresAt": key.expires_at, "name": key.name,
        "rateLimit": {k: v for k, v in limits.items() if v is not None} or None,
        "allowedModels": sorted(key.allowed_models) if key.allowed_models is not None else None,
        "lastUsedAt": key.last_used_at,
        "mcpContext": key.mcp_context,
        "grounding": key.grounding,
    })


#: ApiKey field -> the item attribute that holds it.
_KEY_ATTRIBUTE = {"tier": "tier", "permissions": "permissions", "active": "active",
                  "expires_at": "expiresAt", "name": "name", "requests_per_minute": "rateLimit",
                  "requests_per_hour": "rateLimit", "concurrent_requests": "rateLimit",
                  "allowed_models": "allowedModels",
                  "mcp_context": "mcpContext", "grounding": "grounding"}


def _key_from_item(item: dict[str, Any]) -> ApiKey:
    values = _plain(item)
    limits = values.get("rateLimit", {})
    return ApiKey(
        key_id=values["apiKeyId"], user_id=values.get("userId", ""),
        key_hash=values.get("apiKeyHash", ""), tier=values.get("tier", ""),
        permissions=list(values.get("permissions", [])), active=values["active"],
        created_at=float(values.get("createdAt", 0)),
        expires_at=_optional(float, values.get("expiresAt")), name=values.get("name", ""),
        requests_per_minute=_optional(int, limits.get("requestsPerMinute")),
        requests_per_hour=_optional(int, limits.get("requestsPerHour")),
        concurrent_requests=_optional(int, limits.get("concurrentRequests")),
        allowed_models=list(values["allowedModels"]) if "allowedModels" in values else None,
        last_used_at=_optional(float, values.get("lastUsedAt")),
        mcp_context=_optional(bool, values.get("mcpContext")),
        grounding=values.get("grounding"),
    )


def _product_item(product: Product) -> dict[str, Any]:
    return _item({
        "productId": product.product_id, "name": product.name, "category": product.category,
        "price": product.price, "brand": product.brand, "availability": product.availability,
        "description": product.description, "rating": product.rating,
    })


def _product_from_item(item: dict[str, Any]) -> Product:
    values = _plain(item)
    return Product(
        product_id=values["productId"], name=values.get("name", ""),
        category=values.get("category", ""), price=float(values.get("price", 0)),
        brand=values.get("brand", ""), availability=values.get("availability", ""),
        description=values.get("description", ""), rating=float(values.get("rating", 0)),
    )


def _record_item(record: RequestLogRecord, expires_at: int) -> dict[str, Any]:
    return _item({
        "requestId": record.request_id, "correlationId": record.correlation_id,
        "timestamp": record.timestamp, "userId": record.user_id, "apiKeyId": record.api_key_id,
        "tier": record.tier, "model": record.model, "provider": record.provider,
        "promptTokens": record.prompt_tokens, "completionTokens": record.completion_tokens,
        "tokens": record.tokens, "cost": record.cost, "latency": record.latency_ms,
        "upstreamLatency": record.upstream_latency_ms, "status": record.status,
        "errorCode": record.error_code, "streamed": record.streamed, "cached": record.cached,
        "savedCost": record.saved_cost, "promptText": record.prompt_text,
        "completionText": record.completion_text, TTL_ATTRIBUTE: int(expires_at),
        "count": record.count if record.count != 1 else None,
        "checks": record.checks or None,
    })


def _record_from_item(item: dict[str, Any]) -> RequestLogRecord:
    values = _plain(item)
    return RequestLogRecord(
        request_id=values["requestId"], correlation_id=values.get("correlationId", ""),
        timestamp=float(values["timestamp"]), user_id=values.get("userId", ""),
        api_key_id=values.get("apiKeyId", ""), tier=values.get("tier", ""),
        model=values.get("model", ""), provider=values.get("provider", ""),
        prompt_tokens=int(values.get("promptTokens", 0)),
        completion_tokens=int(values.get("completionTokens", 0)),
        cost=float(values.get("cost", 0)), latency_ms=float(values.get("latency", 0)),
        upstream_latency_ms=float(values.get("upstreamLatency", 0)),
        status=int(values.get("status", 200)), error_code=values.get("errorCode", ""),
        streamed=values.get("streamed", False), cached=values.get("cached", False),
        saved_cost=float(values.get("savedCost", 0)), prompt_text=values.get("promptText", ""),
        completion_text=values.get("completionText", ""), count=int(values.get("count", 1)),
        checks=dict(values.get("checks") or {}),
    )


class _Expression:
    """Placeholders for one request's condition expressions (so reserved words never clash)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        self.names[f"#{attribute}"] = attribute
        return f"#{attribute}"

    def value(self, value: Any) -> str:
        return self.serialized(_to_av(value))

    def serialized(self, av: dict[str, Any]) -> str:
        """A placeholder for a value already in AttributeValue form (an item's attribute)."""
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = av
        return placeholder

    def equals(self, attribute: str, value: Any) -> str:
        """``attribute = value``; an empty string matches items without the attribute."""
        if value == "":
            return f"attribute_not_exists({self.name(attribute)})"
        return f"{self.name(attribute)} = {self.value(value)}"

    def between(self, attribute: str, low: Any, high: Any) -> list[str]:
        """``low <= attribute <= high``, either bound optional (zero or one condition)."""
        if low is not None and high is not None:
            return [f"{self.name(attribute)} BETWEEN {self.value(low)} AND {self.value(high)}"]
        if low is not None:
            return [f"{self.name(attribute)} >= {self.value(low)}"]
        if high is not None:
            return [f"{self.name(attribute)} <= {self.value(high)}"]
        return []

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.names:
            params["ExpressionAttributeNames"] = self.names
        if self.values:
            params["ExpressionAttributeValues"] = self.values
        return params


def tables(api_key_table: str, product_table: str, request_log_table: str) -> list[aws.Table]:
    """The store's three tables (cloudformation/data.yaml declares the same)."""
    return [
        aws.Table(api_key_table, "apiKeyId", attributes={"userId": "S", "createdAt": "N"},
                  indexes={USER_INDEX: ("userId", "createdAt")}),
        aws.Table(product_table, "productId",
                  attributes={"category": "S", "price": "N", "brand": "S", "availability": "S"},
                  indexes={CATEGORY_INDEX: ("category", "price"), BRAND_INDEX: ("brand", "availability")}),
        aws.Table(request_log_table, "requestId", ttl_attribute=TTL_ATTRIBUTE,
                  attributes={"userId": "S", "timestamp": "N"}, indexes={ANALYTICS_INDEX: ("userId", "timestamp")}),
    ]


class _PacedBatches:
    """The client a BatchWriter sends through. BatchWriter resends the items DynamoDB leaves
    unprocessed (it throttles) at once and without end; AWS asks for a growing pause, and a
    request log writer must not spin. So the resend after a call that left some waits
    ``UNPROCESSED_BACKOFF`` s, doubling, and a call past ``UNPROCESSED_RETRIES`` such calls in a
    row raises :class:`UnprocessedItemsError` instead. Everything else is BatchWriter's."""

    def __init__(self, client: Any):
        self.client = client
        self._left_unprocessed = 0

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        """``client.batch_write_item``, paced after unprocessed items; bounded."""
        if self._left_unprocessed > UNPROCESSED_RETRIES:
            raise UnprocessedItemsError(f"BatchWriteItem left items unprocessed {self._left_unprocessed} times")
        if self._left_unprocessed:
            time.sleep(UNPROCESSED_BACKOFF * 2 ** (self._left_unprocessed - 1))
        response = self.client.batch_write_item(**params)
        self._left_unprocessed = self._left_unprocessed + 1 if response.get("UnprocessedItems") else 0
        return response


class DynamoDBStore:
    """Every port over three DynamoDB tables."""

    def __init__(self, client: Any, *, api_key_table: str, product_table: str,
                 request_log_table: str, page_size: int | None = None):
        """Wrap a boto3 DynamoDB client.

        ``page_size`` caps the items of each Query/Scan page (DynamoDB's ``Limit``);
        every page is still read.
        """
        self.client = client
        self.api_key_table = api_key_table
        self.product_table = product_table
        self.request_log_table = request_log_table
        self.page_size = page_size

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoDBStore:
        """A store on the settings' tables and region.

        The client is the process's (:func:`gateway.aws.client`), on boto3's endpoint.
        """
        client = aws.client("dynamodb", settings.aws_region)
        return cls(client, api_key_table=settings.table("api-keys"),
                   product_table=settings.table("product-catalog"),
                   request_log_table=settings.table("request-analytics"))

    def init(self) -> None:
        """Create the tables and enable the request log's TTL (idempotent); wait until active."""
        aws.create_tables(self.client, tables(self.api_key_table, self.product_table, self.request_log_table))

    def ping(self) -> None:
        """Raise (a botocore error) when the API keys table cannot be described."""
        self.client.describe_table(TableName=self.api_key_table)

    def _all(self, operation: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a Query or Scan, following ``LastEvaluatedKey``."""
        call = getattr(self.client, operation)
        if self.page_size:
            params["Limit"] = self.page_size
        items: list[dict[str, Any]] = []
        while True:
            page = call(**params)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # API keys
    def put_key(self, key: ApiKey) -> None:
        """Create or replace ``key``."""
        self.client.put_item(TableName=self.api_key_table, Item=_key_item(key))

    def change_marker(self) -> None:
        """DynamoDB cannot tell cheaply: cached keys expire after ``key_cache_ttl`` (5 s)."""
        return None

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id (strongly consistent read), or None."""
        item = self.client.get_item(TableName=self.api_key_table, Key={"apiKeyId": {"S": key_id}},
                                    ConsistentRead=True).get("Item")
        return _key_from_item(item) if item else None

    def list_keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Every key (a Scan: admin listing), or one user's keys (UserId index), oldest first."""
        if user_id is None:
            items = self._all("scan", TableName=self.api_key_table)
        elif not user_id:
            return []
        else:
            expr = _Expression()
            items = self._all("query", TableName=self.api_key_table, IndexName=USER_INDEX,
                              KeyConditionExpression=expr.equals("userId", user_id), **expr.params())
        return sorted(map(_key_from_item, items), key=lambda k: (k.created_at, k.key_id))

    def set_key_active(self, key_id: str, active: bool) -> bool:
        """Activate or revoke a key; False when there is no such key."""
        try:
            self.client.update_item(
                TableName=self.api_key_table, Key={"apiKeyId": {"S": key_id}},
                UpdateExpression="SET #active = :active",
                ConditionExpression="attribute_exists(#apiKeyId)",
                ExpressionAttributeNames={"#active": "active", "#apiKeyId": "apiKeyId"},
                ExpressionAttributeValues={":active": {"BOOL": bool(active)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def update_key(self, key_id: str, changes: dict) -> ApiKey | None:
        """Change some of a key's updatable fields in one conditional UpdateItem.

        The attributes the changed fields map to are SET (or REMOVEd when now empty);
        ``lastUsedAt`` and the identity attributes are never part of it, so a
        concurrent ``touch_last_used`` is not lost.
        """
        from dataclasses import replace

        unknown = set(changes) - UPDATABLE_KEY_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        current = self.get_key(key_id)
        if current is None or not changes:
            return current
        updated = replace(current, **changes)
        item = _key_item(updated)
        attributes = {_KEY_ATTRIBUTE[name] for name in changes}
        expr = _Expression()
        sets = [f"{expr.name(a)} = {expr.serialized(item[a])}" for a in sorted(attributes) if a in item]
        removes = [expr.name(a) for a in sorted(attributes) if a not in item]
        update = " ".join(part for part in (
            f"SET {', '.join(sets)}" if sets else "", f"REMOVE {', '.join(removes)}" if removes else "") if part)
        try:
            self.client.update_item(TableName=self.api_key_table, Key={"apiKeyId": {"S": key_id}},
                                    UpdateExpression=update,
                                    ConditionExpression=f"attribute_exists({expr.name('apiKeyId')})",
                                    **expr.params())
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return updated

    def touch_last_used(self, key_id: str, at: float, min_interval: float = 0.0) -> bool:
        """Record the key's last use (``lastUsedAt``) unless recorded less than ``min_interval``
        s before: one conditional UpdateItem, so instances never write it more often."""
        expr = _Expression()
        last = expr.name("lastUsedAt")
        condition = (f"attribute_exists({expr.name('apiKeyId')}) AND "
                     f"(attribute_not_exists({last}) OR {last} <= {expr.value(at - min_interval)})")
        try:
            self.client.update_item(TableName=self.api_key_table, Key={"apiKeyId": {"S": key_id}},
                                    UpdateExpression=f"SET {last} = {expr.value(at)}",
                                    ConditionExpression=condition, **expr.params())
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # Products
    def put_products(self, products: Iterable[Product]) -> int:
        """Insert or replace products in batches of 25; returns the count.

        Not all-or-nothing: DynamoDB has no transaction over more than 100 items, so a
        failure part-way leaves the earlier batches written. Callers validate first.
        A product id given twice keeps its last version, as SQLite's replace does.
        """
        count = 0
        with self._batch_writer(self.product_table, "productId") as batch:
            for product in products:
                batch.put_item(Item=_product_item(product))
                count += 1
        return count

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id (strongly consistent read), or None."""
        item = self.client.get_item(TableName=self.product_table, Key={"productId": {"S": product_id}},
                                    ConsistentRead=True).get("Item")
        return _product_from_item(item) if item else None

    def list_products(self, *, category: str | None = None, brand: str | None = None,
                      min_price: float | None = None, max_price: float | None = None,
                      availability: str | None = None) -> list[Product]:
        """Products matching every given filter, by price then id.

        A category Queries the CategoryPrice index (price bounds in the key condition);
        else a brand Queries the BrandAvailability index (availability in the key
        condition); only with neither is the table Scanned. Other filters are
        FilterExpressions.
        """
        if min_price is not None and max_price is not None and min_price > max_price:
            return []
        expr = _Expression()
        params: dict[str, Any] = {"TableName": self.product_table}
        keys: list[str] = []
        in_key: set[str] = set()
        if category:
            params["IndexName"], in_key = CATEGORY_INDEX, {"category", "price"}
            keys = [expr.equals("category", category), *expr.between("price", min_price, max_price)]
        elif brand:
            params["IndexName"], in_key = BRAND_INDEX, {"brand"}
            keys = [expr.equals("brand", brand)]
            if availability:
                in_key.add("availability")
                keys.append(expr.equals("availability", availability))
        filters = [] if "price" in in_key else expr.between("price", min_price, max_price)
        for attribute, value in (("category", category), ("brand", brand), ("availability", availability)):
            if value is not None and attribute not in in_key:
                filters.append(expr.equals(attribute, value))
        if keys:
            params["KeyConditionExpression"] = " AND ".join(keys)
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        items = self._all("query" if keys else "scan", **params, **expr.params())
        return sorted(map(_product_from_item, items), key=lambda p: (p.price, p.product_id))

    def delete_product(self, product_id: str) -> bool:
        """Delete a product; False when there was none."""
        old = self.client.delete_item(TableName=self.product_table, Key={"productId": {"S": product_id}},
                                      ReturnValues="ALL_OLD")
        return "Attributes" in old

    # Request log
    def put_record(self, record: RequestLogRecord, expires_at: int) -> None:
        """Append one record; ``expires_at`` becomes the TTL attribute ``expirationTimestamp``."""
        self.client.put_item(TableName=self.request_log_table, Item=_record_item(record, expires_at))

    def put_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """Append ``(record, expires_at)`` pairs with BatchWriteItem, 25 per call (boto3's BatchWriter).

        BatchWriteItem fits: each record is an unconditional put keyed by its request id,
        exactly what ``put_record`` sends, at one round trip per 25 records. A request id
        given twice keeps its last version. Items left unprocessed are sent again, paced and
        bounded (:meth:`_batch_writer`). Not all-or-nothing: earlier calls stay written when
        a later one fails.
        """
        with self._batch_writer(self.request_log_table, "requestId") as batch:
            for record, expires_at in items:
                batch.put_item(Item=_record_item(record, expires_at))

    def add_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """One UpdateItem per record: ``ADD count``, every other attribute set (latency: this
        record's; DynamoDB cannot weigh two means).

        Each update carries a token of its own, added to the row's ``addTokens`` set under the
        condition that the set lacks it: when botocore resends an update whose answer was lost
        (a timeout after DynamoDB applied it), the resend fails that condition and is not
        counted again. A caller that calls again after this raised sends a new token, so a
        count may still be doubled when every one of botocore's attempts lost its answer after
        one was applied (gateway/refusals.py).
        """
        for record, expires_at in items:
            item = _record_item(record, expires_at)
            item.pop("count", None)
            expr = _Expression()
            sets = ", ".join(f"{expr.name(name)} = {expr.serialized(value)}" for name, value in item.items()
                             if name != "requestId")
            token = uuid.uuid4().hex
            tokens = expr.name(ADD_TOKENS)
            try:
                self.client.update_item(
                    TableName=self.request_log_table, Key={"requestId": item["requestId"]},
                    UpdateExpression=f"SET {sets} ADD {expr.name('count')} {expr.value(record.count)}, "
                                     f"{tokens} {expr.serialized({'SS': [token]})}",
                    ConditionExpression=f"NOT contains({tokens}, {expr.value(token)})", **expr.params())
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # a resend of an update DynamoDB had applied

    def _batch_writer(self, table: str, key: str) -> BatchWriter:
        """boto3's BatchWriter for ``table`` (a key given twice keeps its last item), sending through
        :class:`_PacedBatches` so that items DynamoDB leaves unprocessed are resent after a pause,
        a bounded number of times."""
        return BatchWriter(table, _PacedBatches(self.client), overwrite_by_pkeys=[key])

    def records_for_user(self, user_id: str, start: float = 0.0,
                         end: float | None = None) -> list[RequestLogRecord]:
        """A user's records with ``start <= timestamp < end``, oldest first (UserAnalytics index).

        Records without a user id are not in the index, so ``user_id=""`` finds none.
        """
        if not user_id or (end is not None and end <= start):
            return []
        expr = _Expression()
        keys = [expr.equals("userId", user_id), *expr.between("timestamp", start, end)]
        items = self._all("query", TableName=self.request_log_table, IndexName=ANALYTICS_INDEX,
                          KeyConditionExpression=" AND ".join(keys), **expr.params())
        records = [r for r in map(_record_from_item, items) if end is None or r.timestamp < end]
        return sorted(records, key=lambda r: (r.timestamp, r.request_id))

    def purge_expired_records(self, now: float) -> int:
        """Nothing to do: DynamoDB's TTL on ``expirationTimestamp`` deletes expired records itself.

        Returns 0. (A purge here would need a Scan of the whole table.)
        """
        return 0
