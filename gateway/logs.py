"""Structured JSON logs, each line carrying the request's correlation id.

The standard logging module with a small JSON formatter: it needs no extra
dependency on the hot path and CloudWatch Logs indexes its lines as JSON.
"""
from __future__ import annotations

import json
import logging
import time

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
