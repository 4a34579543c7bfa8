"""The deployable package of the checkout, as ``make package`` builds it, for tests that run it.

``dist/ai-gateway-dev.zip`` is used when it holds exactly the checkout's ``gateway/`` and
``plugins/`` files and is newer than the settings and the deploy virtualenv it was built
from; otherwise the package is built again (about 40 s) into the test's directory, with the
command the Makefile runs, leaving ``dist/`` alone.
"""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

from bench.coldstart import lambda_layout  # noqa: F401  re-exported: the package unzipped as Lambda does
from tests.deploy.lambda_harness import ROOT, base_environment

DEPLOY_VENV = ROOT / ".venv-deploy"
BUILT = ROOT / "dist" / "ai-gateway-dev.zip"
#: What the package is built from besides the sources: a change to any of them means a new package.
INPUTS = (ROOT / "zappa_settings.json", ROOT / "setup.cfg", DEPLOY_VENV / ".installed-stamp")


def _sources() -> dict[str, bytes]:
    found = {}
    for top in ("gateway", "plugins"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    return found


def is_current(package: Path) -> bool:
    """Whether ``package`` was built from this checkout as it is now."""
    if not package.is_file() or any(not p.exists() or p.stat().st_mtime > package.stat().st_mtime for p in INPUTS):
        return False
    sources = _sources()
    with zipfile.ZipFile(package) as archive:
        packed = {name for name in archive.namelist() if name.startswith(("gateway/", "plugins/"))
                  and "__pycache__" not in name and not name.endswith("/")}
        return packed == set(sources) and all(archive.read(name) == sources[name] for name in packed)


def built_package(work: Path) -> Path:
    """The dev stage's package of this checkout: ``dist/``'s when current, else one built into ``work``."""
    if is_current(BUILT):
        return BUILT
    if not DEPLOY_VENV.joinpath(".installed-stamp").exists():  # first time: make creates the virtualenv too
        subprocess.run(["make", "package", "STAGE=dev"], cwd=ROOT, check=True, capture_output=True, timeout=900)
        return BUILT
    target = work / "ai-gateway-dev.zip"
    environment = {**base_environment(work), "VIRTUAL_ENV": str(DEPLOY_VENV),
                   "PATH": f"{DEPLOY_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    done = subprocess.run([str(DEPLOY_VENV / "bin" / "zappa"), "package", "dev", "-o", str(target)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return target
