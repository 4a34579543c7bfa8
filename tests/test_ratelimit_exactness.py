"""The measurable goal: a key limited to 100 requests a minute gets exactly 100 successes, however
many gateway processes serve it, for each shared storage (Redis, DynamoDB via moto, SQLite)."""
from __future__ import annotations

import contextlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateway.limit_storage import DynamoDBStorage
from gateway.testing import issue_key, make_app
from tests.contract.conftest import FAKE_AWS
from tests.fakes import servers

LIMIT = 100
REQUESTS = 150
CLIENTS = 64


def _environment(tmp_path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "OPENAI_", "AWS_"))}
    env.update(GATEWAY_SQLITE_PATH=str(tmp_path / "gateway.db"), GATEWAY_LOG_LEVEL="WARNING",
               **{f"GATEWAY_{name.upper()}": value for name, value in settings.items()})
    return env


def _limited_key(tmp_path, storage_uri: str) -> str:
    app = make_app(tmp_path, {"rate_limit_storage_uri": storage_uri})
    return issue_key(app, "exact", requests_per_minute=LIMIT, requests_per_hour=10 * LIMIT,
                     concurrent_requests=CLIENTS)  # only the rate limit refuses here


def _hammer(urls: list[str], key: str) -> list[int]:
    """REQUESTS completions from CLIENTS concurrent clients, spread evenly over ``urls``."""
    clients = [httpx.Client(base_url=urls[i % len(urls)], timeout=60) for i in range(CLIENTS)]

    def one(i: int) -> int:
        return clients[i % CLIENTS].post("/v1/chat/completions", headers={"X-API-Key": key}, json={
            "model": "echo", "messages": [{"role": "user", "content": f"request {i}"}]}).status_code

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(one, range(REQUESTS)))
    finally:
        for client in clients:
            client.close()


def _assert_exact(statuses: list[int]) -> None:
    assert statuses.count(200) == LIMIT, sorted(set(statuses))
    assert statuses.count(429) == REQUESTS - LIMIT


@contextlib.contextmanager
def _two_gateways(tmp_path, env: dict[str, str]):
    """Two separate gunicorn processes (started side by side); yields their URLs."""
    with ThreadPoolExecutor(2) as pool, contextlib.ExitStack() as stack:
        starting = [pool.submit(stack.enter_context, servers.gateway_server(tmp_path, env)) for _ in range(2)]
        yield [future.result() for future in starting]


def test_exact_across_two_processes_sharing_redis(tmp_path):
    with servers.redis_server(tmp_path) as redis_uri:
        key = _limited_key(tmp_path, redis_uri)
        with _two_gateways(tmp_path, _environment(tmp_path, rate_limit_storage_uri=redis_uri)) as urls:
            _assert_exact(_hammer(urls, key))


@contextlib.contextmanager
def dynamodb_counters(tmp_path, monkeypatch):
    """A moto server with a fresh counters table: yields its storage URI and the AWS environment
    that reaches it (set in this process too)."""
    with servers.moto_server(tmp_path) as endpoint:
        aws = {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        uri = f"dynamodb://rate-limits-{uuid.uuid4().hex[:8]}?region=us-east-1"
        DynamoDBStorage(uri).create_table()
        yield uri, aws


def test_exact_across_two_processes_sharing_dynamodb(tmp_path, monkeypatch):
    with dynamodb_counters(tmp_path, monkeypatch) as (uri, aws):
        key = _limited_key(tmp_path, uri)
        with _two_gateways(tmp_path, {**_environment(tmp_path, rate_limit_storage_uri=uri), **aws}) as urls:
            _assert_exact(_hammer(urls, key))


def test_default_sqlite_storage_is_exact_across_two_workers(tmp_path):
    key = _limited_key(tmp_path, "")
    with servers.gateway_server(tmp_path, _environment(tmp_path), workers=2) as url:
        _assert_exact(_hammer([url], key))
