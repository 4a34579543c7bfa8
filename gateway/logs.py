"""Structured JSON logs, each line carrying the request's correlation id; and the access line.

The standard logging module with a small JSON formatter: it needs no extra
dependency on the hot path and CloudWatch Logs indexes its lines as JSON.
Off Lambda, a server also prints one plain access line per request on stderr
(:func:`install_access_log`): method, path, status, latency, key id, correlation id.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from urllib.parse import quote

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def current_correlation_id() -> str | None:
    """The correlation id of the request being served by this thread, if any."""
    from flask import g, has_request_context

    return g.get("correlation_id") if has_request_context() else None


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation id, and ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line."""
        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        correlation_id = getattr(record, "correlation_id", None) or current_correlation_id()
        if correlation_id:
            line["correlation_id"] = correlation_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Send JSON lines to stderr unless the host (Lambda, pytest) already installed a handler."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        root.addHandler(handler)
    else:
        for handler in root.handlers:
            if type(handler.formatter) is logging.Formatter or handler.formatter is None:
                handler.setFormatter(JSONFormatter())
    for name in ("gateway", "plugins"):
        logging.getLogger(name).setLevel(level)


ACCESS_LOGGER = "gateway.access"
#: A key's secret in a path (a caller's mistake) is cut before the line is written: keep the public prefix.
_SECRET_IN_PATH = re.compile(r"(gw_[a-z]+_[0-9a-f]+_|sk-)[A-Za-z0-9_-]+")


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a line is written (servers and pytest swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def access_line(method: str, path: str, status: int, latency_ms: float, key_id: str | None,
                correlation_id: str | None) -> str:
    """One request in one plain line; the path percent-encoded (no spaces or line breaks from the caller)
    and without a key's secret. The key appears only by its public id."""
    shown = _SECRET_IN_PATH.sub(r"\1…", quote(path[:200], safe="/:@!$&'()*+,;=~"))
    return f"{method} {shown} {status} {latency_ms:.1f} ms key={key_id or '-'} cid={correlation_id or '-'}"


def install_access_log(app) -> None:
    """Print an access line (:func:`access_line`) when each response of ``app`` has been sent, streams
    included, through the ``gateway.access`` logger at INFO (``log_level`` WARNING silences it). The lines
    are plain text on stderr, not JSON, and do not reach the root logger's JSON handler."""
    from flask import g, request

    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False

    def start_clock() -> None:
        g.access_started = time.perf_counter()

    def log_when_sent(response):
        if not logger.isEnabledFor(logging.INFO):
            return response
        started = g.get("access_started", time.perf_counter())
        method, path, status = request.method, request.path, response.status_code
        key_id, correlation_id = g.get("key_id"), g.get("correlation_id")
        response.call_on_close(lambda: logger.info(access_line(
            method, path, status, (time.perf_counter() - started) * 1000, key_id, correlation_id)))
        return response

    app.before_request(start_clock)
    app.after_request(log_when_sent)
