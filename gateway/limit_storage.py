"""Two storages for the ``limits`` library that it does not ship: SQLite and DynamoDB.

Importing this module registers the URI schemes with ``limits`` (its storage
registry is keyed by ``STORAGE_SCHEME``), so ``limits.storage.storage_from_string``
accepts them:

- ``sqlite:///path/to/counters.db`` — the local default. Every gunicorn worker of
  ``gateway serve`` opens the same file, so limits are exact across workers. Each
  increment is one ``INSERT … ON CONFLICT … RETURNING`` statement: atomic in SQLite.
- ``dynamodb://<table>?region=<region>`` — for Lambda, where every container is a
  separate process. Each increment is one conditional ``UpdateItem`` (atomic on the
  server); an expired window is restarted by a second conditional update that only
  one writer can win. Counters carry a TTL attribute so DynamoDB deletes them.

The SQLite file and the DynamoDB table also hold the leases of calls in flight
(:mod:`gateway.leases`). Both implement the fixed-window counter interface (``incr``/``get``/``get_expiry``),
which is what ``limits.strategies.FixedWindowRateLimiter`` needs. :func:`batch` groups
several calls into one transaction where the storage has them (SQLite: one commit
instead of one per increment).
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from limits.storage import Storage

from gateway import aws

#: The DynamoDB counters table: hash key and TTL attribute (cloudformation/data.yaml matches them).
KEY_ATTRIBUTE = "counterKey"
TTL_ATTRIBUTE = "expirationTimestamp"


def counters_table(name: str) -> aws.Table:
    """The DynamoDB counters table (also the leases'): keyed by ``counterKey``, with TTL."""
    return aws.Table(name, KEY_ATTRIBUTE, ttl_attribute=TTL_ATTRIBUTE)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT NOT NULL,
    lease TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, lease)
) WITHOUT ROWID;
"""
_SQLITE_INCR = """
INSERT INTO counters (key, count, expires_at) VALUES (:key, :amount, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN counters.expires_at <= :now THEN :amount ELSE counters.count + :amount END,
    expires_at = CASE WHEN counters.expires_at <= :now THEN :expires_at ELSE counters.expires_at END
RETURNING count, expires_at
"""


class _WindowCounters:
    """``get`` and ``get_expiry`` over a storage's ``_window(key)`` -> (count, end) or None.

    It remembers, per process, when each counter's window ends, as learnt from ``incr``:
    a window's end never moves until it has passed, so ``get_expiry`` answers from this
    memory without a round trip; a passed or unknown end is read from the store.
    """

    _MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self._ends: dict[str, float] = {}

    def _remember(self, key: str, end: float) -> None:
        if len(self._ends) >= self._MAX_REMEMBERED:
            self._ends.clear()
        self._ends[key] = end

    def _known_end(self, key: str) -> float | None:
        end = self._ends.get(key)
        return end if end is not None and end > time.time() else None

    def _forget(self, key: str | None = None) -> None:
        if key is None:
            self._ends.clear()
        else:
            self._ends.pop(key, None)

    def _window(self, key: str) -> tuple[int, float] | None:
        raise NotImplementedError

    def get(self, key: str) -> int:
        """The count of ``key``'s open window (0 when none)."""
        window = self._window(key)
        return window[0] if window else 0

    def get_expiry(self, key: str) -> float:
        """When ``key``'s window ends (now when none is open)."""
        known = self._known_end(key)
        if known is not None:
            return known
        window = self._window(key)
        return window[1] if window else time.time()


class SQLiteStorage(_WindowCounters, Storage):
    """Fixed-window counters in one SQLite file shared by every process on the host."""

    STORAGE_SCHEME = ["sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any):
        """Open (lazily, per thread) the file named after ``sqlite:///``."""
        Storage.__init__(self, uri, wrap_exceptions, **options)
        _WindowCounters.__init__(self)
        self.path = uri[len("sqlite:///"):]
        self._local = threading.local()

    @property
    def base_exceptions(self) -> type[Exception]:
        """What a broken or unreadable file raises."""
        return sqlite3.Error

    #: Threads opening their first connection at once would race to switch a new file to WAL
    #: (SQLite answers "database is locked" to that without waiting): one at a time per process.
    _opening = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._opening:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SQLITE_SCHEMA)
            self._local.conn = conn
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the file (the calls-in-flight leases of
        :mod:`gateway.leases` share it, and so the rate-limit hit's transaction)."""
        return self._db()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s counter (a new window of ``expiry`` s if none is open)."""
        now = time.time()
        count, end = self._db().execute(_SQLITE_INCR, {"key": key, "amount": amount, "now": now,
                                                       "expires_at": now + expiry}).fetchone()
        self._remember(key, end)
        return count

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the calls inside the block in one write transaction (committed at its end)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _window(self, key: str) -> tuple[int, float] | None:
        """(count, end) of ``key``'s open window, or None."""
        return self._db().execute("SELECT count, expires_at FROM counters WHERE key = ? AND expires_at > ?",
                                  (key, time.time())).fetchone()

    def check(self) -> bool:
        """True when the file can be read."""
        try:
            self._db().execute("SELECT 1 FROM counters LIMIT 1")
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        """Delete every counter; returns how many there were."""
        self._forget()
        return self._db().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        """Delete ``key``'s counter."""
        self._forget(key)
        self._db().execute("DELETE FROM counters WHERE key = ?", (key,))


class DynamoDBStorage(_WindowCounters, Storage):
    """Fixed-window counters in a DynamoDB table (hash key ``counterKey``), for Lambda."""

    STORAGE_SCHEME = ["dynamodb"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any):
        """``dynamodb://<table>?region=<region>``; the endpoint is boto3's (``AWS_ENDPOINT_URL``)."""
        Storage.__init__(self, uri, wrap_exceptions, **options)
        _WindowCounters.__init__(self)
        parsed = urlparse(uri)
        self.table = parsed.netloc or parsed.path.lstrip("/")
        self.region = parse_qs(parsed.query).get("region", ["us-east-1"])[0]

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        """botocore's errors: the service refused, or could not be reached."""
        from botocore.exceptions import BotoCoreError, ClientError

        return BotoCoreError, ClientError

    @property
    def client(self) -> Any:
        """The process's DynamoDB client for the table's region (:func:`gateway.aws.client`)."""
        return aws.client("dynamodb", self.region)

    def create_table(self) -> None:
        """Create the counters table with TTL on ``expirationTimestamp`` (idempotent)."""
        aws.create_tables(self.client, [counters_table(self.table)])

    def _update(self, key: str, expression: str, condition: str, values: dict[str, Any]) -> int | None:
        """One conditional UpdateItem; the new count (its window end remembered), or None when
        the condition failed."""
        try:
            answer = self.client.update_item(
                TableName=self.table, Key={KEY_ATTRIBUTE: {"S": key}}, UpdateExpression=expression,
                ConditionExpression=condition, ReturnValues="ALL_NEW",
                ExpressionAttributeNames={"#count": "count", "#expires": "expiresAt", "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={name: {"N": str(value)} for name, value in values.items()})
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        self._remember(key, float(answer["Attributes"]["expiresAt"]["N"]))
        return int(answer["Attributes"]["count"]["N"])

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to the open window, or start a new window when it has expired."""
        while True:
            now = time.time()
            values = {":amount": amount, ":now": repr(now), ":expires": repr(now + expiry),
                      ":ttl": int(now + expiry) + 1}
            count = self._update(key, "ADD #count :amount SET #expires = if_not_exists(#expires, :expires), "
                                 "#ttl = if_not_exists(#ttl, :ttl)",
                                 "attribute_not_exists(#expires) OR #expires > :now", values)
            if count is not None:
                return count
            count = self._update(key, "SET #count = :amount, #expires = :expires, #ttl = :ttl",
                                 "#expires <= :now", values)
            if count is not None:
                return count
            # Another writer restarted the window between our two updates: count in it.

    def _window(self, key: str) -> tuple[int, float] | None:
        """(count, end) of ``key``'s open window (strongly consistent read), or None."""
        item = self.client.get_item(TableName=self.table, Key={KEY_ATTRIBUTE: {"S": key}},
                                    ConsistentRead=True).get("Item")
        if not item or float(item["expiresAt"]["N"]) <= time.time():
            return None
        return int(item["count"]["N"]), float(item["expiresAt"]["N"])

    def check(self) -> bool:
        """True when the table can be described."""
        try:
            self.client.describe_table(TableName=self.table)
        except self.base_exceptions:
            return False
        return True

    def reset(self) -> int | None:
        """Delete every counter (a Scan; for tests and operators, not the hot path)."""
        self._forget()
        deleted = 0
        for page in self.client.get_paginator("scan").paginate(TableName=self.table,
                                                                ProjectionExpression="counterKey"):
            for item in page.get("Items", []):
                self.client.delete_item(TableName=self.table, Key={"counterKey": item["counterKey"]})
                deleted += 1
        return deleted

    def clear(self, key: str) -> None:
        """Delete ``key``'s counter."""
        self._forget(key)
        self.client.delete_item(TableName=self.table, Key={KEY_ATTRIBUTE: {"S": key}})


def batch(storage: Storage):
    """A context in which ``storage``'s calls share one transaction, when the storage has them
    (:meth:`SQLiteStorage.batch`); for other storages each call stands alone, as without it."""
    grouped = getattr(storage, "batch", None)
    return grouped() if grouped else nullcontext()
