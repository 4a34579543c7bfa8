"""The request log: one row per completion, successful or not.

A write that the store refuses is retried once; if it still fails the record is
written as a structured log line (CloudWatch Logs keeps it), so nothing is lost.
"""
from __future__ import annotations

import logging
from dataclasses import asdict

from gateway import hookimpl

logger = logging.getLogger(__name__)

DAY = 86_400


@hookimpl
def gateway_after_response(record, gateway):
    """Store ``record`` with its retention deadline; fall back to a log line."""
    expires_at = int(record.timestamp) + gateway.settings.request_log_retention_days * DAY
    for _attempt in range(2):
        try:
            gateway.store.put_record(record, expires_at)
            return
        except Exception as exc:  # any store failure: retry, then keep the record in the log
            failure = exc
    logger.error("request log write failed; record kept in this line",
                 extra={"event": "request_log_fallback", "error": type(failure).__name__,
                        "record": asdict(record)})
