"""The key admin API: admin only (BFLA), validated bodies, forbidden fields, no hash in answers."""
from __future__ import annotations

import time

import pytest

from gateway.testing import issue_key
from tests.test_errors import CHAT, assert_envelope, body

KEYS = "/api/v1/admin/keys"


@pytest.fixture
def admin(app):
    return {"X-API-Key": issue_key(app, "root", permissions=("admin",))}


def key_id(key: str) -> str:
    return key.split("_")[2]


def test_create_shows_the_key_once_and_it_works(client, admin, gateway):
    response = client.post(KEYS, headers=admin, json={
        "user_id": "bob", "tier": "premium", "permissions": ["completions", "mcp"], "name": "ci",
        "requests_per_minute": 50, "allowed_models": ["echo"], "expires_at": time.time() + 3600})
    assert response.status_code == 201
    created = response.get_json()
    assert "key_hash" not in created and created["key"].startswith("gw_test_")
    assert (created["user_id"], created["tier"], created["permissions"], created["allowed_models"]) == (
        "bob", "premium", ["completions", "mcp"], ["echo"])
    assert client.post(CHAT, json=body(), headers={"X-API-Key": created["key"]}).status_code == 200
    shown = client.get(f"{KEYS}/{created['key_id']}", headers=admin).get_json()
    assert "key" not in shown and "key_hash" not in shown and shown["last_used_at"] is not None
    assert gateway.store.get_key(created["key_id"]).requests_per_minute == 50


def test_list_all_or_one_users_keys(app, client, admin):
    issue_key(app, "bob"), issue_key(app, "carol")
    everyone = client.get(KEYS, headers=admin).get_json()["data"]
    assert {k["user_id"] for k in everyone} == {"root", "bob", "carol"}
    assert all("key_hash" not in k for k in everyone)
    assert [k["user_id"] for k in client.get(f"{KEYS}?user_id=bob", headers=admin).get_json()["data"]] == ["bob"]


def test_patch_changes_tier_limits_permissions_and_active(app, client, admin):
    key = issue_key(app, "bob")
    response = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={
        "tier": "enterprise", "requests_per_minute": 2, "permissions": ["completions", "health"]})
    assert response.status_code == 200
    assert (response.get_json()["tier"], response.get_json()["requests_per_minute"]) == ("enterprise", 2)
    statuses = [client.post(CHAT, json=body(), headers={"X-API-Key": key}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # the new limit applies at once on this instance
    client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"active": False})
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 401, "revoked_api_key")


def test_patch_sets_and_clears_the_keys_catalog_context_default(app, client, admin, gateway):
    key = issue_key(app, "bob")
    on = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"mcp_context": True})
    assert on.status_code == 200 and on.get_json()["mcp_context"] is True
    assert gateway.store.get_key(key_id(key)).mcp_context is True
    cleared = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"mcp_context": None})
    assert cleared.get_json()["mcp_context"] is None
    assert_envelope(client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"mcp_context": "sometimes"}),
                    400, "invalid_key_fields")


def test_a_keys_grounding_mode_is_set_changed_cleared_and_reaches_the_caller(app, client, admin, gateway):
    from plugins.apikey import verify_key

    created = client.post(KEYS, headers=admin, json={"user_id": "bob", "grounding": "annotate"})
    assert created.status_code == 201 and created.get_json()["grounding"] == "annotate"
    key = created.get_json()["key"]
    assert verify_key(gateway, key).attributes == {"grounding": "annotate"}
    blocked = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"grounding": "block", "mcp_context": True})
    assert blocked.status_code == 200 and blocked.get_json()["grounding"] == "block"
    assert gateway.store.get_key(key_id(key)).grounding == "block"
    assert verify_key(gateway, key).attributes == {"grounding": "block", "mcp_context": True}  # at once
    rotated = client.post(f"{KEYS}/{key_id(key)}/rotate", headers=admin).get_json()
    assert rotated["grounding"] == "block"
    cleared = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"grounding": None})
    assert cleared.get_json()["grounding"] is None and cleared.get_json()["mcp_context"] is True
    assert "grounding" not in verify_key(gateway, key).attributes  # null: the global setting decides
    assert client.get(f"{KEYS}/{key_id(key)}", headers=admin).get_json()["grounding"] is None


@pytest.mark.parametrize("value", ["strict", "BLOCK", "", 1, True, ["off"]])
def test_a_bad_grounding_mode_is_a_400_naming_the_field(app, client, admin, gateway, value):
    refused = client.post(KEYS, headers=admin, json={"user_id": "bob", "grounding": value})
    error = assert_envelope(refused, 400, "invalid_key_fields")
    assert error["param"] == "grounding" and error["message"].startswith("Invalid key fields: grounding: ")
    key = issue_key(app, "carol", grounding="off")
    changed = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json={"grounding": value})
    assert assert_envelope(changed, 400, "invalid_key_fields")["param"] == "grounding"
    assert [(k.user_id, k.grounding) for k in gateway.store.list_keys() if k.user_id != "root"] == [("carol", "off")]


def test_delete_revokes(app, client, admin):
    key = issue_key(app, "bob")
    response = client.delete(f"{KEYS}/{key_id(key)}", headers=admin)
    assert response.status_code == 200 and response.get_json()["active"] is False
    assert_envelope(client.post(CHAT, json=body(), headers={"X-API-Key": key}), 401, "revoked_api_key")


def test_rotate(app, client, admin, gateway):
    key = issue_key(app, "bob")
    response = client.post(f"{KEYS}/{key_id(key)}/rotate", headers=admin)
    assert response.status_code == 201
    rotated = response.get_json()
    assert rotated["replaces"]["key_id"] == key_id(key) and rotated["replaces"]["expires_at"] > time.time()
    assert client.post(CHAT, json=body(), headers={"X-API-Key": rotated["key"]}).status_code == 200


@pytest.mark.parametrize("method, path", [("get", f"{KEYS}/nope"), ("patch", f"{KEYS}/nope"),
                                          ("delete", f"{KEYS}/nope"), ("post", f"{KEYS}/nope/rotate")])
def test_missing_key_is_404(client, admin, method, path):
    response = getattr(client, method)(path, headers=admin, json={"tier": "basic"})
    assert_envelope(response, 404, "key_not_found")


@pytest.mark.parametrize("payload, field", [
    ({"user_id": "bob", "key_hash": "0" * 64}, "key_hash"),
    ({"user_id": "bob", "key_id": "chosen"}, "key_id"),
    ({"user_id": "bob", "tier": "platinum"}, "tier"),
    ({"user_id": "bob", "permissions": ["root"]}, "permissions"),
    ({"user_id": "bob", "requests_per_minute": 0}, "requests_per_minute"),
    ({"user_id": "bob", "concurrent_requests": 0}, "concurrent_requests"),
    ({"user_id": "bob", "concurrent_requests": "many"}, "concurrent_requests"),
    ({"user_id": "bob", "expires_at": 1000.0}, "expires_at"),
    ({"user_id": "bob", "active": False}, "active"),
    ({"tier": "free"}, "user_id"),
])
def test_create_refuses_bad_or_forbidden_fields(client, admin, gateway, payload, field):
    response = client.post(KEYS, headers=admin, json=payload)
    assert_envelope(response, 400, "invalid_key_fields")
    assert field in response.get_json()["error"]["message"]
    assert {k.user_id for k in gateway.store.list_keys()} == {"root"}


@pytest.mark.parametrize("payload, field", [
    ({"key_hash": "0" * 64}, "key_hash"), ({"user_id": "mallory"}, "user_id"),
    ({"last_used_at": 1.0}, "last_used_at"), ({"tier": 3}, "tier"), ({}, "Nothing to change"),
])
def test_patch_refuses_bad_or_forbidden_fields(app, client, admin, gateway, payload, field):
    key = issue_key(app, "bob")
    before = gateway.store.get_key(key_id(key))
    response = client.patch(f"{KEYS}/{key_id(key)}", headers=admin, json=payload)
    assert_envelope(response, 400, "invalid_key_fields")
    assert field in response.get_json()["error"]["message"]
    assert gateway.store.get_key(key_id(key)) == before


def test_non_json_body_is_415(client, admin):
    assert_envelope(client.post(KEYS, headers=admin, data="user_id=bob"), 415, "unsupported_media_type")


@pytest.mark.parametrize("method, path", [
    ("get", KEYS), ("post", KEYS), ("get", f"{KEYS}/any"), ("patch", f"{KEYS}/any"),
    ("delete", f"{KEYS}/any"), ("post", f"{KEYS}/any/rotate"), ("put", KEYS), ("get", "/api/v1/admin/other"),
])
def test_every_method_needs_the_admin_permission(app, client, gateway, method, path):
    """BFLA: a valid key without 'admin' gets 403 whatever the method or route; none gets 401."""
    victim = issue_key(app, "victim")
    path = path.replace("any", key_id(victim))
    user = issue_key(app, "mallory", permissions=("completions", "mcp", "health"))
    response = getattr(client, method)(path, headers={"X-API-Key": user}, json={"user_id": "mallory"})
    assert_envelope(response, 403, "permission_denied")
    assert_envelope(getattr(client, method)(path, json={"user_id": "mallory"}), 401, "invalid_api_key")
    assert {k.user_id for k in gateway.store.list_keys()} == {"victim", "mallory"}
    assert gateway.store.get_key(key_id(victim)).active is True


def test_the_openapi_document_lists_the_grounding_modes(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("KeyCreate", "KeyChange", "KeyView"):
        grounding = schemas[name]["properties"]["grounding"]
        assert grounding["enum"] == ["off", "annotate", "block", None] and "global setting" in grounding["description"]
