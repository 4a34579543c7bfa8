"""Store ports: what the core and plugins need from storage, whatever holds it.

Each port has two adapters (``sqlite.py``, ``dynamodb.py``) and one contract test
suite (``tests/contract``) that every adapter passes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.types import RequestLogRecord

AVAILABILITY = ("in-stock", "limited", "out-of-stock")
#: What the catalog's grounding check does with a key's answers: nothing, say what it found, or refuse
#: an answer the catalog contradicts (``ApiKey.grounding``; None follows the global setting).
GROUNDING_MODES = ("off", "annotate", "block")


@dataclass
class ApiKey:
    """A stored API key. Only ``key_hash`` (an HMAC of the secret) is stored, never the key."""

    key_id: str
    user_id: str
    key_hash: str
    tier: str = "free"
    permissions: list[str] = field(default_factory=lambda: ["completions"])
    active: bool = True
    created_at: float = 0.0
    expires_at: float | None = None
    name: str = ""
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    #: Calls in flight at once for this key; None follows its tier's ``concurrent_requests``.
    concurrent_requests: int | None = None
    #: Models this key may use; None allows every model.
    allowed_models: list[str] | None = None
    #: When the key last authenticated a request (written at most once a minute).
    last_used_at: float | None = None
    #: Catalog context injection for this key's requests that do not say; None follows the global setting.
    mcp_context: bool | None = None
    #: The grounding check for this key's answers, one of ``GROUNDING_MODES``; None follows the global setting.
    grounding: str | None = None


#: The fields of a key that ``KeyStore.update_key`` may change (never the hash, owner or id).
UPDATABLE_KEY_FIELDS = frozenset({"tier", "permissions", "active", "expires_at", "name",
                                  "requests_per_minute", "requests_per_hour", "concurrent_requests",
                                  "allowed_models", "mcp_context", "grounding"})


@dataclass
class Product:
    """A catalog product (the fields of DESIGN.md)."""

    product_id: str
    name: str
    category: str
    price: float
    brand: str = ""
    availability: str = "in-stock"
    description: str = ""
    rating: float = 0.0


class KeyStore(Protocol):
    """API keys by id and by user."""

    def put_key(self, key: ApiKey) -> None:
        """Create or replace ``key``."""

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None."""

    def list_keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Every key, or one user's keys, oldest first."""

    def set_key_active(self, key_id: str, active: bool) -> bool:
        """Activate or revoke a key; False when there is no such key."""

    def update_key(self, key_id: str, changes: dict) -> ApiKey | None:
        """Change some of a key's ``UPDATABLE_KEY_FIELDS`` (None clears an optional one).

        Returns the updated key, or None when there is no such key.
        """

    def touch_last_used(self, key_id: str, at: float, min_interval: float = 0.0) -> bool:
        """Record that the key was used at ``at`` (epoch seconds), unless it was recorded less
        than ``min_interval`` seconds before (by any instance). True when written."""

    def change_marker(self) -> object | None:
        """A value that differs from the one this thread saw last whenever another connection
        changed the store meanwhile (a key revoked by another worker): caches of keys compare it
        on every use. None when the store cannot tell cheaply; caches then expire by time."""


class ProductStore(Protocol):
    """The product catalog."""

    def put_products(self, products: Iterable[Product]) -> int:
        """Insert or replace products as one unit where the store allows; returns the count."""

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id, or None."""

    def list_products(self, *, category: str | None = None, brand: str | None = None,
                      min_price: float | None = None, max_price: float | None = None,
                      availability: str | None = None) -> list[Product]:
        """Products matching every given filter, cheapest first for a category query."""

    def delete_product(self, product_id: str) -> bool:
        """Delete a product; False when there was none."""


class RequestLogStore(Protocol):
    """The request log (analytics)."""

    def put_record(self, record: RequestLogRecord, expires_at: int) -> None:
        """Append one record; ``expires_at`` is its retention deadline (epoch seconds)."""

    def put_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """Append several ``(record, expires_at)`` pairs in as few writes as the store allows.

        The same rows as ``put_record`` for each pair (a request id given twice keeps its
        last version); an empty sequence writes nothing. When it raises, some records may
        already be stored; writing them again replaces them with the same rows, so a
        caller that must keep every record writes them again one by one.
        """

    def add_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """Add each record's ``count`` to the stored record with its request id, creating it from the
        record when there is none: how folded refusals from many flushes, workers and instances
        end up in one row (gateway/refusals.py). Its other fields are the first writer's (latency:
        the mean where the store can compute it)."""

    def records_for_user(self, user_id: str, start: float = 0.0,
                         end: float | None = None) -> list[RequestLogRecord]:
        """A user's records with ``start <= timestamp < end``, oldest first."""

    def purge_expired_records(self, now: float) -> int:
        """Delete records whose retention deadline is at or before ``now`` where the store does not
        expire them itself (DynamoDB's TTL does); returns how many were deleted."""


class Store(KeyStore, ProductStore, RequestLogStore, Protocol):
    """Everything the gateway stores, behind one object per app."""

    def init(self) -> None:
        """Create tables (idempotent)."""

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
