"""How ``gateway serve`` serves: granian's WSGI mode, threads for the calls in flight.

An LLM call spends seconds waiting on its upstream, so the server must hold hundreds
of calls at once on a few cores, stream for as long as the model writes, and not let
slow clients starve the others. Measured on the 2-core development machine
(``bench/paced.py``, ``bench/RESULTS.md``; fast upstream: nginx, CPU per request at 8
concurrent, one worker; paced upstream: 1 s per answer, 256 concurrent, 2 workers):

- gunicorn's sync worker (the previous default) holds one call per worker: 16 calls of
  1 s took 8.7 s on 2 workers, and its worker timeout cut every stream at 60 s.
- gunicorn's gthread worker (128 threads) holds them, but cost 1.47 ms of CPU per
  request on the fast upstream (sync: 1.27) and 2.7 on the paced one; a slow client
  holds one of its threads while it sends its request.
- granian (Rust, hyper/tokio) reads requests and writes answers asynchronously and runs
  the WSGI app on a pool of blocking threads: 1.09 ms on the fast upstream, 1.7-2.1 on
  the paced one, no worker timeout at all, and a client is only handed to a thread
  once its request has arrived.
- gevent is left out: its worker patches the standard library at import time, which this
  project does not do to libraries; an ASGI server would run this WSGI app in threads anyway.

Stream length is bounded by the gateway's own settings (``stream_idle_timeout``,
``stream_max_seconds``), not by the server.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: Blocking threads per worker: calls in flight one worker holds (a stream holds one to its end).
DEFAULT_THREADS = 256
#: A client has this long to send its request headers, and a kept-alive connection may idle this long
#: (hyper times both alike). Waiting costs no thread, so this is the longest granian allows: a load
#: balancer in front should close idle connections first (AWS ALB: set its idle timeout below 60 s).
HEADER_READ_TIMEOUT_MS = 60_000
#: Seconds a stopping worker waits for calls in flight before it is killed.
KILL_TIMEOUT_S = 30
#: granian's logging (its own format, on stderr) with :class:`ExpectedThreadCount` on it.
LOG_CONFIG = Path(__file__).with_name("granian_logging.json")


class ExpectedThreadCount(logging.Filter):
    """Leaves out granian's start-up warning that many Python threads "seem quite high" for the
    cores: a proxy waiting on upstreams wants them, and a new user should not be told otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Python threads" not in record.getMessage()


def granian_argv(host: str, port: int, workers: int, threads: int = DEFAULT_THREADS,
                 app: str = "gateway.wsgi:app") -> list[str]:
    """The command line serving ``app`` (the gateway; ``bench/`` serves its floor alike) with granian."""
    granian = Path(sys.executable).with_name("granian")
    return [str(granian) if granian.exists() else "granian", "--interface", "wsgi", app,
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--blocking-threads", str(threads), "--backpressure", str(threads),
            "--http1-header-read-timeout", str(HEADER_READ_TIMEOUT_MS),
            "--workers-kill-timeout", str(KILL_TIMEOUT_S), "--respawn-failed-workers",
            "--no-ws", "--log-level", "warning", "--log-config", str(LOG_CONFIG)]


def serve(host: str, port: int, workers: int, threads: int = DEFAULT_THREADS) -> None:
    """Replace this process with the granian server (so signals reach it directly)."""
    argv = granian_argv(host, port, workers, threads)
    os.execv(argv[0], argv) if os.path.isabs(argv[0]) else os.execvp(argv[0], argv)
