"""Bytecode that Lambda can use: Zappa's ``prebuild_script`` (``zappa_settings.json``).

Zappa zips every file with the zip's default date, 1980-01-01, and Lambda unpacks
them with that date. The ``.pyc`` files pip and Python wrote record their source's
real modification time, so on Lambda none of them matches its source: every module
is compiled again on every cold start, and ``/var/task`` being read-only, the result
is never kept (measured here: 1.30 s of CPU to the first answer instead of 0.42-0.61 s, see
``bench/RESULTS.md``). A hash-based ``.pyc`` (PEP 552) records a hash of its
source instead, so it stays valid whatever the files' dates.

Before Zappa builds the package, this recompiles the virtualenv being packaged and
the project's sources with the standard library's ``compileall`` in
``CHECKED_HASH`` mode: a source that changed later is still recompiled, never run
stale. Standard library only: Zappa loads this file on its own, outside the package.
"""
from __future__ import annotations

import compileall
import sysconfig
from pathlib import Path
from py_compile import PycInvalidationMode

PROJECT_SOURCES = ("gateway", "plugins")


def compile_for_lambda(site_packages: Path | None = None, project: Path | None = None) -> bool:
    """Write hash-based ``.pyc`` files for the packaged virtualenv and the project (the prebuild
    hook: Zappa calls it with no arguments, from the project directory, in that virtualenv).
    Returns False when a file failed to compile (compileall has printed it)."""
    site_packages = site_packages or Path(sysconfig.get_paths()["purelib"])
    project = project or Path.cwd()
    compiled = True
    for directory in (site_packages, *(project / name for name in PROJECT_SOURCES)):
        if directory.is_dir():
            compiled &= bool(compileall.compile_dir(directory, quiet=1, workers=0, force=True,
                                                    invalidation_mode=PycInvalidationMode.CHECKED_HASH))
    return compiled
