"""What importing the gateway costs and changes: ``from gateway import hookimpl`` (what every plugin
module runs first) loads pluggy and nothing heavy, and building the app patches no library (it once
swapped ``re.compile`` while marshmallow imported, built ``limits`` by hand in ``sys.modules`` and
overrode werkzeug's private ``Rule._compile_builder``; see bench/RESULTS.md for what that saved)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("flask", "werkzeug", "marshmallow", "limits", "boto3", "botocore", "jinja2", "click")

HOOKIMPL_PROBE = f"""
import json, sys, time
before = set(sys.modules)
started = time.perf_counter()
from gateway import hookimpl
milliseconds = (time.perf_counter() - started) * 1000
loaded = set(sys.modules) - before
print(json.dumps({{"heavy": sorted({{name.split(".")[0] for name in loaded}} & set({HEAVY!r})),
                  "pluggy": "pluggy" in loaded, "modules": len(loaded), "ms": milliseconds}}))
"""

APP_PROBE = """
import json, re, sys
import gateway.wsgi
import limits
from marshmallow.validate import Email
from werkzeug.routing import Rule
print(json.dumps({"regexes": isinstance(Email.USER_REGEX, re.Pattern) and isinstance(Email.DOMAIN_REGEX, re.Pattern),
                  "rule class": gateway.wsgi.app.url_rule_class is Rule,
                  "limits.aio": type(limits.aio) is type(sys) and limits.aio.__spec__.loader is not None
                  and type(limits.aio.__spec__.loader).__name__ != "LazyLoader"}))
"""


def probe(code: str, tmp_path: Path) -> dict:
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                   "PYTHONPATH": str(ROOT), "GATEWAY_SQLITE_PATH": str(tmp_path / "gateway.db"),
                   "GATEWAY_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_hookimpl_loads_pluggy_and_nothing_heavy(tmp_path):
    found = probe(HOOKIMPL_PROBE, tmp_path)
    print(f"from gateway import hookimpl: {found['ms']:.1f} ms, {found['modules']} modules")
    assert found["heavy"] == [] and found["pluggy"]
    assert found["modules"] < 60, found  # pluggy and the standard library modules it needs


def test_building_the_app_patches_no_library(tmp_path):
    assert probe(APP_PROBE, tmp_path) == {"regexes": True, "rule class": True, "limits.aio": True}
