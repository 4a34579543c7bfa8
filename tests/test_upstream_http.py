"""The keep-alive pool the OpenAI-compatible provider forwards through (gateway/upstream_http.py)."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.upstream_http import ConnectionPool


class Upstream:
    """A keep-alive HTTP/1.1 server that answers every POST with its body and notes each client port;
    ``close_idle()`` drops every open connection, as an upstream's idle timeout would."""

    def __init__(self):
        self.ports: list[int] = []
        self.sockets = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                upstream.ports.append(self.client_address[1])
                upstream.sockets.append(self.connection)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close_idle(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    with Upstream() as server:
        yield server


def call(pool: ConnectionPool, body: bytes) -> bytes:
    with pool.post("/v1/echo", body, {"Content-Type": "application/json"}, 2, 5) as response:
        return response.read()


def test_one_connection_serves_every_call_in_turn(upstream):
    pool = ConnectionPool(upstream.url)
    assert [call(pool, b"%d" % n) for n in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    assert len(set(upstream.ports)) == 1


def test_a_connection_the_upstream_closed_while_idle_is_replaced(upstream):
    pool = ConnectionPool(upstream.url)
    call(pool, b"first")
    upstream.close_idle()
    time.sleep(0.05)
    assert call(pool, b"second") == b"second"
    assert len(set(upstream.ports)) == 2


def test_an_answer_left_unread_closes_its_connection(upstream):
    pool = ConnectionPool(upstream.url)
    with pool.post("/v1/echo", b"unread", {}, 2, 5) as response:
        assert response.status == 200
    assert call(pool, b"next") == b"next"
    assert len(set(upstream.ports)) == 2


def test_a_failure_inside_the_call_never_returns_the_connection(upstream):
    pool = ConnectionPool(upstream.url)
    with pytest.raises(RuntimeError), pool.post("/v1/echo", b"x", {}, 2, 5):
        raise RuntimeError("the caller failed mid-answer")
    call(pool, b"y")
    assert len(set(upstream.ports)) == 2


def test_at_most_size_idle_connections_are_kept(upstream):
    pool = ConnectionPool(upstream.url, size=1)
    with pool.post("/v1/echo", b"a", {}, 2, 5) as first, pool.post("/v1/echo", b"b", {}, 2, 5) as second:
        assert (first.read(), second.read()) == (b"a", b"b")
    assert len(pool._idle) == 1
    pool.close()
    assert pool._idle == []


def test_a_refused_connection_raises_an_os_error():
    pool = ConnectionPool("http://127.0.0.1:9")
    with pytest.raises(OSError):
        call(pool, b"x")
