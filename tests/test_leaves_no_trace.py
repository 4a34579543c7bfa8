"""The gateway writes only inside the project and ``var/``, and ``make clean`` removes all the targets make."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fakes.servers import free_port, running

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = Path(sys.executable).parent / "gateway"


def files_under(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, relative to it."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (False while the server is not up)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_writes_nothing_outside_its_store(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GATEWAY_", "XDG_"))}
    env.update(HOME=str(home), GATEWAY_SQLITE_PATH=str(work / "var" / "gateway.db"))
    url = f"http://127.0.0.1:{free_port()}"
    argv = [str(GATEWAY), "serve", "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    with running(argv, tmp_path / "serve.log", lambda: answers(f"{url}/api/v1/health/ready"), env=env):
        assert answers(f"{url}/health")
    assert files_under(home) == set()
    assert {name for name in files_under(work) if not name.startswith("var/gateway")} == {"var"}


@pytest.mark.skipif(not (shutil.which("make") and (ROOT / ".git").exists()), reason="needs make and a git checkout")
def test_make_clean_removes_what_the_targets_made(tmp_path):
    copy = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    before = files_under(copy)
    made = [".venv/bin/python", ".venv-deploy/bin/python", "var/gateway.db", "var/dev-key", ".pytest_cache/v/x",
            ".hypothesis/examples/x", ".ruff_cache/x", "test-artifacts/dashboard.png", "dist/ai-gateway-dev.zip",
            "build/lib/gateway/app.py", "ai_model_gateway.egg-info/PKG-INFO", "gateway/__pycache__/app.pyc",
            "examples/gateway-pii-guard/gateway_pii_guard.egg-info/PKG-INFO", "bench/results/latest.json",
            "bench/portkey/node_modules/x/index.js", "tests/__pycache__/conftest.pyc"]
    for name in made:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("made")
    subprocess.run(["make", "clean"], cwd=copy, check=True, capture_output=True)
    assert files_under(copy) == before
