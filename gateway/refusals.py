"""Refusals are counted, not written one by one.

A refusal is a 429 of the gateway's own limits (requests per minute or hour, tokens, the
monthly budget, calls in flight): a throttled client may send thousands a second, and a
request-log row each (a paid write on DynamoDB) would cost more than the calls it
protects. So a refusal's record is folded into one record per key, minute and reason
(its error code) with a ``count``: :class:`RefusalTally` holds them in the process until
their minute is over (or the writer flushes or closes), and the store *adds* each folded
record to the row of its id (``add_records``), so the flushes of every worker and instance
for one key, minute and reason end up in one row whose count is exact.

Its id is ``refused-<key id>-<minute>-<code>``, its time the minute's start, its latency
the mean of the refusals folded in.

An add is applied once even when its answer is lost: SQLite's is one transaction, and
DynamoDB's carries a token the row remembers, so botocore's resend is refused. What is left:
the request log writer's own second try after ``add_records`` raised sends a new token, so a
count is doubled if DynamoDB applied an update and every one of botocore's attempts then
lost its answer. Closing that would take a token made here, at the fold, and carried by the
record to the store.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

from gateway.types import RequestLogRecord

MINUTE = 60
#: The error codes of the gateway's own limits (an upstream's 429 is a call, not a refusal).
REFUSAL_CODES = frozenset({"rate_limit_exceeded", "insufficient_quota", "concurrency_limit_exceeded"})


def is_refusal(record: RequestLogRecord) -> bool:
    """True for the record of a request the gateway's own limits refused."""
    return record.status == 429 and record.error_code in REFUSAL_CODES


def folded(record: RequestLogRecord) -> RequestLogRecord:
    """``record`` as the folded record of its key, minute and reason (holding its own count)."""
    minute = int(record.timestamp // MINUTE)
    return replace(record, request_id=f"refused-{record.api_key_id}-{minute}-{record.error_code}",
                   timestamp=float(minute * MINUTE), model="", provider="", prompt_text="", completion_text="")


class RefusalTally:
    """Folded refusals of this process not yet written, by folded id."""

    def __init__(self) -> None:
        self._open: dict[str, RequestLogRecord] = {}
        self._lock = threading.Lock()

    def add(self, record: RequestLogRecord) -> bool:
        """Fold ``record`` in; True when the tally was empty before (a writer waiting for nothing
        must now wake when this minute ends)."""
        one = folded(record)
        with self._lock:
            held = self._open.get(one.request_id)
            if held is None:
                self._open[one.request_id] = one
                return len(self._open) == 1
            total = held.count + one.count
            held.latency_ms = (held.latency_ms * held.count + one.latency_ms * one.count) / total
            held.count = total
            return False

    def take(self, now: float | None = None) -> list[RequestLogRecord]:
        """Remove and return the folded records whose minute has ended by ``now`` (every one: None)."""
        with self._lock:
            due = [rid for rid, record in self._open.items()
                   if now is None or record.timestamp + MINUTE <= now]
            return [self._open.pop(rid) for rid in due]

    def next_due(self) -> float | None:
        """Seconds until the earliest held minute ends (0 when one has), None when none is held."""
        with self._lock:
            if not self._open:
                return None
            end = min(record.timestamp for record in self._open.values()) + MINUTE
        return max(0.0, end - time.time())

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)
