"""The response cache: exact-match answers for repeatable requests, scoped per API key.

A request is cacheable when it is not streamed and either asks for ``temperature: 0``
or opts in with ``X-Gateway-Cache: on``. The key is a hash of the normalized request
(model, provider, messages, parameters, options) prefixed by the caller's key id, so
one tenant never receives another's answer. ``Cache-Control: no-cache`` skips the
lookup (the fresh answer replaces the stored one); ``no-store`` skips the cache
entirely.

Storage is chosen by the ``response_cache`` setting's URI:

- ``memory://?max_entries=N``: a bounded LRU in this process (local, one worker).
- ``redis://host:port/db``: shared by every worker; entries expire with Redis' own TTL.
- ``dynamodb://table-name``: for Lambda; items carry ``expiresAt`` (the table's TTL
  attribute) and expired items are ignored until DynamoDB deletes them.

The backends are small classes of our own: no maintained library offers one
get/set-with-TTL interface over these three stores without bringing a framework along.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from gateway.errors import ConfigError
from gateway.types import Caller, Completion, Result, Usage

logger = logging.getLogger(__name__)

OPT_IN_HEADER = "X-Gateway-Cache"
HIT, MISS = "HIT", "MISS"
DEFAULT_MAX_ENTRIES = 1000
_STATE = "response_cache"


class CacheBackend(Protocol):
    """Bytes by key, with a time to live."""

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when absent or expired."""

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""


class MemoryBackend:
    """A bounded, thread-safe LRU with per-entry expiry."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """The live value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value``; the least recently used entry goes when the cache is full."""
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisBackend:
    """Entries in Redis (``SET key value EX ttl``), shared by every worker."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None (Redis drops expired keys itself)."""
        return self.client.get(f"gateway:cache:{key}")

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        self.client.set(f"gateway:cache:{key}", value, ex=ttl)


class DynamoDBBackend:
    """Entries in a DynamoDB table keyed by ``cacheKey``, with TTL attribute ``expiresAt``."""

    KEY_ATTRIBUTE = "cacheKey"
    TTL_ATTRIBUTE = "expiresAt"

    def __init__(self, table: str, region: str):
        import boto3
        from botocore.config import Config

        self.table = table
        self.client = boto3.client("dynamodb", region_name=region, config=Config(
            connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2}))

    def create_table(self) -> None:
        """Create the table and enable its TTL (for local use and tests; CloudFormation does it on AWS)."""
        self.client.create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": self.KEY_ATTRIBUTE, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": self.KEY_ATTRIBUTE, "AttributeType": "S"}])
        self.client.get_waiter("table_exists").wait(TableName=self.table)
        self.client.update_time_to_live(TableName=self.table, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": self.TTL_ATTRIBUTE})

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or past its ``expiresAt``."""
        item = self.client.get_item(TableName=self.table, Key={self.KEY_ATTRIBUTE: {"S": key}}).get("Item")
        if item is None or int(item[self.TTL_ATTRIBUTE]["N"]) <= time.time():
            return None
        return item["value"]["B"]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value`` until now + ``ttl`` seconds."""
        self.client.put_item(TableName=self.table, Item={
            self.KEY_ATTRIBUTE: {"S": key}, "value": {"B": value},
            self.TTL_ATTRIBUTE: {"N": str(int(time.time()) + ttl)}})


def open_backend(uri: str, region: str = "us-east-1") -> CacheBackend | None:
    """The backend a ``response_cache`` URI names; None for "" (the cache is off)."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "memory":
        query = parse_qs(parts.query)
        try:
            max_entries = int(query.get("max_entries", [DEFAULT_MAX_ENTRIES])[0])
        except ValueError:
            max_entries = 0
        if max_entries < 1:
            raise ConfigError(f"response_cache {uri!r}: max_entries must be a positive integer")
        return MemoryBackend(max_entries)
    if parts.scheme in ("redis", "rediss"):
        return RedisBackend(uri)
    if parts.scheme == "dynamodb" and parts.netloc:
        return DynamoDBBackend(parts.netloc, region)
    raise ConfigError(f"response_cache {uri!r}: use memory://, redis://host:port/db or dynamodb://table")


@dataclass
class CachedAnswer:
    """A stored answer: the result, who served it, and what it cost then."""

    result: Result
    provider: str
    model: str
    cost: float

    def to_bytes(self) -> bytes:
        """The JSON form kept by the backend (an upstream's own answer body as text)."""
        values = asdict(self)
        body = self.result.body
        values["result"]["body"] = None if body is None else body.decode()
        return json.dumps(values, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer:
        """Read back what :meth:`to_bytes` wrote."""
        values = json.loads(data)
        return cls(_result(values["result"]), values["provider"], values["model"], values["cost"])


def _result(values: dict[str, Any]) -> Result:
    """A :class:`Result` from its ``asdict`` form, its extra choices included."""
    values["usage"] = Usage(**values["usage"])
    values["extra_choices"] = [_result(choice) for choice in values.get("extra_choices") or ()]
    if values.get("body") is not None:
        values["body"] = values["body"].encode()
    return Result(**values)


def request_key(caller: Caller, completion: Completion) -> str:
    """The cache key of ``completion`` for ``caller``: its key id, then a hash of the normalized request."""
    parameters = {name: int(value) if isinstance(value, float) and value.is_integer() else value
                  for name, value in completion.parameters.items()}  # temperature 0 and 0.0 are one request
    normalized = json.dumps({"model": completion.model, "provider": completion.provider,
                             "messages": completion.messages, "parameters": parameters,
                             "options": completion.options},
                            sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{caller.key_id}:{hashlib.sha256(normalized.encode()).hexdigest()}"


@dataclass(eq=False)
class Lookup:
    """The cache's answer for one request: ``status`` is HIT, MISS, or "" when the request is not cached."""

    status: str = ""
    hit: CachedAnswer | None = None
    key: str = ""
    backend: CacheBackend | None = None
    ttl: int = 0

    def store(self, answer: CachedAnswer) -> None:
        """Keep a fresh answer for the next identical request (nothing when not cacheable)."""
        if self.backend is not None and self.key:
            try:
                self.backend.set(self.key, answer.to_bytes(), self.ttl)
            except Exception as exc:  # a cache that is down costs a provider call, never the answer
                logger.warning("response cache write failed", extra={"error": type(exc).__name__})


def _wants_cache(completion: Completion, headers: Any) -> bool:
    opted_in = headers.get(OPT_IN_HEADER, "").strip().lower() in ("on", "true", "1")
    return opted_in or completion.parameters.get("temperature") == 0


def backend_for(gateway) -> CacheBackend | None:
    """This app's cache backend, opened on first use (None when the cache is off)."""
    state = gateway.state
    if _STATE not in state:
        state.setdefault(_STATE, open_backend(gateway.settings.response_cache, gateway.settings.aws_region))
    return state[_STATE]


def lookup(gateway, headers: Any, completion: Completion, caller: Caller, *, always: bool = False) -> Lookup:
    """Look ``completion`` up for ``caller``, honouring ``Cache-Control`` in the request ``headers``;
    ``always``: cacheable whatever its temperature (a deterministic request, such as embeddings)."""
    backend = backend_for(gateway)
    if backend is None or completion.stream or not (always or _wants_cache(completion, headers)):
        return Lookup()
    directives = {d.strip().lower() for d in headers.get("Cache-Control", "").split(",")}
    if "no-store" in directives:
        return Lookup()
    found = Lookup(MISS, None, request_key(caller, completion), backend, gateway.settings.response_cache_ttl)
    if "no-cache" not in directives:
        try:
            data = backend.get(found.key)
        except Exception as exc:  # a cache that is down is a miss
            logger.warning("response cache read failed", extra={"error": type(exc).__name__})
            data = None
        if data is not None:
            found.status, found.hit = HIT, CachedAnswer.from_bytes(data)
    return found
