"""The README's snippets run as written.

Each Python block runs as a script in its own process against a local gateway set up as
``make run`` sets it up (installed plugins, the demo catalog, a premium key with every
permission); only the key placeholder and the address are swapped for the test's. A
``# -> text`` comment is what the block must print. The ``curl`` block runs in a shell the
same way (in a folder whose ``var/dev-key`` holds the key), and every JSON block, a model table,
loads as one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.catalog import import_products
from gateway.models import parse_model_table
from gateway.testing import issue_key, make_app, serve

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
KEY_PLACEHOLDER = "gw_test_…"
ADDRESS = "http://127.0.0.1:8080"


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language``, in order."""
    return [match.group(2) for match in BLOCK.finditer((ROOT / "README.md").read_text())
            if match.group(1) == language]


@pytest.fixture
def local_gateway(tmp_path):
    """(base URL, key) of a gateway set up as ``make run`` sets it up."""
    app = make_app(tmp_path, entry_points=True)
    import_products(app.extensions["gateway"].store, ROOT / "data" / "demo_catalog.json")
    key = issue_key(app, "dev", "premium", ("completions", "admin", "mcp", "health"))
    with serve(app) as url:
        yield url, key


def as_written(code: str, url: str, key: str) -> str:
    """``code`` pointed at the test's gateway: the placeholder key and the address swapped, nothing else."""
    assert ADDRESS in code
    return code.replace(KEY_PLACEHOLDER, key).replace(ADDRESS, url)


def test_the_readme_has_the_snippets_this_file_runs():
    assert len(blocks("python")) >= 2 and len(blocks("sh")) >= 2 and blocks("json")


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet_runs_as_written(index, local_gateway, tmp_path):
    url, key = local_gateway
    code = blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", as_written(code, url, key)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "a snippet shows its result"
    for expected in re.findall(r"# -> (.+)$", code, re.M):
        assert expected.strip() in result.stdout


def test_curl_snippet_runs_as_written(local_gateway, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install -y curl)")
    url, key = local_gateway
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-key").write_text(key + "\n")  # where make run keeps it
    [code] = [block for block in blocks("sh") if "curl " in block]
    env = {name: value for name, value in os.environ.items() if name != "GATEWAY_KEY"}
    result = subprocess.run(["sh", "-c", as_written(code, url, key)], capture_output=True, text=True, timeout=60,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "Hello, gateway"


def test_model_table_snippets_load():
    tables = [json.loads(block) for block in blocks("json")]
    assert tables and all(parse_model_table(table, "README.md") for table in tables)
