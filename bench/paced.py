"""The gateway in front of an upstream as slow as real ones (``paced_upstream.py``).

Two measurements, each at several concurrency levels, against one gateway worker pinned
to the server core as in the rest of the benchmark:

- plain answers that take ``latency`` seconds upstream, with wrk: every connection waits
  for its answer, so a level of N is waves of N calls; the wall time of a call should stay
  near one upstream latency, and the gateway's CPU per call near its figure with a fast
  upstream (measured in the same run by ``run.py``);
- streams of ``stream_seconds`` (one chunk a second), N at once, read to ``[DONE]`` by one
  asyncio client: each should last about ``stream_seconds``, all complete.

``run.py`` calls :func:`measure` (``--paced-levels``, ``--paced-stream-seconds``).
"""
from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


class PacedUpstream:
    """``paced_upstream.py`` in its own process on the load core."""

    def __init__(self, run, workdir: Path, latency: float, stream_seconds: float):
        self.port = run.free_port()
        self.process = subprocess.Popen(
            ["taskset", "-c", run.LOAD_CORE, sys.executable, str(BENCH / "paced_upstream.py"), str(self.port),
             "--latency", str(latency), "--stream-seconds", str(stream_seconds)],
            stderr=open(workdir / "paced_upstream.log", "a"))
        self.url = f"http://127.0.0.1:{self.port}"
        run.wait_ready(f"{self.url}/health")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def _one_stream(port: int, request: bytes) -> tuple[float, bool]:
    """(seconds to the end, ended with ``[DONE]`` after a 200) of one streamed answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(request)
        await writer.drain()
        status_ok, tail = None, b""
        while b"data: [DONE]" not in tail:
            data = await reader.read(65536)
            if not data:
                break
            if status_ok is None:
                status_ok = data.startswith(b"HTTP/1.1 200")
            tail = (tail + data)[-64:]
        ok = bool(status_ok) and b"data: [DONE]" in tail
        return time.perf_counter() - started, ok
    finally:
        writer.close()


async def _streams(port: int, key: str, count: int) -> list[tuple[float, bool]]:
    body = json.dumps({**json.loads((BENCH / "chat.json").read_text()), "stream": True}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    return await asyncio.gather(*(_one_stream(port, request) for _ in range(count)))


def measure_streams(run, server, key: str, count: int) -> dict:
    """``count`` streams at once through ``server``: wall seconds, each one's length, CPU per stream."""
    before = run.cpu_seconds(server.workers)
    started = time.perf_counter()
    results = asyncio.run(_streams(server.port, key, count))
    wall = time.perf_counter() - started
    lengths = [seconds for seconds, _ in results]
    return {"streams": count, "wall_s": wall, "p50_s": statistics.median(lengths), "max_s": max(lengths),
            "errors": sum(not ok for _, ok in results),
            "cpu_ms_per_stream": (run.cpu_seconds(server.workers) - before) * 1000 / count}


def measure(run, workdir: Path, env: dict[str, str], key: str, levels: list[int], duration: int,
            latency: float = 1.0, stream_seconds: float = 90.0, floor_env: dict[str, str] | None = None,
            with_portkey: bool = False) -> dict:
    """The paced runs: wrk at each level through the gateway (and the floor and Portkey, when given:
    what the serving stack costs a slow call without the gateway's work), then ``levels`` streams at
    once through the gateway (none if ``stream_seconds`` is 0)."""
    upstream = PacedUpstream(run, workdir, latency, stream_seconds or 1)
    report: dict = {"latency_s": latency, "stream_seconds": stream_seconds, "answers": {}}
    try:
        if floor_env is not None:
            floor = run.Server("floor", "bench.floor:app",
                               {**floor_env, "FLOOR_UPSTREAM": f"{upstream.url}/v1/chat/completions"})
            try:
                report["answers"]["floor"] = _answers(run, floor, floor.url, levels, duration, (key, None))
            finally:
                floor.stop()
        if with_portkey:
            portkey = run.portkey_peer.Portkey(run.SERVER_CORE, run.free_port(), upstream.url,
                                               workdir / "portkey-paced.log", run.wait_ready)
            try:
                report["answers"]["portkey"] = _answers(run, portkey, portkey.url, levels, duration,
                                                        (portkey.key, portkey.extra_headers))
            finally:
                portkey.stop()
        server = run.Server("gateway", "gateway.wsgi:app", {**env, "OPENAI_BASE_URL": f"{upstream.url}/v1"})
        try:
            run.warm_up(server.url, key)
            report["answers"]["gateway"] = _answers(run, server, server.url, levels, duration, (key, None))
            if stream_seconds:
                report["streams"] = {level: measure_streams(run, server, key, level) for level in levels}
            report["rss_mib_after"] = run.rss_mib(server.workers)
        finally:
            server.stop()
    finally:
        upstream.stop()
    return report


def _answers(run, server, url: str, levels: list[int], duration: int, client: tuple) -> dict:
    """wrk at each level against ``url`` (``client``: the key and further headers it sends), each
    measured after two waves at that level: a server thread's first call pays once for what the
    thread keeps (the gateway's SQLite connections: 1.4 ms more than its later calls), and a
    level of N starts N - 8 threads more than the warm-up at 8 did; a steady state is measured."""
    run.measure(server, url, 8, 2, *client)  # warm: the first calls load what loads lazily
    answers = {}
    for level in levels:
        run.measure(server, url, level, 2, *client)
        answers[level] = run.measure(server, url, level, duration, *client)
    return answers


def render(paced: dict, fast_cpu: dict[str, dict[int, float]]) -> list[str]:
    """Markdown tables of the paced runs; ``fast_cpu`` is each target's CPU ms per request with the fast
    upstream in the same run, by level (the comparison the targets name)."""
    latency_ms = paced["latency_s"] * 1000
    lines = [f"Paced upstream ({paced['latency_s']:.0f} s per answer), one worker (one node process); "
             "\"vs fast\" divides the CPU per request by the same target's with the fast upstream at the "
             "highest level of the rounds above:", "",
             "| target | concurrent | req/s | p50 ms | p99 ms | wall / latency (p50; p99) | CPU ms/req | vs fast "
             "| errors |", "|---|---|---|---|---|---|---|---|---|"]
    for target, levels in paced["answers"].items():
        fast = fast_cpu.get(target) or {}
        reference = fast[max(fast)] if fast else None
        for level, r in levels.items():
            versus = f"{r['cpu_ms_per_request'] / reference:.2f}" if reference else "-"
            lines.append(f"| {target} | {level} | {r['rps']:.0f} | {r['p50_us'] / 1000:.0f} | "
                         f"{r['p99_us'] / 1000:.0f} | {r['p50_us'] / 1000 / latency_ms:.2f}; "
                         f"{r['p99_us'] / 1000 / latency_ms:.2f} | {r['cpu_ms_per_request']:.2f} | {versus} | "
                         f"{r['socket_errors'] + r['non2xx']} |")
    if "streams" in paced:
        lines += ["", f"Streams of {paced['stream_seconds']:.0f} s through the gateway (a chunk a second), "
                  "all at once:", "", "| streams | wall s | each p50 s | longest s | CPU ms/stream | errors |",
                  "|---|---|---|---|---|---|"]
        for level, r in paced["streams"].items():
            lines.append(f"| {level} | {r['wall_s']:.1f} | {r['p50_s']:.1f} | {r['max_s']:.1f} | "
                         f"{r['cpu_ms_per_stream']:.1f} | {r['errors']} |")
    lines.append(f"\nResident memory of the gateway worker after the paced runs: {paced['rss_mib_after']:.0f} MiB")
    return lines
