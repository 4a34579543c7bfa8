"""The response cache: exact-match answers for repeatable requests, scoped per API key.

A request is cacheable when it is not streamed and either asks for ``temperature: 0``
or opts in with ``X-Gateway-Cache: on``. The key is a hash of the normalized request
(model, provider, messages, parameters, options) prefixed by the caller's key id, so
one tenant never receives another's answer. ``Cache-Control: no-cache`` skips the
lookup (the fresh answer replaces the stored one); ``no-store`` skips the cache
entirely.

Storage is chosen by the ``response_cache`` setting's URI:

- ``auto`` (the default): ``sqlite:///<sqlite_path's stem>-cache.db`` beside the store
  when the store is SQLite, ``memory://`` when it is DynamoDB (see :func:`cache_uri`).
- ``sqlite:///path?max_entries=N``: one SQLite file (WAL) shared by every worker of the
  host, so ``gateway serve``'s gunicorn workers see each other's answers; kept near
  ``max_entries`` (10000 by default) by an occasional prune.
- ``memory://?max_entries=N``: a bounded LRU in this process (local, one worker).
- ``redis://host:port/db``: shared by every worker; entries expire with Redis' own TTL.
- ``dynamodb://table-name``: for Lambda; items carry ``expiresAt`` (the table's TTL
  attribute) and expired items are ignored until DynamoDB deletes them.

The backends are small classes of our own: no maintained library offers one
get/set-with-TTL interface over these stores without bringing a framework along.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from gateway import aws
from gateway.errors import ConfigError
from gateway.types import Caller, ChatAnswer, ChatRequest, Usage

logger = logging.getLogger(__name__)

OPT_IN_HEADER = "X-Gateway-Cache"
HIT, MISS = "HIT", "MISS"
DEFAULT_MAX_ENTRIES = 1000
#: A file on disk holds more than a worker's memory should; one entry is one answer (a few KB).
DEFAULT_SQLITE_MAX_ENTRIES = 10_000
#: ``response_cache`` value meaning "choose by store" (SQLite file, or memory on DynamoDB).
AUTO = "auto"
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


_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS response_cache (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS response_cache_expires_at ON response_cache (expires_at)",
)
_SQLITE_SET = """
INSERT INTO response_cache (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""


class SQLiteBackend:
    """Entries in one SQLite file (WAL mode) shared by every process on the host.

    Each thread opens its own connection on first use, so a file that cannot be opened
    raises on ``get``/``set`` (a miss, a skipped write: see :class:`Lookup`), never at
    start-up. Every ``prune_every``-th ``set`` of a process deletes expired rows and, past
    ``max_entries``, the rows that expire first (with one TTL: the oldest), so the table
    stays within ``max_entries`` plus the writes between two prunes.
    """

    PRUNE_EVERY = 100
    #: Seconds a statement waits for another writer's lock: a cache must not hold a request up long.
    BUSY_TIMEOUT = 2.0

    #: Threads opening their first connection at once would race to switch a new file to WAL
    #: (SQLite answers "database is locked" to that without waiting): one at a time per process.
    _opening = threading.Lock()

    def __init__(self, path: str, max_entries: int = DEFAULT_SQLITE_MAX_ENTRIES,
                 prune_every: int = PRUNE_EVERY):
        self.path = path
        self.max_entries = max_entries
        self.prune_every = prune_every
        self._local = threading.local()
        self._sets = itertools.count(1)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._opening:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    for statement in _SQLITE_SCHEMA:
                        conn.execute(statement)
                except BaseException:
                    conn.close()  # not kept: the next call tries again
                    raise
            self._local.conn = conn
        return conn

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or expired."""
        row = self._db().execute("SELECT value FROM response_cache WHERE key = ? AND expires_at > ?",
                                 (key, time.time())).fetchone()
        return None if row is None else bytes(row[0])

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store (or replace) ``value`` until now + ``ttl`` seconds; now and then, prune."""
        db = self._db()
        db.execute(_SQLITE_SET, (key, value, time.time() + ttl))
        if next(self._sets) % self.prune_every == 0:
            self.prune()

    def prune(self) -> None:
        """Delete expired rows, then the soonest-expiring ones beyond ``max_entries``."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM response_cache WHERE expires_at <= ?", (time.time(),))
            (count,) = db.execute("SELECT count(*) FROM response_cache").fetchone()
            if count > self.max_entries:
                db.execute("DELETE FROM response_cache WHERE key IN (SELECT key FROM response_cache "
                           "ORDER BY expires_at LIMIT ?)", (count - self.max_entries,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def __len__(self) -> int:
        return self._db().execute("SELECT count(*) FROM response_cache").fetchone()[0]


class DynamoDBBackend:
    """Entries in a DynamoDB table keyed by ``cacheKey``, with TTL attribute ``expiresAt``."""

    KEY_ATTRIBUTE = "cacheKey"
    TTL_ATTRIBUTE = "expiresAt"

    def __init__(self, table: str, region: str):
        self.table = table
        self.client = aws.client("dynamodb", region)

    def create_table(self) -> None:
        """Create the table and enable its TTL (for local use and tests; CloudFormation does it on AWS)."""
        aws.create_tables(self.client, [self.table_named(self.table)])

    @classmethod
    def table_named(cls, name: str) -> aws.Table:
        """The cache table called ``name`` (cloudformation/data.yaml declares it per stage)."""
        return aws.Table(name, cls.KEY_ATTRIBUTE, ttl_attribute=cls.TTL_ATTRIBUTE)

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


def cache_uri(settings) -> str:
    """The ``response_cache`` URI in effect: the setting, with ``auto`` chosen by store
    (a SQLite file beside ``sqlite_path``, as the rate-limit counters; memory on DynamoDB)."""
    uri = settings.response_cache
    if uri != AUTO:
        return uri
    if settings.store == "dynamodb":
        return "memory://"
    base = Path(settings.sqlite_path)
    return f"sqlite:///{base.with_name(base.stem + '-cache.db')}"


def _max_entries(uri: str, query: str, default: int) -> int:
    try:
        max_entries = int(parse_qs(query).get("max_entries", [default])[0])
    except ValueError:
        max_entries = 0
    if max_entries < 1:
        raise ConfigError(f"response_cache {uri!r}: max_entries must be a positive integer")
    return max_entries


def open_backend(uri: str, region: str = "us-east-1") -> CacheBackend | None:
    """The backend a ``response_cache`` URI names (``auto`` resolved: see :func:`cache_uri`);
    None for "" (the cache is off)."""
    if not uri:
        return None
    if uri.startswith("sqlite:"):
        path, _, query = uri[len("sqlite:///"):].partition("?")
        if not uri.startswith("sqlite:///") or not path:
            raise ConfigError(f"response_cache {uri!r}: use sqlite:///relative/path or sqlite:////absolute/path")
        return SQLiteBackend(path, _max_entries(uri, query, DEFAULT_SQLITE_MAX_ENTRIES))
    parts = urlsplit(uri)
    if parts.scheme == "memory":
        return MemoryBackend(_max_entries(uri, parts.query, DEFAULT_MAX_ENTRIES))
    if parts.scheme in ("redis", "rediss"):
        return RedisBackend(uri)
    if parts.scheme == "dynamodb" and parts.netloc:
        return DynamoDBBackend(parts.netloc, region)
    raise ConfigError(f"response_cache {uri!r}: use auto, sqlite:///path, memory://, redis://host:port/db "
                      "or dynamodb://table")


@dataclass
class CachedAnswer:
    """A stored answer: the result, who served it, and what it cost then."""

    result: ChatAnswer
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


def _result(values: dict[str, Any]) -> ChatAnswer:
    """A :class:`ChatAnswer` from its ``asdict`` form, its extra choices included."""
    values["usage"] = Usage(**values["usage"])
    values["extra_choices"] = [_result(choice) for choice in values.get("extra_choices") or ()]
    if values.get("body") is not None:
        values["body"] = values["body"].encode()
    return ChatAnswer(**values)


def request_key(caller: Caller, completion: ChatRequest) -> str:
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


def _wants_cache(completion: ChatRequest, headers: Any) -> bool:
    opted_in = headers.get(OPT_IN_HEADER, "").strip().lower() in ("on", "true", "1")
    return opted_in or completion.parameters.get("temperature") == 0


def backend_for(gateway) -> CacheBackend | None:
    """This app's cache backend, opened on first use (None when the cache is off)."""
    state = gateway.state
    if _STATE not in state:
        state.setdefault(_STATE, open_backend(cache_uri(gateway.settings), gateway.settings.aws_region))
    return state[_STATE]


def lookup(gateway, headers: Any, completion: ChatRequest, caller: Caller, *, always: bool = False) -> Lookup:
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
