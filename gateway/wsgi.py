"""The module servers (gunicorn) and Zappa import: ``gateway.wsgi:app``.

The cyclic garbage collector is paused while the gateway imports and builds itself,
then everything built so far is frozen (``gc.freeze``): start-up allocates hundreds of
thousands of long-lived objects (modules, classes, schemas, routes) and no garbage
worth collecting, yet the allocations kept triggering collections, one of them over
every object in the process: about half of the gateway's extra cold-start CPU on
Lambda (``bench/RESULTS.md``). Frozen objects are never scanned again, which also
keeps forked workers' memory pages shared. Collection resumes as normal afterwards.
"""
import gc


def _build():
    from gateway.app import create_app

    return create_app()


_collecting = gc.isenabled()
gc.disable()
try:
    app = _build()
finally:
    gc.freeze()
    if _collecting:
        gc.enable()
