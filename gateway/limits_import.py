"""Import ``limits`` without executing its asyncio half (``limits.aio``) until something uses it.

``limits/__init__`` always imports ``limits.aio``, whose storages import asyncio,
``deprecated`` and the async Redis, Memcached and MongoDB wrappers: about 30 ms of
CPU on every Lambda cold start, and the gateway (a WSGI app) never uses them.
``limits`` has no option to skip it, so ``limits`` is imported here with a
``limits.aio`` made by the standard library's :class:`importlib.util.LazyLoader` (the
lazy-import recipe of the ``importlib`` documentation) already set on the package:
``from . import aio`` then finds the attribute and touches nothing, and the module
executes, unchanged, on its first attribute access.

``gateway/__init__`` imports this first, so it runs before any module imports ``limits``.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

_AIO = "limits.aio"


def import_limits() -> None:
    """Import ``limits`` (once per process) with ``limits.aio`` lazy."""
    if "limits" in sys.modules:
        return
    spec = importlib.util.find_spec("limits")
    aio_spec = importlib.machinery.PathFinder.find_spec(_AIO, spec.submodule_search_locations)
    aio_spec.loader = importlib.util.LazyLoader(aio_spec.loader)
    aio = importlib.util.module_from_spec(aio_spec)
    aio_spec.loader.exec_module(aio)  # for a LazyLoader this only arms the module
    package = importlib.util.module_from_spec(spec)
    package.aio = aio
    sys.modules["limits"], sys.modules[_AIO] = package, aio
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules["limits"], sys.modules[_AIO]
        raise


import_limits()
