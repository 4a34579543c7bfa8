"""API keys: format, storage as hashes, lifecycle (expiry, revocation, rotation), permissions,
allowed models, lastUsedAt, the in-process cache across instances, and failed-attempt throttling."""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from gateway.logs import JSONFormatter
from gateway.testing import issue_key, make_app
from plugins import apikey
from tests.test_errors import CHAT, assert_envelope, body


def ask(client, key, header="X-API-Key", **overrides):
    value = f"Bearer {key}" if header == "Authorization" else key
    return client.post(CHAT, json=body(**overrides), headers={header: value})


def key_id(key: str) -> str:
    return key.split("_")[2]


def test_key_format_and_only_the_hash_is_stored(app, gateway, tmp_path):
    key = issue_key(app)
    prefix, env, kid, secret = key.split("_", 3)
    assert (prefix, env) == ("gw", "test") and len(secret) >= 40
    stored = gateway.store.get_key(kid)
    pepper = gateway.plugin_settings[apikey.ApiKeySettings].key_pepper
    assert stored.key_hash == apikey.hash_secret(pepper, kid, secret)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump and key not in dump and pepper not in dump


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_key_accepted_in_either_header(app, client, header):
    assert ask(client, issue_key(app), header=header).status_code == 200


def test_key_in_query_string_is_not_accepted(app, client):
    key = issue_key(app)
    for name in ("api_key", "key", "x-api-key"):
        response = client.post(f"{CHAT}?{name}={key}", json=body())
        assert_envelope(response, 401, "invalid_api_key")


def test_wrong_secret_and_unknown_id_are_401(app, client):
    key = issue_key(app)
    assert_envelope(ask(client, key[:-4] + "AAAA"), 401, "invalid_api_key")
    assert_envelope(ask(client, "gw_test_0000000000000000_" + "x" * 43), 401, "invalid_api_key")


def test_expired_key_is_401(app, client):
    key = issue_key(app, expires_at=time.time() - 1)
    assert_envelope(ask(client, key), 401, "expired_api_key")


def test_revoked_key_is_401(app, client, gateway):
    key = issue_key(app)
    assert ask(client, key).status_code == 200
    gateway.store.set_key_active(key_id(key), False)
    apikey.forget_key(gateway, key_id(key))
    assert_envelope(ask(client, key), 401, "revoked_api_key")


def test_wrong_permission_is_403(app, client):
    assert_envelope(ask(client, issue_key(app, permissions=("health", "mcp"))), 403, "permission_denied")


def test_rotation_keeps_the_old_key_for_the_grace_period(tmp_path):
    app = make_app(tmp_path, {"key_rotation_grace_seconds": 3600})
    gateway, client = app.extensions["gateway"], app.test_client()
    old = issue_key(app, tier="premium", permissions=("completions", "mcp"), requests_per_minute=7,
                    allowed_models=["echo"])
    new, record = apikey.rotate_key(gateway, key_id(old))
    assert new != old
    assert (record.user_id, record.tier, record.permissions, record.requests_per_minute,
            record.allowed_models) == ("alice", "premium", ["completions", "mcp"], 7, ["echo"])
    assert abs(gateway.store.get_key(key_id(old)).expires_at - (time.time() + 3600)) < 60
    assert ask(client, old).status_code == 200 and ask(client, new).status_code == 200


def test_rotated_out_key_stops_after_the_grace_period(tmp_path):
    app = make_app(tmp_path, {"key_rotation_grace_seconds": 0})
    gateway, client = app.extensions["gateway"], app.test_client()
    old = issue_key(app)
    new, _ = apikey.rotate_key(gateway, key_id(old))
    assert_envelope(ask(client, old), 401, "expired_api_key")
    assert ask(client, new).status_code == 200
    assert apikey.rotate_key(gateway, "no-such-key") is None


def test_rotation_never_extends_an_earlier_expiry(tmp_path):
    app = make_app(tmp_path, {"key_rotation_grace_seconds": 86400})
    gateway = app.extensions["gateway"]
    soon = time.time() + 60
    old = issue_key(app, expires_at=soon)
    apikey.rotate_key(gateway, key_id(old))
    assert gateway.store.get_key(key_id(old)).expires_at == soon


def test_allowed_models_per_key(app, client):
    key = issue_key(app, allowed_models=["echo"])
    assert ask(client, key).status_code == 200
    refused = ask(client, key, model="gpt-4o-mini")
    assert_envelope(refused, 403, "model_not_allowed")
    assert "echo" in refused.get_json()["error"]["message"]
    assert_envelope(ask(client, issue_key(app, allowed_models=[])), 403, "model_not_allowed")


def test_last_used_at_written_at_most_once_a_minute(app, client, gateway, monkeypatch):
    key = issue_key(app)
    writes = []
    real_touch = gateway.store.touch_last_used
    monkeypatch.setattr(gateway.store, "touch_last_used",
                        lambda *args, **kwargs: writes.append(args) or real_touch(*args, **kwargs))
    assert gateway.store.get_key(key_id(key)).last_used_at is None
    for _ in range(5):
        assert ask(client, key).status_code == 200
    assert len(writes) == 1
    first = gateway.store.get_key(key_id(key)).last_used_at
    assert abs(first - time.time()) < 30
    later = time.time() + 61
    gateway.clock = lambda: later
    ask(client, key)
    assert len(writes) == 2 and gateway.store.get_key(key_id(key)).last_used_at == later


def test_last_used_at_once_a_minute_across_instances(tmp_path):
    first, second = make_app(tmp_path), make_app(tmp_path)
    key = issue_key(first)
    ask(first.test_client(), key)
    stamped = first.extensions["gateway"].store.get_key(key_id(key)).last_used_at
    ask(second.test_client(), key)
    assert second.extensions["gateway"].store.get_key(key_id(key)).last_used_at == stamped


def test_revocation_and_permission_changes_reach_every_worker_of_a_sqlite_store_at_once(tmp_path):
    """Two app instances (two workers) sharing one SQLite store: A has the key cached, with an
    hour's TTL; B's changes still take effect on A's very next request."""
    config = {"key_cache_ttl": 3600}
    a, b = make_app(tmp_path, config), make_app(tmp_path, config)
    admin = issue_key(b, "root", permissions=("admin",))
    key = issue_key(a)
    assert ask(a.test_client(), key).status_code == 200  # now cached in A
    changed = b.test_client().patch(f"/api/v1/admin/keys/{key_id(key)}", headers={"X-API-Key": admin},
                                    json={"permissions": ["health"]})
    assert changed.status_code == 200
    assert_envelope(ask(a.test_client(), key), 403, "permission_denied")
    response = b.test_client().delete(f"/api/v1/admin/keys/{key_id(key)}", headers={"X-API-Key": admin})
    assert response.status_code == 200
    assert_envelope(ask(a.test_client(), key), 401, "revoked_api_key")


def test_a_store_that_cannot_signal_changes_bounds_revocation_by_the_cache_ttl(tmp_path, monkeypatch):
    """Where the store has no change marker (DynamoDB), a cached key lasts ``key_cache_ttl`` (5 s)."""
    config = {"key_cache_ttl": 0.5}
    a, b = make_app(tmp_path, config), make_app(tmp_path, config)
    monkeypatch.setattr(a.extensions["gateway"].store, "change_marker", lambda: None)
    admin = issue_key(b, "root", permissions=("admin",))
    key = issue_key(a)
    assert ask(a.test_client(), key).status_code == 200  # now cached in A
    assert b.test_client().delete(f"/api/v1/admin/keys/{key_id(key)}", headers={"X-API-Key": admin}).status_code == 200
    revoked_at = time.monotonic()
    cached = ask(a.test_client(), key)
    if time.monotonic() - revoked_at < 0.4:  # a loaded machine may have passed the TTL already
        assert cached.status_code == 200
    time.sleep(max(0.0, revoked_at + 0.6 - time.monotonic()))
    assert_envelope(ask(a.test_client(), key), 401, "revoked_api_key")
    assert apikey.ApiKeySettings().key_cache_ttl == 5.0


def test_failed_attempts_per_address_are_throttled(tmp_path):
    app = make_app(tmp_path, {"failed_auth_limit": "3/minute"})
    client = app.test_client()
    good = issue_key(app)
    bad = good[:-4] + "AAAA"
    attacker = {"REMOTE_ADDR": "10.0.0.66"}

    def attempt(key, address=attacker):
        return client.post(CHAT, json=body(), headers={"X-API-Key": key}, environ_base=address)

    assert [attempt(bad).status_code for _ in range(3)] == [401] * 3
    throttled = attempt(bad)
    assert_envelope(throttled, 429, "too_many_failed_attempts")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert attempt(good).status_code == 200  # a valid key is never refused, whatever its address did
    assert attempt(bad).status_code == 429
    assert attempt(bad, {"REMOTE_ADDR": "10.0.0.7"}).status_code == 401
    assert attempt(good, {"REMOTE_ADDR": "10.0.0.7"}).status_code == 200
    assert client.get("/health", environ_base=attacker).status_code == 200


def test_behind_trusted_proxies_the_forwarded_client_address_is_throttled(tmp_path):
    app = make_app(tmp_path, {"failed_auth_limit": "2/minute", "trusted_proxy_hops": 1})
    client, good = app.test_client(), issue_key(app)
    bad = good[:-4] + "AAAA"
    balancer = {"REMOTE_ADDR": "10.0.0.1"}

    def attempt(key, client_address):
        return client.post(CHAT, json=body(), headers={"X-API-Key": key, "X-Forwarded-For": client_address},
                           environ_base=balancer).status_code

    assert [attempt(bad, "203.0.113.9") for _ in range(3)] == [401, 401, 429]
    assert attempt(bad, "198.51.100.4") == 401  # another client behind the same balancer
    assert attempt(good, "203.0.113.9") == 200


def test_without_trusted_proxies_x_forwarded_for_is_ignored(tmp_path):
    app = make_app(tmp_path, {"failed_auth_limit": "2/minute"})
    client, good = app.test_client(), issue_key(app)
    bad = good[:-4] + "AAAA"
    statuses = [client.post(CHAT, json=body(), headers={"X-API-Key": bad, "X-Forwarded-For": f"198.51.100.{n}"},
                            environ_base={"REMOTE_ADDR": "10.0.0.66"}).status_code for n in range(3)]
    assert statuses == [401, 401, 429]  # a forged header does not buy fresh attempts


def test_failed_attempt_throttle_fails_open_when_its_counters_are_down(tmp_path, monkeypatch):
    app = make_app(tmp_path, {"failed_auth_limit": "1/minute", "rate_limit_fail_mode": "open"})
    client, good = app.test_client(), issue_key(app)
    storage = app.extensions["gateway"].limiter.storage

    def down(*args, **kwargs):
        raise ConnectionError("counters unreachable")

    for operation in ("get", "incr", "get_expiry"):
        monkeypatch.setattr(storage, operation, down)
    bad = good[:-4] + "AAAA"
    assert [client.post(CHAT, json=body(), headers={"X-API-Key": bad}).status_code for _ in range(3)] == [401] * 3
    assert client.post(CHAT, json=body(), headers={"X-API-Key": good}).status_code == 200


def test_requests_without_a_key_are_not_counted_as_failed_attempts(tmp_path):
    app = make_app(tmp_path, {"failed_auth_limit": "1/minute"})
    client, good = app.test_client(), issue_key(app)
    assert [client.post(CHAT, json=body()).status_code for _ in range(3)] == [401] * 3
    assert client.post(CHAT, json=body(), headers={"X-API-Key": good}).status_code == 200


def test_successes_do_not_count_as_failed_attempts(tmp_path):
    app = make_app(tmp_path, {"failed_auth_limit": "2/minute"})
    client, key = app.test_client(), issue_key(app, requests_per_minute=100)
    assert {client.post(CHAT, json=body(), headers={"X-API-Key": key}).status_code for _ in range(5)} == {200}


def test_no_key_secret_or_pepper_in_any_log_line(tmp_path, caplog):
    pepper = "a-test-pepper-that-must-never-be-logged"
    app = make_app(tmp_path, {"key_pepper": pepper, "failed_auth_limit": "2/minute",
                              "key_rotation_grace_seconds": 0})
    gateway, client = app.extensions["gateway"], app.test_client()
    formatter = JSONFormatter()
    with caplog.at_level(logging.DEBUG):
        admin = issue_key(app, "root", permissions=("admin",))
        created = client.post("/api/v1/admin/keys", headers={"X-API-Key": admin},
                              json={"user_id": "bob", "allowed_models": ["echo"]}).get_json()["key"]
        revoked = issue_key(app)
        expired = issue_key(app, expires_at=time.time() - 5)
        rotated = issue_key(app)
        replacement, _ = apikey.rotate_key(gateway, key_id(rotated))
        gateway.store.set_key_active(key_id(revoked), False)
        keys = [admin, created, revoked, expired, rotated, replacement]
        for key in keys:
            ask(client, key)
            ask(client, key, header="Authorization", model="gpt-4o-mini")
        for _ in range(4):
            ask(client, created[:-3] + "zzz")
        from gateway.authorizer import authorize
        from tests.test_authorizer import request_event

        for header in ({"X-API-Key": created}, {"Authorization": f"Bearer {revoked}"}):
            authorize(gateway, request_event(header))
    lines = [formatter.format(record) for record in caplog.records] + [caplog.text]
    assert "authorizer denied a key" in [record.getMessage() for record in caplog.records]
    secrets_ = [pepper] + keys + [k.split("_", 3)[3] for k in keys]
    leaked = [s for s in secrets_ for line in lines if s in line]
    assert leaked == []
    assert any(json.loads(line).get("message") for line in lines[:-1])


def test_models_list_shows_only_the_allowed_models(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-upstream-secret-0123456789")  # its models are listed then
    app = make_app(tmp_path)
    client = app.test_client()

    def listed(key):
        return [m["id"] for m in client.get("/v1/models", headers={"X-API-Key": key}).get_json()["data"]]

    assert listed(issue_key(app, allowed_models=["echo"])) == ["echo"]
    assert "echo" in listed(issue_key(app)) and len(listed(issue_key(app))) > 1
