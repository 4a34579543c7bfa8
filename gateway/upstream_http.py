"""Keep-alive HTTP connections to one upstream, for forwarding request bodies as they are.

Written on :mod:`http.client` rather than taken from urllib3 (which botocore brings):
the gateway sends one kind of request (a POST of bytes it already holds, with
headers it built once) and reads the answer whole or as a stream, and urllib3's
per-request machinery (timeout, retry and header objects, its response wrapper, the
dropped-connection check) measured 220-260 µs of CPU per call against 95-140 µs for
http.client on the same kept-alive connection: about a tenth of the gateway's own CPU
per request. What this module adds is only what http.client leaves out: a pool, a
check that an idle connection is still open, and a timeout per call.
"""
from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

#: What a failed exchange raises: the connection is closed and never reused.
ExchangeError = (OSError, http.client.HTTPException)


def _readable(sock) -> bool:
    """Whether ``sock`` has something to read right now (an idle connection should not).
    ``poll``, not ``select``: a threaded server holds more than 1,024 descriptors."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class ConnectionPool:
    """Idle connections to one ``scheme://host:port``, most recently used first; at most ``size`` kept."""

    def __init__(self, base_url: str, size: int = 64):
        """``base_url``: the upstream's URL (its path is the caller's business)."""
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.size = size
        self._context = ssl.create_default_context() if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _open(self, connect_timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=connect_timeout, context=self._context)
        return http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout)

    def _take(self, connect_timeout: float) -> http.client.HTTPConnection:
        """An idle connection the upstream has not closed meanwhile, else a new one."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._open(connect_timeout)
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()  # readable while idle: the upstream closed it (or sent junk)

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        """Keep ``connection`` for the next call (its answer was read to the end)."""
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()

    @contextmanager
    def post(self, path: str, body: bytes, headers: dict[str, str], connect_timeout: float,
             read_timeout: float, body_timeout: float | None = None) -> Iterator[http.client.HTTPResponse]:
        """POST ``body`` to ``path``; the response, its body unread. ``read_timeout`` bounds the wait
        for the status line, ``body_timeout`` (default: the same) each read of the body after it. The
        connection goes back to the pool when the block has read the body to the end, and is closed
        otherwise."""
        connection = self._take(connect_timeout)
        response = None
        try:
            if connection.sock is None:
                connection.connect()
            sock = connection.sock  # the response reads it even when getresponse() lets go of it
            sock.settimeout(read_timeout)
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            if body_timeout is not None:
                sock.settimeout(body_timeout)
            yield response
        except BaseException:
            connection.close()
            raise
        if response.isclosed() and not response.will_close:
            self.give_back(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
