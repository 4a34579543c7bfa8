"""The ``gateway`` command: data commands, --json, and one-line errors with non-zero exits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gateway.cli import build_cli
from gateway.config import load_settings
from gateway.plugins import build_plugin_manager


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "cli.db"))
    cli = build_cli(build_plugin_manager(load_settings()))

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return invoke


def test_init_keys_and_auth_round_trip(run, tmp_path):
    assert run("init").exit_code == 0
    created = run("keys", "create", "--user", "bob", "--tier", "basic",
                  "--permissions", "completions,admin", "--json")
    assert created.exit_code == 0
    data = json.loads(created.output)
    assert data["key"].startswith("gw_test_") and "key_hash" not in data
    listed = json.loads(run("keys", "list", "--json").output)
    assert [(k["user_id"], k["tier"], k["permissions"], k["active"]) for k in listed] == [
        ("bob", "basic", ["admin", "completions"], True)]
    assert "key_hash" not in listed[0] and data["key"] not in run("keys", "list").output

    from gateway.testing import make_app

    app = make_app(tmp_path, {"sqlite_path": str(tmp_path / "cli.db")})
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    assert app.test_client().post("/v1/chat/completions", json=chat,
                                  headers={"X-API-Key": data["key"]}).status_code == 200
    revoked = run("keys", "revoke", data["key_id"])
    assert revoked.exit_code == 0
    assert json.loads(run("keys", "list", "--json").output)[0]["active"] is False


def test_catalog_import_and_export(run, tmp_path):
    result = run("catalog", "import", "data/demo_catalog.json", "--json")
    assert result.exit_code == 0
    count = json.loads(result.output.strip().splitlines()[-1])["imported"]
    assert count >= 200
    exported = run("catalog", "export", str(tmp_path / "out.csv"))
    assert exported.exit_code == 0 and str(count) in exported.output


def test_plugins_lists_sources_and_hooks(run):
    rows = {row["name"]: row for row in json.loads(run("plugins", "--json").output)}
    assert rows["apikey"]["source"] == "built-in"
    assert "gateway_authenticate" in rows["apikey"]["hooks"]
    assert rows["openai_provider"]["hooks"] == ["gateway_declare_settings", "gateway_register_providers"]
    assert rows["apikey"]["version"]


@pytest.mark.parametrize("args, message", [
    (["keys", "create", "--user", "x", "--tier", "platinum"], "'platinum' is not one of"),
    (["keys", "create", "--user", "x", "--permissions", "fly"], "unknown permission(s) fly"),
    (["keys", "create", "--user", "x", "--grounding", "strict"], "'strict' is not one of 'off', 'annotate', 'block'"),
    (["keys", "revoke", "nope"], "no key with id 'nope'"),
    (["catalog", "import", "missing.json"], "missing.json"),
])
def test_bad_arguments_exit_non_zero_with_one_line(run, args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_catalog_file_is_rejected_whole(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([
        {"productId": "A", "name": "ok", "category": "audio", "price": 5},
        {"productId": "B", "name": "bad", "category": "audio", "price": -1},
    ]))
    result = run("catalog", "import", str(bad))
    assert result.exit_code == 1 and "row 2" in result.output
    assert json.loads(run("catalog", "import", "data/demo_catalog.json", "--json")
                      .output.strip().splitlines()[-1])["imported"] >= 200


def test_bad_setting_stops_the_command_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_STAGE": "qa"}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "list"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "GATEWAY_STAGE" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_store_exits_with_a_message(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(blocker / "sub" / "gw.db"))
    cli = build_cli(build_plugin_manager(load_settings()))
    result = CliRunner().invoke(cli, ["init"])
    assert result.exit_code == 1 and "cannot initialise the sqlite store" in result.output


def test_plugins_table_keeps_each_column_in_its_place(monkeypatch, run):
    monkeypatch.setenv("COLUMNS", "100")
    lines = run("plugins").output.splitlines()
    header = lines[0]
    starts = [header.index(title) for title in ("VERSION", "SOURCE", "HOOKS")]
    rows = [line for line in lines[1:] if not line.startswith(" ")]
    assert {row.split()[0] for row in rows} >= {"apikey", "routing", "catalog"}
    for line in rows:  # every cell ends before the next column starts, with two spaces to spare
        assert all(line[start - 2:start] == "  " and line[start] != " " for start in starts), line
    assert max(len(line) for line in lines) <= 100
    continued = [line for line in lines[1:] if line.startswith(" ")]
    assert continued and all(line[:starts[2]].strip() == "" and line[starts[2]] != " " for line in continued)


def test_a_kept_key_is_reused_while_it_works(run, tmp_path):
    saved = tmp_path / "var" / "dev-key"
    create = ("keys", "create", "--user", "dev", "--tier", "premium", "--permissions", "completions,admin",
              "--keep", str(saved))
    first = run(*create)
    assert first.exit_code == 0 and f"Saved in {saved}" in first.output
    assert saved.stat().st_mode & 0o777 == 0o600
    key = saved.read_text().strip()
    assert key in first.output
    again = run(*create)
    assert f"Reused in {saved}" in again.output and key in again.output
    assert len(json.loads(run("keys", "list", "--json").output)) == 1
    other_tier = json.loads(run(*create[:5], "basic", *create[6:], "--json").output)
    assert other_tier["key"] != key and saved.read_text().strip() == other_tier["key"]
    assert run("keys", "revoke", other_tier["key_id"]).exit_code == 0
    after_revoke = json.loads(run(*create[:5], "basic", *create[6:], "--json").output)
    assert after_revoke["key"] not in (key, other_tier["key"])
    assert len(json.loads(run("keys", "list", "--json").output)) == 3


def test_importing_the_catalog_again_adds_nothing(run, tmp_path):
    counts = []
    for _ in range(2):
        assert run("catalog", "import", "data/demo_catalog.json").exit_code == 0
        counts.append(json.loads(run("catalog", "export", str(tmp_path / "out.json"), "--json").output)["exported"])
    assert counts[0] == counts[1] >= 200


def test_a_key_created_with_a_grounding_mode_keeps_it_through_rotation(run):
    created = json.loads(run("keys", "create", "--user", "bob", "--grounding", "block", "--json").output)
    assert created["grounding"] == "block"
    rotated = json.loads(run("keys", "rotate", created["key_id"], "--json").output)
    assert rotated["grounding"] == "block"
    plain = json.loads(run("keys", "create", "--user", "carol", "--json").output)
    listed = {k["user_id"]: k["grounding"] for k in json.loads(run("keys", "list", "--json").output)}
    assert plain["grounding"] is None and listed == {"bob": "block", "carol": None}
