"""The scaffolding of a scripted local upstream: a threaded HTTP server on 127.0.0.1.

Tests queue answers with :meth:`FakeUpstream.push` (status, body, delay,
headers, stream events, a connection reset mid-stream), for the next requests or,
with ``after=N``, for those after the upstream's next N (faults injected into a
load already running, at a point the upstream counts rather than a moment a test
sleeps to); with none queued the subclass's :meth:`default_step` answers. Every request is kept (path, JSON
body, headers) so tests count what the upstream really received; for streams,
``events_sent`` and ``aborted`` say how far each one got.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    """One queued answer. ``body`` as a str is sent raw (a malformed body); ``events`` makes it a
    stream, ``reset_after`` drops the connection (TCP reset) after that many events."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    events: list | None = None
    event_delay: float = 0.0
    reset_after: int | None = None


class _Server(ThreadingHTTPServer):
    """A thread per connection, and room for a burst of connections: the standard library's
    backlog of 5 refuses some of 64 clients' first connections at once (``provider_unreachable``
    in a load test that injected no fault)."""

    daemon_threads = True
    request_queue_size = 128


class FakeUpstream:
    """Serve on a free loopback port; use as a context manager. Subclasses speak a wire format."""

    content_type = "application/json"
    stream_content_type = "text/event-stream"

    def __init__(self):
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.headers: list[dict] = []
        self.events_sent: list[int] = []
        self.aborted: list[bool] = []
        self._script: list[Scripted] = []
        #: Steps pushed with ``after``: (the request count at which they join the script, the steps).
        self._armed: list[tuple[int, list[Scripted]]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length) or b"{}"
                body = json.loads(raw)
                step = fake.take(self, body) or fake.default_step(self.path, body)
                if step.delay:
                    time.sleep(step.delay)
                try:
                    if step.events is not None:
                        fake._stream(self, step)
                    else:
                        fake._answer(self, step)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def default_step(self, path: str, body: dict) -> Scripted:
        """The answer when nothing is queued."""
        raise NotImplementedError

    def encode_event(self, event: Any) -> bytes:
        """One stream event in the wire format."""
        raise NotImplementedError

    def stream_end(self) -> bytes:
        """Bytes that close a complete stream."""
        return b""

    def push(self, *steps: Scripted, after: int = 0) -> None:
        """Queue answers, in order, for the next requests, or for those after the next ``after``
        requests this upstream receives (whatever else is queued meanwhile)."""
        with self._lock:
            if after:
                self._armed.append((len(self.requests) + after, list(steps)))
            else:
                self._script.extend(steps)

    def pending(self) -> int:
        """How many pushed answers no request has taken yet (queued or still waiting for ``after``)."""
        with self._lock:
            return len(self._script) + sum(len(steps) for _, steps in self._armed)

    def take(self, handler: BaseHTTPRequestHandler, body: dict) -> Scripted | None:
        """Record a request (``body``: its JSON, ``{}`` for a GET) and return its queued answer, if any."""
        with self._lock:
            self.requests.append(body)
            self.paths.append(handler.path)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            due = [entry for entry in self._armed if entry[0] < len(self.requests)]
            for entry in due:
                self._armed.remove(entry)
                self._script.extend(entry[1])
            return self._script.pop(0) if self._script else None

    def _answer(self, handler: BaseHTTPRequestHandler, step: Scripted) -> None:
        data = (step.body if isinstance(step.body, str) else json.dumps(step.body)).encode()
        handler.send_response(step.status)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in step.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _stream(self, handler: BaseHTTPRequestHandler, step: Scripted) -> None:
        handler.send_response(step.status)
        handler.send_header("Content-Type", self.stream_content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in step.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        with self._lock:
            slot = len(self.events_sent)
            self.events_sent.append(0)
            self.aborted.append(False)

        def write(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        try:
            for number, event in enumerate(step.events):
                if step.reset_after is not None and number == step.reset_after:
                    handler.close_connection = True
                    _reset(handler.connection)
                    return
                write(self.encode_event(event))
                self.events_sent[slot] += 1
                if step.event_delay:
                    time.sleep(step.event_delay)
            end = self.stream_end()
            if end:
                write(end)
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.aborted[slot] = True

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reset(connection: socket.socket) -> None:
    """Drop the connection mid-body, as a crashed upstream would: shut it down now (the
    handler's file objects keep the socket itself open), and reset it when it is closed."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.shutdown(socket.SHUT_RDWR)
