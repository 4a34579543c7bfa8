"""A plugin that makes the request-log store slow or refuse writes, switched from outside the process.

Load it into a served gateway with ``GATEWAY_PLUGINS=tests.fakes.store_faults`` and point
``STORE_FAULT_FILE`` at a file: its content is the mode for every later write, ``slow``
(each write, of one record or of a batch, waits ``SLOW_WRITE`` seconds), ``refuse`` (each
write raises, as an unreachable store does) or anything else (normal). The test flips modes
while the gateway is under load.
"""
from __future__ import annotations

import os
import time

from gateway import hookimpl

SLOW_WRITE = 0.05


class StoreRefused(ConnectionError):
    """The store did not take the write."""


def current_mode() -> str:
    """The mode written in ``STORE_FAULT_FILE`` ("" when there is none)."""
    try:
        with open(os.environ["STORE_FAULT_FILE"]) as file:
            return file.read().strip()
    except (KeyError, OSError):
        return ""


@hookimpl
def gateway_register_blueprints(app, gateway):
    """Wrap the store's ``put_record`` and ``put_records`` with the faults of the current mode
    (a slow batch waits once, as one slow round trip would)."""
    store = gateway.store

    def faulty(write):
        def faulty_write(*args):
            mode = current_mode()
            if mode == "refuse":
                raise StoreRefused("request log store refused the write")
            if mode == "slow":
                time.sleep(SLOW_WRITE)
            return write(*args)

        return faulty_write

    store.put_record = faulty(store.put_record)
    store.put_records = faulty(store.put_records)
