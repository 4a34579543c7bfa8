"""Leases on calls in flight: the store side of the per-key concurrency limit.

A call in flight holds a *lease*: a random id with an expiry, filed under its API key in
the limit store, as a row (SQLite), a sorted-set member (Redis) or a map entry of one item
(DynamoDB). A key has as many calls in flight as it has unexpired leases. A lease is
granted only while the key has fewer than its limit, in one atomic step of the store, so
the limit is exact across every worker and instance that shares the store. The holder
renews its leases before they expire (:mod:`gateway.concurrency`) and deletes each when
its call ends; the leases of a holder that crashed just expire.

``limits`` counts events in time windows; it has no semaphore (a count that goes down
again when a call ends), so these adapters are our own, on the very storages and
connections the rate-limit counters use. :func:`leases_for` picks the one for a
``limits`` storage. Each costs one round trip to take a lease and one to give it back.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from limits.storage import MemoryStorage, RedisStorage, Storage

from gateway.errors import ConfigError
from gateway.limit_storage import KEY_ATTRIBUTE, TTL_ATTRIBUTE, DynamoDBStorage, SQLiteStorage

#: Where a key's leases live, beside its counters.
PREFIX = "LEASES/"


class LeaseStore(Protocol):
    """What the concurrency limit needs from a store."""

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> bool:
        """File ``lease`` under ``key`` for ``ttl`` seconds if ``key`` holds fewer than ``limit``
        unexpired leases (atomically); False when it holds ``limit`` already."""

    def release(self, key: str, lease: str) -> None:
        """Delete ``lease`` (nothing when it is gone already)."""

    def renew(self, held: Mapping[str, Sequence[str]], ttl: float) -> None:
        """Push the expiry of every lease in ``held`` (key -> leases) to ``ttl`` seconds from now;
        a lease that expired meanwhile stays expired (it may have been counted free already)."""


_SQLITE_ACQUIRE = """
INSERT INTO leases (key, lease, expires_at) SELECT :key, :lease, :now + :ttl
WHERE (SELECT count(*) FROM leases WHERE key = :key AND expires_at > :now) < :limit
"""


class SQLiteLeases:
    """Leases as rows of the counters file's ``leases`` table: one statement to take one (run inside
    the rate-limit hit's transaction when there is one), one to give it back."""

    def __init__(self, storage: SQLiteStorage):
        self.storage = storage

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> bool:
        """One ``INSERT … SELECT … WHERE (live count) < limit``: SQLite runs it under the write lock."""
        cursor = self.storage.connection().execute(_SQLITE_ACQUIRE, {
            "key": key, "lease": lease, "now": time.time(), "ttl": ttl, "limit": limit})
        return cursor.rowcount == 1

    def release(self, key: str, lease: str) -> None:
        """Delete the lease, and with it the key's expired leases (a crashed worker's)."""
        self.storage.connection().execute("DELETE FROM leases WHERE key = ? AND (lease = ? OR expires_at <= ?)",
                                          (key, lease, time.time()))

    def renew(self, held: Mapping[str, Sequence[str]], ttl: float) -> None:
        """One transaction for every held lease of this process."""
        now = time.time()
        rows = [(now + ttl, key, lease, now) for key, leases in held.items() for lease in leases]
        db = self.storage.connection()
        with self.storage.batch():
            db.executemany("UPDATE leases SET expires_at = ? WHERE key = ? AND lease = ? AND expires_at > ?", rows)


#: KEYS[1] the key's lease set (score: expiry); ARGV lease, limit, ttl. The server's clock decides.
_REDIS_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""
#: KEYS[1] the key's lease set; ARGV ttl, then the leases: push the unexpired ones' expiry.
_REDIS_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""


class RedisLeases:
    """Leases as members of a sorted set per key (score: expiry), changed by Lua scripts: one
    ``EVALSHA`` to take a lease, one ``ZREM`` to give it back. Works on Redis Cluster too (each
    script touches one key)."""

    def __init__(self, storage: RedisStorage):
        self.storage = storage
        connection = storage.get_connection()
        self._acquire = connection.register_script(_REDIS_ACQUIRE)
        self._renew = connection.register_script(_REDIS_RENEW)

    def _key(self, key: str) -> str:
        return self.storage.prefixed_key(PREFIX + key)

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> bool:
        """Drop the expired, count, add: one script, atomic on the server."""
        return bool(self._acquire(keys=[self._key(key)], args=[lease, limit, ttl]))

    def release(self, key: str, lease: str) -> None:
        """``ZREM`` the lease."""
        self.storage.get_connection().zrem(self._key(key), lease)

    def renew(self, held: Mapping[str, Sequence[str]], ttl: float) -> None:
        """One pipeline: a renewal script per key."""
        pipe = self.storage.get_connection().pipeline(transaction=False)
        for key, leases in held.items():
            self._renew(keys=[self._key(key)], args=[ttl, *leases], client=pipe)
        pipe.execute()


class DynamoDBLeases:
    """Leases as entries of one map attribute (``leases``: lease -> expiry) of the key's item in
    the counters table, changed by conditional ``UpdateItem``s.

    Taking a lease is one update conditioned on ``size(leases) < limit``. When that fails
    the old item comes back with the refusal (``ReturnValuesOnConditionCheckFailure``): if
    all its leases are live the key is full (still one round trip); if some expired (their
    holder crashed) a second update removes them and adds ours, conditioned on them being
    there and expired. The item's TTL attribute follows the newest expiry.
    """

    MAX_REAPED = 50

    def __init__(self, storage: DynamoDBStorage):
        self.storage = storage

    def _update(self, key: str, expression: str, condition: str, names: dict[str, str],
                values: dict[str, Any]) -> dict | None:
        """One conditional update; None when it went through, else the old item ({} when none)."""
        client = self.storage.client
        names = {"#leases": "leases", **names, **({"#ttl": TTL_ATTRIBUTE} if "#ttl" in expression else {})}
        placeholders = {"ExpressionAttributeValues": {k: {"N": repr(v)} for k, v in values.items()}} if values else {}
        try:
            client.update_item(TableName=self.storage.table, Key={KEY_ATTRIBUTE: {"S": PREFIX + key}},
                               UpdateExpression=expression, ConditionExpression=condition,
                               ExpressionAttributeNames=names, ReturnValuesOnConditionCheckFailure="ALL_OLD",
                               **placeholders)
        except client.exceptions.ConditionalCheckFailedException as exc:
            return exc.response.get("Item") or {}
        return None

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> bool:
        """Add the lease while fewer than ``limit`` are filed; reap expired ones when they are in the way."""
        while True:
            now = time.time()
            values = {":expires": now + ttl, ":ttl": int(now + ttl) + 1}
            old = self._update(key, "SET #leases.#lease = :expires, #ttl = :ttl",
                               "attribute_exists(#leases) AND size(#leases) < :limit",
                               {"#lease": lease}, {**values, ":limit": limit})
            if old is None:
                return True
            if "leases" not in old:  # no item yet: create it with our lease, unless another writer did
                if self._create(key, lease, values):
                    return True
                old = self._read(key)
            filed = {name: float(value["N"]) for name, value in old.get("leases", {"M": {}})["M"].items()}
            expired = [name for name, expiry in filed.items() if expiry <= now][:self.MAX_REAPED]
            if len(filed) - len(expired) >= limit:
                return False
            if not expired:  # a lease was given back meanwhile: try again
                continue
            names = {"#lease": lease, **{f"#x{i}": name for i, name in enumerate(expired)}}
            reaped = ", ".join(f"#leases.#x{i}" for i in range(len(expired)))
            condition = " AND ".join([f"#leases.#x{i} <= :now" for i in range(len(expired))]
                                     + ["size(#leases) < :limit"])
            if self._update(key, f"REMOVE {reaped} SET #leases.#lease = :expires, #ttl = :ttl", condition,
                            names, {**values, ":now": now, ":limit": limit + len(expired)}) is None:
                return True
            # Another writer changed the key's leases between our two updates: look again.

    def _create(self, key: str, lease: str, values: dict[str, Any]) -> bool:
        """Create the key's item holding only ``lease``; False when it exists already."""
        client = self.storage.client
        try:
            client.update_item(TableName=self.storage.table, Key={KEY_ATTRIBUTE: {"S": PREFIX + key}},
                               UpdateExpression="SET #leases = :first, #ttl = :ttl",
                               ConditionExpression="attribute_not_exists(#leases)",
                               ExpressionAttributeNames={"#leases": "leases", "#ttl": TTL_ATTRIBUTE},
                               ExpressionAttributeValues={
                                   ":first": {"M": {lease: {"N": repr(values[":expires"])}}},
                                   ":ttl": {"N": repr(values[":ttl"])}})
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _read(self, key: str) -> dict:
        """The key's item (strongly consistent), {} when none."""
        return self.storage.client.get_item(TableName=self.storage.table, Key={KEY_ATTRIBUTE: {"S": PREFIX + key}},
                                            ConsistentRead=True).get("Item") or {}

    def release(self, key: str, lease: str) -> None:
        """``REMOVE`` the lease's entry (only from an existing item: never create one)."""
        self._update(key, "REMOVE #leases.#lease", "attribute_exists(#leases)", {"#lease": lease}, {})

    def renew(self, held: Mapping[str, Sequence[str]], ttl: float) -> None:
        """One update per key for all its leases, conditioned on each still being live; when one is
        not, each of the others alone."""
        for key, leases in held.items():
            if not self._renew(key, leases, ttl) and len(leases) > 1:
                for lease in leases:
                    self._renew(key, [lease], ttl)

    def _renew(self, key: str, leases: Sequence[str], ttl: float) -> bool:
        now = time.time()
        names = {f"#l{i}": lease for i, lease in enumerate(leases)}
        sets = ", ".join(f"#leases.#l{i} = :expires" for i in range(len(leases)))
        condition = " AND ".join(f"#leases.#l{i} > :now" for i in range(len(leases)))
        return self._update(key, f"SET {sets}, #ttl = :ttl", condition, names,
                            {":expires": now + ttl, ":ttl": int(now + ttl) + 1, ":now": now}) is None


class MemoryLeases:
    """Leases in this process's memory, for ``memory://`` counters (exact only with one process,
    as those counters are)."""

    def __init__(self, storage: Storage | None = None):
        self._leases: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> bool:
        """Count the live leases and add one, under a lock."""
        now = time.time()
        with self._lock:
            filed = self._leases.setdefault(key, {})
            for name in [name for name, expiry in filed.items() if expiry <= now]:
                del filed[name]
            if len(filed) >= limit:
                return False
            filed[lease] = now + ttl
            return True

    def release(self, key: str, lease: str) -> None:
        """Forget the lease."""
        with self._lock:
            filed = self._leases.get(key, {})
            filed.pop(lease, None)
            if not filed:
                self._leases.pop(key, None)

    def renew(self, held: Mapping[str, Sequence[str]], ttl: float) -> None:
        """Push the live leases' expiry."""
        now = time.time()
        with self._lock:
            for key, leases in held.items():
                filed = self._leases.get(key, {})
                for lease in leases:
                    if filed.get(lease, 0) > now:
                        filed[lease] = now + ttl


def leases_for(storage: Storage) -> LeaseStore:
    """The lease adapter for a ``limits`` storage; :class:`ConfigError` for one without (Memcached,
    MongoDB: the concurrency limit needs SQLite, Redis, DynamoDB or memory counters)."""
    for kind, adapter in ((SQLiteStorage, SQLiteLeases), (DynamoDBStorage, DynamoDBLeases),
                          (RedisStorage, RedisLeases), (MemoryStorage, MemoryLeases)):
        if isinstance(storage, kind):
            return adapter(storage)
    raise ConfigError(f"rate_limit_storage_uri: the concurrency limit cannot keep calls in flight in "
                      f"{type(storage).__name__}; use sqlite://, redis://, dynamodb:// or memory://")
