"""Key rotation from the CLI, `gateway init` creating the DynamoDB counters table, and an older
SQLite key table gaining the new columns."""
from __future__ import annotations

import json
import sqlite3
import uuid

from click.testing import CliRunner

from gateway.cli import build_cli
from gateway.config import load_settings
from gateway.plugins import build_plugin_manager
from gateway.store.sqlite import SQLiteStore
from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS
from tests.fakes import servers


def cli_runner():
    cli = build_cli(build_plugin_manager(load_settings()))
    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_keys_rotate(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "cli.db"))
    monkeypatch.setenv("GATEWAY_KEY_ROTATION_GRACE_SECONDS", "600")
    run = cli_runner()
    old = json.loads(run("keys", "create", "--user", "bob", "--json").output)
    rotated = run("keys", "rotate", old["key_id"], "--json")
    assert rotated.exit_code == 0
    new = json.loads(rotated.output)
    assert new["replaces"] == old["key_id"] and new["user_id"] == "bob" and new["key"] != old["key"]
    listed = {k["key_id"]: k for k in json.loads(run("keys", "list", "--json").output)}
    assert listed[old["key_id"]]["expires_at"] is not None and listed[new["key_id"]]["expires_at"] is None
    missing = run("keys", "rotate", "nope")
    assert missing.exit_code != 0 and "no key with id 'nope'" in missing.output


def test_init_creates_the_dynamodb_counters_table(tmp_path, monkeypatch):
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GATEWAY_STORE", "dynamodb")
    monkeypatch.setenv("GATEWAY_TABLE_PREFIX", prefix)
    with servers.moto_server(tmp_path) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        assert cli_runner()("init").exit_code == 0
        import boto3

        client = boto3.client("dynamodb", region_name="us-east-1")
        assert f"{prefix}-dev-rate-limits" in client.list_tables()["TableNames"]
        ttl = client.describe_time_to_live(TableName=f"{prefix}-dev-rate-limits")["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expirationTimestamp"


def test_older_sqlite_key_table_gains_new_columns(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
                   "key_hash TEXT NOT NULL UNIQUE, tier TEXT NOT NULL, permissions TEXT NOT NULL, "
                   "active INTEGER NOT NULL, created_at REAL NOT NULL, expires_at REAL, "
                   "name TEXT NOT NULL DEFAULT '', requests_per_minute INTEGER, requests_per_hour INTEGER)")
        db.execute("INSERT INTO api_keys VALUES ('k1', 'u1', 'h', 'free', '[\"completions\"]', 1, 1.0, "
                   "NULL, '', NULL, NULL)")
    store = SQLiteStore(str(path))
    key = store.get_key("k1")
    assert (key.allowed_models, key.last_used_at, key.mcp_context, key.grounding) == (None, None, None, None)
    assert store.touch_last_used("k1", 5.0) is True
    assert store.update_key("k1", {"grounding": "annotate"}).grounding == "annotate"
