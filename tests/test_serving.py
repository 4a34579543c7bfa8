"""Serving real LLM traffic: ``gateway serve`` (granian, 2 workers) in front of an upstream that
takes seconds (``bench/paced_upstream.py``), tried as issue 15 found it broken under gunicorn's sync
worker: calls of seconds queued two at a time, a stream of a minute was cut by the worker timeout,
slow clients and a hanging upstream stalled every tenant.

Each request sets its own pacing with body fields the gateway forwards (``paced_latency``,
``paced_seconds``, ``paced_pace``). A stream longer than the old 60 s worker timeout is started by
the first test and checked by the last; both are marked ``beside_the_suite``, so in a whole run they
bracket the session and the stream runs beside every other test (the fixtures are session-scoped).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from bench.paced_upstream import PacedUpstream
from gateway.testing import issue_key, make_app
from tests.fakes import servers

#: Longer than gunicorn's 60 s worker timeout, which used to cut every stream.
LONG_STREAM_S = 62
PROVIDER_TIMEOUT = 4
IDLE_TIMEOUT = 2


def _chat(**fields) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], **fields}


class Upstream:
    """The paced upstream on an event loop of its own thread."""

    def __init__(self):
        self.port = servers.free_port()
        started = threading.Event()

        async def main() -> None:
            self.loop, self.stopping = asyncio.get_running_loop(), asyncio.Event()
            server = asyncio.create_task(PacedUpstream(1.0, 1.0, LONG_STREAM_S).serve(self.port, started))
            await self.stopping.wait()
            server.cancel()  # asyncio.run then cancels the connections still open

        self.thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self.thread.start()
        assert started.wait(5), "paced upstream did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(5)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """(base URL, a key) of ``gateway serve --workers 2`` in front of the paced upstream."""
    workdir = tmp_path_factory.mktemp("serving")
    upstream = Upstream()
    db = str(workdir / "gateway.db")
    key = issue_key(make_app(workdir, {"sqlite_path": db}), "tenant", tier="enterprise",
                    requests_per_minute=100_000, requests_per_hour=1_000_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "AWS_"))}
    env.update({"GATEWAY_SQLITE_PATH": db, "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_METRICS_EMF": "false",
                "OPENAI_API_KEY": "sk-paced", "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1",
                "GATEWAY_PROVIDER_TIMEOUT": str(PROVIDER_TIMEOUT), "GATEWAY_REQUEST_TIMEOUT": str(PROVIDER_TIMEOUT + 1),
                "GATEWAY_RETRY_ATTEMPTS": "0", "GATEWAY_STREAM_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
                # the hanging upstream's timeouts must not open the breaker for the tests after it
                "GATEWAY_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000"})
    try:
        with servers.gateway_server(workdir, env, workers=2) as url:
            yield url, key
    finally:
        upstream.stop()


def _stream_events(url: str, key: str, body: dict, timeout: float = 120) -> list[str]:
    """The ``data:`` payloads of one streamed answer, as they arrived."""
    events = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return events


@pytest.fixture(scope="session")
def long_stream(served) -> Future:
    """A stream of ``LONG_STREAM_S`` seconds (a chunk a second), started once."""
    url, key = served
    pool = ThreadPoolExecutor(1)
    future = pool.submit(_stream_events, url, key, _chat(stream=True, stream_options={"include_usage": True}))
    yield future
    pool.shutdown(wait=True)


async def _concurrent(url: str, key: str, bodies: list[dict]) -> tuple[float, list[int]]:
    """Send ``bodies`` at once, each on its own connection: (wall seconds, statuses)."""
    limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))
        return time.perf_counter() - started, [response.status_code for response in responses]


@pytest.mark.beside_the_suite
def test_sixteen_calls_of_one_second_take_about_one_second(served, long_stream):
    wall, statuses = asyncio.run(_concurrent(*served, [_chat(paced_latency=1.0)] * 16))
    assert statuses == [200] * 16
    assert wall < 2.5, wall  # gunicorn's sync workers: 8.7 s


def test_six_calls_of_three_seconds_take_about_three_seconds(served):
    wall, statuses = asyncio.run(_concurrent(*served, [_chat(paced_latency=3.0)] * 6))
    assert statuses == [200] * 6
    assert wall < 4.5, wall  # gunicorn's sync workers: 9.1 s


def test_two_hundred_fifty_six_calls_in_flight_on_two_workers(served):
    wall, statuses = asyncio.run(_concurrent(*served, [_chat(paced_latency=2.0)] * 256))
    assert statuses == [200] * 256
    assert wall < 5.0, wall  # one wave of 2 s, with room for a loaded 2-core machine


def _slow_client(port: int, stop: threading.Event, sent_body: bool) -> None:
    """A slow-loris connection: the request a byte at a time, a byte every 0.2 s, until ``stop``."""
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000\r\n\r\n" if sent_body else b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        while not stop.wait(0.2):
            try:
                sock.sendall(b"a")
            except OSError:  # the server gave up on it: as it should, eventually
                return


def test_slow_clients_do_not_starve_the_others(served):
    url, key = served
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    loris = [threading.Thread(target=_slow_client, args=(port, stop, n % 2 == 0), daemon=True) for n in range(40)]
    for thread in loris:
        thread.start()
    try:
        time.sleep(0.5)
        for _ in range(5):
            started = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            assert time.perf_counter() - started < 0.5  # under gunicorn: timed out for 25 s
        wall, statuses = asyncio.run(_concurrent(url, key, [_chat(paced_latency=1.0)] * 8))
        assert statuses == [200] * 8 and wall < 2.5, (statuses, wall)
    finally:
        stop.set()
        for thread in loris:
            thread.join(5)


def test_a_hanging_upstream_holds_only_its_own_callers(served):
    url, key = served
    with ThreadPoolExecutor(8) as pool:
        hanging = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=_chat(paced_latency=60),
                               headers={"Authorization": f"Bearer {key}"}, timeout=30) for _ in range(8)]
        time.sleep(0.3)
        started = time.perf_counter()
        echo = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=10,
                          json={"model": "echo", "messages": [{"role": "user", "content": "still here"}]})
        assert echo.status_code == 200 and time.perf_counter() - started < 1.0  # gunicorn: 27 s for everyone
        wall, statuses = asyncio.run(_concurrent(url, key, [_chat(paced_latency=1.0)] * 4))
        assert statuses == [200] * 4 and wall < 2.5
        answers = [future.result() for future in hanging]
    assert {answer.status_code for answer in answers} == {504}  # provider_timeout, then the error envelope
    assert {answer.json()["error"]["code"] for answer in answers} == {"provider_timeout"}


def test_a_stream_that_goes_quiet_ends_with_an_error_event(served):
    url, key = served
    started = time.perf_counter()
    events = _stream_events(url, key, _chat(stream=True, paced_pace=IDLE_TIMEOUT * 3, paced_seconds=IDLE_TIMEOUT * 6))
    assert time.perf_counter() - started < IDLE_TIMEOUT * 3
    assert json.loads(events[-1])["error"]["code"] == "provider_timeout"
    assert "[DONE]" not in events


@pytest.mark.beside_the_suite
def test_a_stream_longer_than_a_minute_is_served_whole(long_stream):
    events = long_stream.result(timeout=LONG_STREAM_S + 60)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    words = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [w for w in words if w] == [f"word{n} " for n in range(LONG_STREAM_S)]
    assert chunks[-1]["usage"]["completion_tokens"] == LONG_STREAM_S
