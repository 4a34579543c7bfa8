"""``zappa package dev`` works here, offline, with fake credentials (slow: it zips the whole virtualenv).

Run with ``pytest -m slow tests/deploy/test_zappa_package.py``. The size recorded in
the README comes from a deploy-only virtualenv (``make package``); this test packages
the development virtualenv, so it checks what goes in and what stays out, and the
unzipped size against Lambda's 250 MB limit.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.lambda_harness import ROOT, base_environment

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


@pytest.mark.slow
def test_zappa_package_dev(tmp_path):
    package = tmp_path / "ai-gateway-dev.zip"
    environment = {**base_environment(tmp_path), "VIRTUAL_ENV": sys.prefix}
    done = subprocess.run([str(Path(sys.executable).with_name("zappa")), "package", "dev", "-o", str(package)],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        unzipped = sum(info.file_size for info in archive.infolist())
        settings = archive.read("zappa_settings.py").decode()
    assert {"handler.py", "zappa_settings.py", "gateway/wsgi.py", "gateway/ssm.py", "plugins/echo_provider.py",
            "zappa/handler.py", "flask/app.py", "marshmallow/schema.py"} <= names
    for left_out in ("tests/", "bench/", "cloudformation/", "docs/", ".ci/", ".hypothesis/", "examples/", "dist/",
                     "boto3/", "botocore/", "gunicorn/"):
        assert not any(name.startswith(left_out) for name in names), left_out
    assert "APP_MODULE='gateway.wsgi'" in settings and "DEBUG=False" in settings
    assert unzipped < LAMBDA_UNZIPPED_LIMIT
