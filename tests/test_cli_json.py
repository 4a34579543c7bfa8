"""Every data command of the ``gateway`` CLI answers ``--json`` with JSON, and nothing else.

The test walks the command tree the console script builds (core and plugin commands), so a
command added without ``--json``, or without a step below, fails here. Each command runs as
the installed ``gateway`` script in its own process: stdout must parse as one JSON document
and stderr must be empty (no start-up log line before the answer).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from gateway.cli import build_cli
from gateway.config import load_settings
from gateway.plugins import build_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = Path(sys.executable).parent / "gateway"
#: Commands that are not data commands, and why.
NOT_DATA = {("serve",): "starts a server and answers nothing"}


def leaves(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) of every command under ``group``."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaves(command, (*path, name))
        else:
            yield (*path, name), command


def steps(tmp_path: Path):
    """Each data command's arguments and a check of its JSON answer, in an order that gives the later
    ones something to work on (``state`` carries key ids forward)."""
    state: dict = {}

    def created(data):
        state["key_id"] = data["key_id"]
        assert data["key"].startswith("gw_test_") and "key_hash" not in data

    return {
        ("init",): (lambda: [], lambda data: data == {"store": "sqlite", "ready": True}),
        ("catalog", "import"): (lambda: [str(ROOT / "data/demo_catalog.json")],
                                lambda data: state.setdefault("imported", data["imported"]) >= 200),
        ("catalog", "export"): (lambda: [str(tmp_path / "out.csv")],
                                lambda data: data["exported"] == state["imported"]),
        ("plugins",): (lambda: [], lambda data: {"apikey", "analytics", "catalog"} <= {row["name"] for row in data}),
        ("settings",): (lambda: [], lambda data: {row["name"]: row["value"] for row in data}.items() >= {
            ("stage", "dev"), ("key_pepper", "***")}),
        ("keys", "create"): (lambda: ["--user", "dev", "--keep", str(tmp_path / "dev-key")],
                             lambda data: created(data) or data["kept_in"].endswith("dev-key")),
        ("keys", "list"): (lambda: [], lambda data: [row["key_id"] for row in data] == [state["key_id"]]),
        ("keys", "rotate"): (lambda: [state["key_id"]], lambda data: data["replaces"] == state["key_id"]),
        ("keys", "revoke"): (lambda: [state["key_id"]], lambda data: data == {"revoked": state["key_id"]}),
        ("analytics", "purge"): (lambda: [], lambda data: data == {"purged": 0}),
    }


def run_gateway(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The installed ``gateway`` script on a SQLite store under ``tmp_path``."""
    env = {**os.environ, "GATEWAY_SQLITE_PATH": str(tmp_path / "gateway.db"), **env}
    return subprocess.run([str(GATEWAY), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_every_data_command_answers_json_alone(tmp_path):
    commands = dict(leaves(build_cli(build_plugin_manager(load_settings()))))
    scenario = steps(tmp_path)
    data_commands = set(commands) - set(NOT_DATA)
    assert data_commands == set(scenario), "a data command without a step here, or a step without its command"
    for path, (arguments, check) in scenario.items():
        assert "--json" in [opt for param in commands[path].params for opt in param.opts], path
        result = run_gateway([*path, *arguments(), "--json"], tmp_path)
        assert (result.returncode, result.stderr) == (0, ""), (path, result.stderr)
        assert check(json.loads(result.stdout)), (path, result.stdout)


def test_commands_log_nothing_unless_asked(tmp_path):
    quiet = run_gateway(["keys", "list"], tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    imported = run_gateway(["catalog", "import", str(ROOT / "data/demo_catalog.json")], tmp_path)
    assert imported.stdout.startswith("imported ") and imported.stderr == ""  # no progress bar off a terminal
    chatty = run_gateway(["keys", "list"], tmp_path, GATEWAY_LOG_LEVEL="INFO")
    assert json.loads(chatty.stderr.splitlines()[0])["message"] == "gateway ready"
