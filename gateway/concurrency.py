"""The per-key limit on calls in flight, this process's side: slots taken, renewed and given back.

A slot is a lease in the shared limit store (:mod:`gateway.leases`), so the limit holds
across every worker and instance. :class:`Slots` takes one for each completion, embedding
or Responses call (inside the rate-limit hit, :meth:`gateway.ratelimit.RequestLimiter.enter`),
gives it back when the call ends (a stream: when it ends, fails or the client goes away),
and keeps the process's held leases alive from one background thread, which renews them
all every third of ``concurrency_lease_seconds``.

The bound: a lease expires ``concurrency_lease_seconds`` (30 s) after its last renewal, so
the slots of a worker that crashed, or lost the store, are free again within that time;
a live worker's slots never expire, however long its calls (a stream of an hour) take.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass

from gateway.leases import LeaseStore

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """One call's place among its key's calls in flight; :meth:`release` gives it back (once)."""

    key: str
    lease: str
    slots: Slots
    released: bool = False

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if not self.released:
            self.released = True
            self.slots.release(self)


class Slots:
    """This process's slots: taken in the shared store, renewed by one thread while held."""

    def __init__(self, leases: LeaseStore, lease_seconds: float):
        """``lease_seconds``: how long a slot outlives its holder's last renewal."""
        self.leases = leases
        self.lease_seconds = lease_seconds
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def take(self, key: str, limit: int) -> str | None:
        """A new lease on one of ``key``'s ``limit`` slots, or None when all are taken. The caller
        makes it a :class:`Slot` with :meth:`hold` once the store kept it (after its transaction)."""
        lease = secrets.token_hex(8)
        return lease if self.leases.acquire(key, lease, limit, self.lease_seconds) else None

    def hold(self, key: str, lease: str) -> Slot:
        """Keep ``lease`` alive until its :class:`Slot` is released."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's leases and thread are not its own
                self._held, self._thread, self._pid = {}, None, os.getpid()
            self._held.setdefault(key, set()).add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_forever, name="concurrency-renewer",
                                                daemon=True)
                self._thread.start()
        return Slot(key, lease, self)

    def release(self, slot: Slot) -> None:
        """Stop renewing ``slot`` and delete its lease; a store failure is logged (the lease then
        expires by itself within ``lease_seconds``)."""
        with self._lock:
            leases = self._held.get(slot.key)
            if leases is not None:
                leases.discard(slot.lease)
                if not leases:
                    del self._held[slot.key]
        try:
            self.leases.release(slot.key, slot.lease)
        except Exception as exc:  # the lease expires on its own: never fail the answer for it
            logger.warning("cannot release a call-in-flight slot; it expires by itself",
                           extra={"error": type(exc).__name__, "within_seconds": self.lease_seconds})

    def held(self) -> dict[str, list[str]]:
        """The leases this process holds now, by key."""
        with self._lock:
            return {key: sorted(leases) for key, leases in self._held.items()}

    def renew(self) -> None:
        """Renew every held lease now (one store call; the thread does it every third of the lease)."""
        held = self.held()
        if held:
            self.leases.renew(held, self.lease_seconds)

    def _renew_forever(self) -> None:
        stop = threading.Event()  # never set: the thread is a daemon and ends with its process
        while not stop.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except Exception as exc:  # retried at the next tick; leases last three ticks
                logger.warning("cannot renew call-in-flight slots", extra={"error": type(exc).__name__})
