"""The measurable goal of the concurrency limit: a key allowed 2 calls in flight, sent 8 slow calls at
once spread over two separate gateway processes, gets exactly 2 answers and 6 refusals, wave after
wave, for each shared store (SQLite file, Redis, DynamoDB on a moto server). A key without that
limit gets all 8 through at once from the same servers: they could serve more, the limit refused."""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.testing import issue_key, make_app
from tests.fakes import servers
from tests.fakes.openai_server import FakeOpenAI
from tests.test_ratelimit_exactness import _environment, _two_gateways, dynamodb_counters

LIMIT = 2
WAVE = 8
DELAY = 1.0


class SlowOpenAI(FakeOpenAI):
    """Every answer takes DELAY seconds: calls stay in flight long enough to overlap."""

    def default_step(self, path, body):
        step = super().default_step(path, body)
        step.delay = DELAY
        return step


@contextlib.contextmanager
def shared_store(kind: str, tmp_path, monkeypatch):
    """(rate_limit_storage_uri, extra environment) of a fresh shared store of ``kind``."""
    if kind == "sqlite":
        yield "", {}
    elif kind == "redis":
        with servers.redis_server(tmp_path) as uri:
            yield uri, {}
    else:
        with dynamodb_counters(tmp_path, monkeypatch) as (uri, aws):
            yield uri, aws


def _wave(urls: list[str], key: str) -> tuple[list[int], list[str]]:
    """WAVE chat completions at once, alternating between ``urls``: their statuses and error codes."""
    def one(i: int) -> httpx.Response:
        return httpx.post(f"{urls[i % len(urls)]}/v1/chat/completions", headers={"X-API-Key": key}, timeout=30,
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"call {i}"}]})

    with ThreadPoolExecutor(WAVE) as pool:
        answers = list(pool.map(one, range(WAVE)))
    codes = [a.json()["error"]["code"] for a in answers if a.status_code != 200]
    return [a.status_code for a in answers], codes


@pytest.mark.parametrize("kind", ["sqlite", "redis", "dynamodb"])
def test_exactly_the_limit_is_in_flight_across_two_gateway_processes(tmp_path, monkeypatch, kind):
    with SlowOpenAI() as upstream, shared_store(kind, tmp_path, monkeypatch) as (uri, aws):
        app = make_app(tmp_path, {"rate_limit_storage_uri": uri})
        limited = issue_key(app, "limited", requests_per_minute=1000, concurrent_requests=LIMIT)
        control = issue_key(app, "control", requests_per_minute=1000, concurrent_requests=WAVE)
        env = {**_environment(tmp_path, rate_limit_storage_uri=uri, retry_attempts="0"), **aws,
               "OPENAI_API_KEY": "sk-test-upstream-secret-exact", "OPENAI_BASE_URL": upstream.url}
        with _two_gateways(tmp_path, env) as urls:
            statuses, _codes = _wave(urls, control)
            arrived = upstream.times[-WAVE:]
            assert statuses == [200] * WAVE and max(arrived) - min(arrived) < DELAY  # all 8 in flight together
            for _ in range(2):  # the second wave: every slot of the first came back, on both processes
                before = len(upstream.requests)
                statuses, codes = _wave(urls, limited)
                assert statuses.count(200) == LIMIT, statuses
                assert codes == ["concurrency_limit_exceeded"] * (WAVE - LIMIT)
                assert len(upstream.requests) - before == LIMIT
