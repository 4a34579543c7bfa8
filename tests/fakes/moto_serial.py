"""moto's server, answering one request at a time: ``python -m tests.fakes.moto_serial HOST PORT``.

DynamoDB applies each ``UpdateItem`` atomically. moto's own server runs requests in
threads without a lock around them, so two concurrent ``ADD`` updates of one item
can lose one (seen: counts 1, 1, 2, 2 ...). Serialising requests restores the
guarantee the code under test relies on; everything else is moto's own app.
"""
from __future__ import annotations

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


def serialised(app):
    """``app`` behind one lock, held until its answer has been produced."""
    lock = threading.Lock()

    def handle(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    return handle


def main() -> None:
    """Serve moto on the host and port given as arguments."""
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, serialised(DomainDispatcherApplication(create_backend_app)), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
