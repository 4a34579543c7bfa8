"""``zappa package dev`` works here, offline, with fake credentials (slow: it zips a whole virtualenv).

Run with ``pytest -m slow tests/deploy/test_zappa_package.py``. The first test packages the
development virtualenv and checks what goes in and what stays out (its size says nothing: that
virtualenv carries pytest, moto, schemathesis...). The second builds the deployable package as
``make package`` does, from a virtualenv with only the runtime dependencies, and checks it against
Lambda's limits and that its bytecode is the hash-based kind Lambda can use.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.lambda_harness import ROOT, base_environment

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_ZIPPED_LIMIT = 50 * 1024 * 1024


@pytest.mark.slow
def test_zappa_package_dev(tmp_path):
    package = tmp_path / "ai-gateway-dev.zip"
    environment = {**base_environment(tmp_path), "VIRTUAL_ENV": sys.prefix}
    done = subprocess.run([str(Path(sys.executable).with_name("zappa")), "package", "dev", "-o", str(package)],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        settings = archive.read("zappa_settings.py").decode()
    assert {"handler.py", "zappa_settings.py", "gateway/wsgi.py", "gateway/ssm.py", "plugins/echo_provider.py",
            "zappa/handler.py", "flask/app.py", "marshmallow/schema.py"} <= names
    for left_out in ("tests/", "bench/", "cloudformation/", "docs/", ".ci/", ".hypothesis/", "examples/", "dist/",
                     "boto3/", "botocore/", "gunicorn/"):
        assert not any(name.startswith(left_out) for name in names), left_out
    assert "APP_MODULE='gateway.wsgi'" in settings and "DEBUG=False" in settings


@pytest.mark.slow
def test_make_package_is_within_lambda_limits_with_bytecode_lambda_can_use():
    # Not base_environment: building .venv-deploy the first time needs the package index.
    done = subprocess.run(["make", "package", "STAGE=dev"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    package = ROOT / "dist" / "ai-gateway-dev.zip"
    with zipfile.ZipFile(package) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
        flags = {name: int.from_bytes(archive.read(name)[4:8], "little")
                 for name in ("gateway/__pycache__/app.cpython-311.pyc", "flask/__pycache__/app.cpython-311.pyc")}
    assert package.stat().st_size < LAMBDA_ZIPPED_LIMIT and unzipped < LAMBDA_UNZIPPED_LIMIT
    assert flags == dict.fromkeys(flags, 0b11)  # PEP 552: hash-based, checked against the source
