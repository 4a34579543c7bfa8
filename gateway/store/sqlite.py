"""The embedded SQLite store: one file, WAL mode, tables created on first use.

One connection per thread (sqlite3 connections must not cross threads); WAL lets
the worker processes of ``gateway serve`` read while one writes.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from operator import attrgetter
from pathlib import Path

from gateway.store.base import UPDATABLE_KEY_FIELDS, ApiKey, Product
from gateway.types import RequestLogRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL,
    permissions TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    name TEXT NOT NULL DEFAULT '',
    requests_per_minute INTEGER,
    requests_per_hour INTEGER,
    concurrent_requests INTEGER,
    allowed_models TEXT,
    last_used_at REAL,
    mcp_context INTEGER,
    grounding TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id, created_at);
CREATE TABLE IF NOT EXISTS products (
    product_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price REAL NOT NULL,
    brand TEXT NOT NULL,
    availability TEXT NOT NULL,
    description TEXT NOT NULL,
    rating REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS products_category_price ON products (category, price);
CREATE INDEX IF NOT EXISTS products_brand_availability ON products (brand, availability);
CREATE TABLE IF NOT EXISTS request_log (
    request_id TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency_ms REAL NOT NULL,
    upstream_latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT NOT NULL,
    streamed INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    saved_cost REAL NOT NULL DEFAULT 0,
    prompt_text TEXT NOT NULL DEFAULT '',
    completion_text TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 1,
    checks TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS request_log_user_time ON request_log (user_id, timestamp);
CREATE INDEX IF NOT EXISTS request_log_expiry ON request_log (expires_at);
"""

#: Columns added after the first release, per table: added to an older file on first use.
_ADDED_COLUMNS = {
    "request_log": {"saved_cost": "REAL NOT NULL DEFAULT 0", "prompt_text": "TEXT NOT NULL DEFAULT ''",
                    "completion_text": "TEXT NOT NULL DEFAULT ''", "count": "INTEGER NOT NULL DEFAULT 1",
                    "checks": "TEXT NOT NULL DEFAULT '{}'"},
    "api_keys": {"allowed_models": "TEXT", "last_used_at": "REAL", "mcp_context": "INTEGER",
                 "concurrent_requests": "INTEGER", "grounding": "TEXT"},
}


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a file created by an older version lacks (SQLite has no ADD COLUMN IF NOT EXISTS)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


_KEY_COLUMNS = [fld.name for fld in fields(ApiKey)]
#: Key columns held as JSON text.
_JSON_KEY_COLUMNS = ("permissions", "allowed_models")
_PRODUCT_COLUMNS = [fld.name for fld in fields(Product)]
_RECORD_COLUMNS = [fld.name for fld in fields(RequestLogRecord)]
#: Record columns held as JSON text (the answer checks' outcomes), after the plain ones.
_JSON_RECORD_COLUMNS = ("checks",)
_PLAIN_RECORD_COLUMNS = [name for name in _RECORD_COLUMNS if name not in _JSON_RECORD_COLUMNS]


def _insert(table: str, columns: list[str]) -> str:
    return (f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})")


_PUT_KEY = _insert("api_keys", _KEY_COLUMNS)
_PUT_PRODUCT = _insert("products", _PRODUCT_COLUMNS)
_PUT_RECORD = _insert("request_log", _PLAIN_RECORD_COLUMNS + list(_JSON_RECORD_COLUMNS) + ["expires_at"])
#: A folded record (gateway/refusals.py): added to the row of its id, whose latency becomes the mean of both.
_ADD_RECORD = (_PUT_RECORD.replace("INSERT OR REPLACE", "INSERT") + " ON CONFLICT (request_id) DO UPDATE SET "
               "latency_ms = (request_log.latency_ms * request_log.count + excluded.latency_ms * excluded.count) "
               "/ (request_log.count + excluded.count), count = request_log.count + excluded.count")
_plain_record_values = attrgetter(*_PLAIN_RECORD_COLUMNS)


def _record_row(record: RequestLogRecord, expires_at: int) -> tuple:
    """A record's column values, in ``_PUT_RECORD`` order (plain attribute reads, the checks as JSON)."""
    return (*_plain_record_values(record), json.dumps(record.checks) if record.checks else "{}", expires_at)


def _key_row(values: dict) -> dict:
    """Key field values as SQLite columns (lists as JSON text, permissions sorted)."""
    if values.get("permissions") is not None:
        values["permissions"] = json.dumps(sorted(values["permissions"]))
    if values.get("allowed_models") is not None:
        values["allowed_models"] = json.dumps(sorted(values["allowed_models"]))
    if "active" in values:
        values["active"] = int(values["active"])
    return values


class SQLiteStore:
    """Every port in one SQLite file."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._initialised = False

    #: Threads opening their first connection at once would race to switch a new file to WAL
    #: and create the schema (SQLite answers "database is locked" without waiting): one at a time.
    _opening = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._initialised:
            return conn
        with self._opening:
            if conn is None:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._local.conn = conn
            if not self._initialised:
                conn.executescript(SCHEMA)
                _migrate(conn)
                self._initialised = True
        return conn

    def init(self) -> None:
        """Create the tables (idempotent)."""
        self._connection()

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the file cannot be used."""
        self._connection().execute("SELECT 1 FROM api_keys LIMIT 1")

    # API keys
    def put_key(self, key: ApiKey) -> None:
        """Create or replace ``key``."""
        row = _key_row(asdict(key))
        self._connection().execute(_PUT_KEY, [row[c] for c in _KEY_COLUMNS])

    def _key(self, row: sqlite3.Row | None) -> ApiKey | None:
        if row is None:
            return None
        values = dict(row)
        for column in _JSON_KEY_COLUMNS:
            values[column] = None if values[column] is None else json.loads(values[column])
        values["active"] = bool(values["active"])
        if values["mcp_context"] is not None:
            values["mcp_context"] = bool(values["mcp_context"])
        return ApiKey(**values)

    def change_marker(self) -> int:
        """SQLite's ``data_version`` on this thread's connection: it moves whenever another
        connection (another worker, the CLI, this process's request-log writer) committed, and
        costs a few microseconds, against some 15 for reading a key."""
        return self._connection().execute("PRAGMA data_version").fetchone()[0]

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None."""
        return self._key(self._connection().execute(
            "SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone())

    def list_keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Every key, or one user's keys, oldest first."""
        if user_id is None:
            rows = self._connection().execute("SELECT * FROM api_keys ORDER BY created_at, key_id")
        else:
            rows = self._connection().execute(
                "SELECT * FROM api_keys WHERE user_id = ? ORDER BY created_at, key_id", (user_id,))
        return [self._key(row) for row in rows]

    def set_key_active(self, key_id: str, active: bool) -> bool:
        """Activate or revoke a key; False when there is no such key."""
        cursor = self._connection().execute(
            "UPDATE api_keys SET active = ? WHERE key_id = ?", (int(active), key_id))
        return cursor.rowcount == 1

    def update_key(self, key_id: str, changes: dict) -> ApiKey | None:
        """Change some of a key's updatable fields in one UPDATE; None when there is no such key."""
        unknown = set(changes) - UPDATABLE_KEY_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        if changes:
            row = _key_row(dict(changes))
            assignments = ", ".join(f"{column} = ?" for column in row)
            self._connection().execute(f"UPDATE api_keys SET {assignments} WHERE key_id = ?",
                                       [*row.values(), key_id])
        return self.get_key(key_id)

    def touch_last_used(self, key_id: str, at: float, min_interval: float = 0.0) -> bool:
        """Record the key's last use unless recorded less than ``min_interval`` s before."""
        cursor = self._connection().execute(
            "UPDATE api_keys SET last_used_at = ? WHERE key_id = ? "
            "AND (last_used_at IS NULL OR last_used_at <= ?)", (at, key_id, at - min_interval))
        return cursor.rowcount == 1

    # Products
    def put_products(self, products: Iterable[Product]) -> int:
        """Insert or replace products in one transaction: all or none.

        ``products`` is consumed inside the transaction, as rows are written (an
        import's progress callback sees the writes).
        """
        count = 0

        def rows():
            nonlocal count
            for product in products:
                count += 1
                yield [getattr(product, c) for c in _PRODUCT_COLUMNS]

        self._write_all(_PUT_PRODUCT, rows())
        return count

    def _write_all(self, statement: str, rows: Iterable) -> None:
        """Run ``statement`` for every row in one transaction: all rows or none."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(statement, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id, or None."""
        row = self._connection().execute(
            "SELECT * FROM products WHERE product_id = ?", (product_id,)).fetchone()
        return Product(**dict(row)) if row else None

    def list_products(self, *, category: str | None = None, brand: str | None = None,
                      min_price: float | None = None, max_price: float | None = None,
                      availability: str | None = None) -> list[Product]:
        """Products matching every given filter, by price then id."""
        clauses, params = [], []
        for column, op, value in (("category", "=", category), ("brand", "=", brand),
                                  ("price", ">=", min_price), ("price", "<=", max_price),
                                  ("availability", "=", availability)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection().execute(
            f"SELECT * FROM products {where} ORDER BY price, product_id", params)
        return [Product(**dict(row)) for row in rows]

    def delete_product(self, product_id: str) -> bool:
        """Delete a product; False when there was none."""
        cursor = self._connection().execute("DELETE FROM products WHERE product_id = ?", (product_id,))
        return cursor.rowcount == 1

    # Request log
    def put_record(self, record: RequestLogRecord, expires_at: int) -> None:
        """Append one record (a prepared, single-row insert)."""
        self._connection().execute(_PUT_RECORD, _record_row(record, expires_at))

    def put_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """Append ``(record, expires_at)`` pairs in one transaction (the prepared insert, run
        for each row): all or none."""
        if items:
            self._write_all(_PUT_RECORD, [_record_row(record, expires_at) for record, expires_at in items])

    def add_records(self, items: Sequence[tuple[RequestLogRecord, int]]) -> None:
        """Add each record's ``count`` to the row of its id (created when absent), in one transaction."""
        if items:
            self._write_all(_ADD_RECORD, [_record_row(record, expires_at) for record, expires_at in items])

    def records_for_user(self, user_id: str, start: float = 0.0,
                         end: float | None = None) -> list[RequestLogRecord]:
        """A user's records with ``start <= timestamp < end``, oldest first."""
        rows = self._connection().execute(
            "SELECT * FROM request_log WHERE user_id = ? AND timestamp >= ? AND timestamp < ? "
            "ORDER BY timestamp, request_id",
            (user_id, start, float("inf") if end is None else end))
        result = []
        for row in rows:
            values = {c: row[c] for c in _RECORD_COLUMNS}
            values["streamed"] = bool(values["streamed"])
            values["cached"] = bool(values["cached"])
            values["checks"] = json.loads(values["checks"])
            result.append(RequestLogRecord(**values))
        return result

    def purge_expired_records(self, now: float) -> int:
        """Delete records whose retention deadline is at or before ``now``; returns how many."""
        cursor = self._connection().execute("DELETE FROM request_log WHERE expires_at <= ?", (now,))
        return cursor.rowcount
