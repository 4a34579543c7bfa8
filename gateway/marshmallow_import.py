"""Import marshmallow without compiling the ``Email`` validator's regexes at import time.

``marshmallow.validate`` compiles ``Email.USER_REGEX`` and ``Email.DOMAIN_REGEX`` (a
character class of every Unicode letter) in its class body: 40-90 ms of CPU on every
cold start, and the gateway never validates an email address. marshmallow has no
option to skip it (upstream, other projects made such validators lazy: Django #5194,
mongoengine #1807), so while marshmallow is first imported, ``re.compile`` called
from that one module's body returns a :class:`LazyPattern`, compiled on first use.
Every other caller gets ``re.compile`` unchanged, and it is restored straight after.

Modules that use marshmallow import this first (``import gateway.marshmallow_import``).
"""
from __future__ import annotations

import re
import sys
from typing import Any

_VALIDATE = "marshmallow.validate"


class LazyPattern:
    """A regex compiled the first time one of its attributes (``match``, ``search``...) is used."""

    def __init__(self, pattern: str, flags: int = 0):
        """Keep the arguments of ``re.compile`` for later."""
        self._arguments = (pattern, flags)
        self._compiled: re.Pattern | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # e.g. ABCMeta probing class attributes for __isabstractmethod__
            raise AttributeError(name)
        if self._compiled is None:
            self._compiled = _compile(*self._arguments)
        return getattr(self._compiled, name)


_compile = re.compile


def _compile_lazily_in_validate(pattern: Any, flags: int = 0) -> Any:
    if sys._getframe(1).f_globals.get("__name__") == _VALIDATE:
        return LazyPattern(pattern, flags)
    return _compile(pattern, flags)


def import_marshmallow() -> None:
    """Import marshmallow (once per process) with ``marshmallow.validate``'s regexes lazy."""
    if _VALIDATE in sys.modules:
        return
    re.compile = _compile_lazily_in_validate
    try:
        import marshmallow  # noqa: F401  (imports marshmallow.validate through marshmallow.fields)
    finally:
        re.compile = _compile


import_marshmallow()
