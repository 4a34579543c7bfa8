"""Real local servers for tests, each in its own process on a free loopback port.

``redis_server`` runs the system's ``redis-server`` (no persistence); ``moto_server``
runs moto's DynamoDB-compatible server; ``gateway_server`` runs ``gateway serve`` on the
gateway. Output goes to a file, never a pipe (a full pipe would block the server).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def require_in_ci(reason: str) -> None:
    """Skip the test on a bare machine (``make test`` with only Python), naming the install command;
    fail it in CI (``CI`` set), which installs every service so that every test runs."""
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running(argv: list[str], log: Path, ready: Callable[[], bool], *, env: dict | None = None,
            timeout: float = 30.0) -> Iterator[subprocess.Popen]:
    """Run ``argv`` until the block ends; wait until ``ready()`` (or fail with its log)."""
    with open(log, "wb") as out:
        # A session of its own: killing it on a stuck stop takes a server's workers too (granian's
        # workers miss a SIGTERM that comes while they are still importing the app).
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited ({process.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} not ready within {timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A fresh ``redis-server``; yields its ``redis://`` URI."""
    binary = shutil.which("redis-server")
    if binary is None:
        require_in_ci("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]
    with running(argv, workdir / f"redis-{port}.log", lambda: _answers(port)):
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's server (DynamoDB and the rest); yields its endpoint URL for ``AWS_ENDPOINT_URL``.

    It answers one request at a time (see ``moto_serial``), as DynamoDB updates one item atomically.
    """
    port = free_port()
    argv = [sys.executable, "-m", "tests.fakes.moto_serial", "127.0.0.1", str(port)]
    with running(argv, workdir / f"moto-{port}.log", lambda: _answers(port)):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def gateway_server(workdir: Path, env: dict[str, str], *, workers: int = 1) -> Iterator[str]:
    """``gateway serve`` (granian) with ``env``; yields its base URL once it answers /health."""
    import httpx

    port = free_port()

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    argv = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers)]
    with running(argv, workdir / f"gateway-{port}.log", healthy, env=env, timeout=60):
        yield f"http://127.0.0.1:{port}"
