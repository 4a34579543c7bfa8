"""gateway.lambda_bytecode: the package's bytecode stays valid when Lambda unpacks it with 1980 dates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.lambda_bytecode import compile_for_lambda
from tests.deploy.lambda_harness import ROOT

ZIP_DATE = 315532800  # 1980-01-01, the date Zappa's zip entries carry


def loads_from_bytecode(path: Path, module: str) -> bool:
    """Import ``module`` from ``path`` as on Lambda (no bytecode written); True when its .pyc was used."""
    done = subprocess.run([sys.executable, "-v", "-c", f"import {module}"], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"})
    lines = [line for line in done.stderr.splitlines() if module in line]
    return any("code object from" in line and ".pyc" in line for line in lines)


def unpack_as_lambda(*sources: Path) -> None:
    for source in sources:
        os.utime(source, (ZIP_DATE, ZIP_DATE))


def test_zappa_runs_it_before_packaging():
    for stage, config in json.loads((ROOT / "zappa_settings.json").read_text()).items():
        if "extends" not in config:
            assert config["prebuild_script"] == "gateway.lambda_bytecode.compile_for_lambda", stage


def test_hash_based_bytecode_survives_the_zip_dates_and_timestamped_does_not(tmp_path):
    site, project = tmp_path / "site", tmp_path / "project"
    (site / "library").mkdir(parents=True)
    (project / "gateway").mkdir(parents=True)
    library, own = site / "library" / "__init__.py", project / "gateway" / "own.py"
    library.write_text("VALUE = 1\n")
    own.write_text("VALUE = 2\n")

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(site)], check=True)  # as pip writes it
    unpack_as_lambda(library)
    assert not loads_from_bytecode(site, "library")

    assert compile_for_lambda(site, project)
    unpack_as_lambda(library, own)
    assert loads_from_bytecode(site, "library") and loads_from_bytecode(project / "gateway", "own")


def test_a_changed_source_is_still_recompiled(tmp_path):
    (tmp_path / "gateway").mkdir()
    source = tmp_path / "gateway" / "own.py"
    source.write_text("VALUE = 2\n")
    assert compile_for_lambda(tmp_path / "no-site-packages", tmp_path)
    source.write_text("VALUE = 3\n")
    unpack_as_lambda(source)
    assert not loads_from_bytecode(tmp_path / "gateway", "own")
    done = subprocess.run([sys.executable, "-c", "import own; print(own.VALUE)"], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(tmp_path / "gateway")})
    assert done.stdout.strip() == "3"
