"""The request log and the metrics: one record and one set of metrics for every completion.

Records are written by :class:`gateway.request_log.RequestLogWriter` (retried, then
kept in a log line: nothing is lost); metrics go out as CloudWatch Embedded Metric
Format lines (:mod:`gateway.metrics`). Prompts and answers are stored only when the
``request_log_content`` setting is on, after the ``gateway_redact`` hook.
"""
from __future__ import annotations

import re
import time

from flask.cli import with_appcontext

from gateway import hookimpl
from gateway.request_log import writer_for

#: What the built-in redaction masks, and with what.
_REDACTIONS = (
    (re.compile(r"\bgw_[a-z]+_[0-9a-f]+_[A-Za-z0-9_-]{20,}"), "[api-key]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "[api-key]"),
    # Starts only where a local part can start, and takes it whole (possessive): retried from every
    # character of a long run without '@', the pattern was quadratic in the text's length.
    (re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "[card-number]"),
)


def redact(text: str) -> str:
    """``text`` with e-mail addresses, API keys and card-like numbers masked."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


@hookimpl
def gateway_after_response(record, gateway):
    """Hand the record to the request log writer (which also emits its metrics)."""
    writer_for(gateway).submit(record)


@hookimpl(trylast=True)
def gateway_redact(text):
    """The default redaction (see :func:`redact`)."""
    return redact(text)


@hookimpl
def gateway_register_commands(cli):
    """Add ``gateway analytics purge``."""
    from gateway.cli_output import answer, json_option

    @cli.group()
    def analytics():
        """Maintain the request log."""

    @analytics.command("purge")
    @json_option
    @with_appcontext
    def purge(as_json):
        """Delete request log records past their retention (SQLite; DynamoDB's TTL does it itself)."""
        from gateway.app import current_gateway

        deleted = current_gateway().store.purge_expired_records(time.time())
        answer(as_json, {"purged": deleted}, f"purged {deleted} expired records")
