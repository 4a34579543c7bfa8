"""Writing the request log: nothing lost, and off the response's critical path where the host allows.

On Lambda the process may freeze as soon as the response is returned, so writes
complete inside the request. Elsewhere (gunicorn, ``gateway serve``) records go
through a bounded queue to one background thread per process. Nothing is dropped:
a full queue, or a writer already shut down, writes in the caller's thread instead;
``close`` (run at exit by :func:`close_at_exit`) drains the queue.

The thread writes in batches: it blocks for a record, lets others gather for
``batch_wait`` seconds (the ``request_log_batch_wait_ms`` setting), then takes what is
queued (at most ``BATCH_SIZE``), emits their metrics in one pass and stores them with
one ``put_records``. Handing every record over alone cost more CPU than writing it:
each hand-off wakes the thread and passes the interpreter lock back and forth (in
process, 1.5-1.9 ms per completion against 1.1-1.3 ms with a 20 ms gather; see
``bench/RESULTS.md``). The default gather is 100 ms: with an upstream taking a second, a
worker finishes a few dozen calls a second, and 20 ms batches held one record each (CPU
per call 2.6-3.1 ms against 1.7-2.0 with a fast upstream; 1.8-2.9 with a 250 ms gather;
``docs/reliability.md``).
``flush`` and ``close`` cut the gathering short; a batch of one is written with
``put_record`` as in the caller's thread.

Refusals (429s of the gateway's own limits) are not queued one by one: they are folded
per key, minute and reason (:mod:`gateway.refusals`) and written, added to their row,
when their minute ends (the thread wakes for it), at ``flush`` and at ``close``; in the
caller's thread (Lambda) each is added to its row at once.

A record the store refuses is retried once, then written as a structured log line
and counted. A batch the store refuses is written again record by record that way,
so a bad record cannot take the good ones with it.

The standard library's queue and thread are enough here; no maintained library
offers a write-behind buffer with these guarantees for an arbitrary store.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from gateway import metrics
from gateway.refusals import RefusalTally, folded, is_refusal
from gateway.types import RequestLogRecord, message_text

logger = logging.getLogger(__name__)

_closing: list[Callable[[], None]] = []
_closing_lock = threading.Lock()
_closer_pid = 0


def close_at_exit(close: Callable[[], None]) -> None:
    """Call ``close`` when this process exits, from every exit path that lets Python shut down.

    ``atexit`` is not enough: granian's workers are ``multiprocessing`` children, which end
    with ``os._exit`` and skip ``atexit`` (one record in 40 was lost at each stop). Both
    paths run ``threading``'s shutdown, which marks the main thread stopped and then waits
    for every non-daemon thread, so one such thread waits for the main thread to stop and
    then calls what was registered (in this process: a forked child starts its own list).
    """
    global _closer_pid
    with _closing_lock:
        if _closer_pid != os.getpid():
            _closer_pid = os.getpid()
            _closing.clear()
            threading.Thread(target=_close_all_when_main_stops, name="request-log-closer",
                             daemon=False).start()  # not inherited: granian's threads are daemons
        _closing.append(close)


def _close_all_when_main_stops() -> None:
    threading.main_thread().join()
    with _closing_lock:
        closers = list(_closing)
    for close in closers:
        try:
            close()
        except Exception:  # one failing close must not keep the others' records from the store
            logger.exception("request log close failed")

DAY = 86_400
PURGE_INTERVAL = 3600.0
#: The most records the background thread takes from the queue for one store call.
BATCH_SIZE = 100
_STOP = object()
#: Queued to wake the thread when refusals start to gather, so that it wakes again at their minute's end.
_TICK = object()
_WRITER = "request_log.writer"


def on_lambda() -> bool:
    """True inside an AWS Lambda function."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


class RequestLogWriter:
    """Stores records with their retention deadline, in the caller's thread or a background one."""

    def __init__(self, store: Any, retention_days: int, *, background: bool, queue_size: int = 10_000,
                 batch_wait: float = 0.0,
                 on_records: Callable[[list[RequestLogRecord]], None] | None = None,
                 on_fallback: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic):
        """``batch_wait``: seconds the background thread lets records gather after the first of a
        batch; ``on_records`` sees every batch of records before it is stored (the metrics);
        ``on_fallback`` is called for each record the store refused; ``clock`` (monotonic seconds)
        says when the next purge of expired records is due."""
        self.store = store
        self.retention = retention_days * DAY
        self.background = background
        self.batch_wait = batch_wait
        self._wake = threading.Event()
        self.on_records = on_records
        self.on_fallback = on_fallback
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._closed = False
        self._clock = clock
        self._next_purge = 0.0
        self._refusals = RefusalTally()

    def submit(self, record: RequestLogRecord) -> None:
        """Write ``record`` now (Lambda, full queue, closed writer) or hand it to the background thread;
        fold a refusal into its key's, minute's and reason's record."""
        if is_refusal(record):
            self._fold(record)
            return
        if self.background and not self._closed and self._ensure_thread():
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                pass
        self.write(record)

    def _fold(self, record: RequestLogRecord) -> None:
        """Keep a refusal in the tally for the thread to write when its minute ends, or (no thread)
        add it to its row now."""
        if self.background and self._ensure_thread():
            with self._lock:  # close() takes what is folded under this lock: nothing folds after it
                first = None if self._closed else self._refusals.add(record)
            if first:
                try:
                    self._queue.put_nowait(_TICK)
                except queue.Full:  # the thread is busy with a full queue: it sees the tally next
                    pass
            if first is not None:
                return
        self._write_folded([folded(record)])

    def _write_folded(self, records: list[RequestLogRecord]) -> None:
        """Emit folded refusals' metrics (their counts), then add each to its row (retried once, then
        kept in a log line, as any record)."""
        self._emit(records)
        for record in records:
            self._put_alone(record, int(record.timestamp) + self.retention, adding=True)

    def _ensure_thread(self) -> bool:
        """Start the thread on first use, and again in a forked child (threads do not survive a fork)."""
        if self._thread is not None and self._pid == os.getpid():
            return True
        with self._lock:
            if self._closed:
                return False
            if self._thread is None or self._pid != os.getpid():
                self._queue = queue.Queue(maxsize=self._queue.maxsize)
                self._refusals = RefusalTally()  # a forked child's parent writes its own
                self._wake = threading.Event()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
                self._thread.start()
                close_at_exit(self.close)
        return True

    def _run(self) -> None:
        """Block for a record, let more gather for ``batch_wait``, add what is queued (up to the stop
        marker or ``BATCH_SIZE``), write them as one batch; every item taken is marked done, so
        ``flush`` stays exact."""
        while True:
            try:
                batch, taken = [self._queue.get(timeout=self._refusals.next_due())], 1
            except queue.Empty:  # the minute of some folded refusals has ended
                batch, taken = [_TICK], 0
            if batch[0] is not _STOP and batch[0] is not _TICK and self._worth_gathering():
                self._wake.wait(self.batch_wait)  # flush() and close() set it: no waiting then
                self._wake.clear()
            while batch[-1] is not _STOP and len(batch) < BATCH_SIZE:
                try:
                    batch.append(self._queue.get_nowait())
                    taken += 1
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            records = [item for item in batch if item is not _STOP and item is not _TICK]
            try:
                if records:
                    self._write_batch(records)
                due = self._refusals.take(time.time())
                if due:
                    self._write_folded(due)
            except Exception:  # the thread must outlive any one batch, or the queue would stall
                logger.exception("request log writer failed", extra={"records": [asdict(r) for r in records]})
            finally:
                for _ in range(taken):
                    self._queue.task_done()
            if stop:
                return

    def _worth_gathering(self) -> bool:
        """Whether to let records gather before this batch: not when a whole batch is already queued
        (waiting would cap the writer at ``BATCH_SIZE`` records per ``batch_wait``, under the rate of a
        busy worker), nor once closing (the queue drains at full speed)."""
        return bool(self.batch_wait) and not self._closed and self._queue.qsize() < BATCH_SIZE - 1

    def flush(self) -> None:
        """Wait until every queued record is written, and add the refusals folded so far to their rows."""
        if self._thread is not None and self._pid == os.getpid():
            self._wake.set()
            self._queue.join()
            self._write_folded(self._refusals.take())

    def close(self) -> None:
        """Write everything queued, stop the thread; later records are written in the caller's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
        if thread is None:
            return
        self._wake.set()
        self._queue.put(_STOP)
        thread.join()
        while True:  # records a racing submit queued behind the stop marker
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            try:
                if item is not _STOP and item is not _TICK:
                    self.write(item)
            finally:
                self._queue.task_done()
        self._write_folded(self._refusals.take())  # a fold after _closed was set is written inline

    def write(self, record: RequestLogRecord) -> None:
        """Store ``record`` in the caller's thread; retry once, then keep it in a log line and
        count the fallback."""
        self._write_batch([record])

    def _write_batch(self, records: list[RequestLogRecord]) -> None:
        """Emit the records' metrics, then store them: one ``put_records`` for several, else (one
        record, or a refused batch) each alone."""
        self._emit(records)
        items = [(record, int(record.timestamp) + self.retention) for record in records]
        if len(items) == 1 or not self._put_together(items):
            for record, expires_at in items:
                self._put_alone(record, expires_at)
        self._purge_when_due()

    def _emit(self, records: list[RequestLogRecord]) -> None:
        """Hand ``records`` to ``on_records`` (metrics, limits); its failure never costs a record."""
        if self.on_records is not None and records:
            try:
                self.on_records(records)
            except Exception:  # metrics never cost a record
                logger.exception("request metrics failed")

    def _put_together(self, items: list[tuple[RequestLogRecord, int]]) -> bool:
        """Store the batch in one ``put_records``; False when the store refused it."""
        try:
            self.store.put_records(items)
        except Exception as exc:  # each record gets its own chance: a bad one must not cost the rest
            logger.warning("request log batch write failed; writing its records one by one",
                           extra={"error": type(exc).__name__, "batch_size": len(items)})
            return False
        return True

    def _put_alone(self, record: RequestLogRecord, expires_at: int, adding: bool = False) -> None:
        """Store one record (``adding``: add it to its row, ``add_records``); retry once, then keep it
        in a log line and count the fallback."""
        failure: Exception | None = None
        for _attempt in range(2):
            try:
                if adding:
                    self.store.add_records([(record, expires_at)])
                else:
                    self.store.put_record(record, expires_at)
                return
            except Exception as exc:  # any store failure: retry, then keep the record in the log
                failure = exc
        logger.error("request log write failed; record kept in this line",
                     extra={"event": "request_log_fallback", "error": type(failure).__name__,
                            "correlation_id": record.correlation_id,
                            "record": {**asdict(record), "expiration_timestamp": expires_at}})
        if self.on_fallback is not None:
            try:
                self.on_fallback()
            except Exception:  # a failing counter must not stop the batch's other records
                logger.exception("request log fallback metric failed")

    def _purge_when_due(self) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        try:
            deleted = self.store.purge_expired_records(time.time())
        except Exception as exc:  # a failed purge is retried at the next interval
            logger.warning("request log purge failed", extra={"error": type(exc).__name__})
            return
        if deleted:
            logger.info("expired request log records purged", extra={"deleted": deleted})


def writer_for(gateway) -> RequestLogWriter:
    """This app's writer, built on first use: background unless on Lambda or told otherwise
    (``request_log_writes``). It also emits each record's metrics, so they too leave the
    request's critical path, and go out one line per batch and dimensions; so does charging the
    keys' token and spend limits."""
    writer = gateway.state.get(_WRITER)
    if writer is None:
        settings = gateway.settings
        mode = settings.request_log_writes
        background = mode == "background" or (mode == "auto" and not on_lambda())
        writer = gateway.state.setdefault(_WRITER, RequestLogWriter(
            gateway.store, settings.request_log_retention_days, background=background,
            queue_size=settings.request_log_queue_size, batch_wait=settings.request_log_batch_wait_ms / 1000,
            on_records=lambda records: account_batch(gateway, records),
            on_fallback=lambda: metrics.count_request_log_fallback(gateway)))
    return writer


def account_batch(gateway, records: list[RequestLogRecord]) -> None:
    """What a batch of records sets off before it is stored: the keys' token and spend counters,
    then the metrics (each isolated: neither costs the other, nor a record)."""
    try:
        gateway.limiter.charge(records)
    except Exception:
        logger.exception("charging usage to the limits failed")
    metrics.emit_requests(gateway, records)


def loggable_text(gateway, text: str) -> str:
    """``text`` as the request log may keep it: "" unless ``request_log_content`` is on, then redacted.

    The first ``gateway_redact`` implementation that answers decides; the built-in
    one (in the analytics plugin) runs last.
    """
    if not gateway.settings.request_log_content or not text:
        return ""
    redacted = gateway.hook.gateway_redact(text=text, gateway=gateway)
    return text if redacted is None else redacted


def loggable_prompt(gateway, messages: list[dict[str, Any]]) -> str:
    """The conversation as ``role: text`` lines, through :func:`loggable_text`."""
    if not gateway.settings.request_log_content:
        return ""
    return loggable_text(gateway, "\n".join(f"{m.get('role')}: {message_text(m)}" for m in messages))
