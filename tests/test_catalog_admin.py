"""Catalog admin endpoints: upsert and delete products (admin permission); search sees changes at once."""
from __future__ import annotations

import pytest

from gateway.catalog import import_products
from gateway.testing import issue_key
from tests.test_search_quality import DEMO

KETTLE = {"name": "Aurora Glass Electric Kettle", "category": "kitchen", "price": 44.5, "brand": "Aurora",
          "availability": "in-stock", "description": "Borosilicate glass kettle with a blue glow.", "rating": 4.6}


@pytest.fixture
def admin(app):
    import_products(app.extensions["gateway"].store, DEMO)
    return {"X-API-Key": issue_key(app, user="ops", permissions=("admin",))}


def search(client, headers, query):
    answer = client.post("/mcp", headers={**headers, "MCP-Protocol-Version": "2025-11-25"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search_products", "arguments": {"query": query}}}).json
    return [p["productId"] for p in answer["result"]["structuredContent"]["products"]]


def test_upsert_then_delete(client, admin, gateway):
    assert "KIT-9001" not in search(client, admin, "glass kettle")  # warms the search cache
    created = client.put("/api/v1/admin/catalog/products/KIT-9001", headers=admin, json=KETTLE)
    assert created.status_code == 201
    assert created.json == {"product": {"productId": "KIT-9001", **{k: KETTLE[k] for k in (
        "name", "brand", "category", "price", "availability", "rating", "description")}}, "created": True}
    assert search(client, admin, "glass kettle")[0] == "KIT-9001"

    replaced = client.put("/api/v1/admin/catalog/products/KIT-9001", headers=admin,
                          json={**KETTLE, "productId": "KIT-9001", "price": 39.0})
    assert replaced.status_code == 200 and replaced.json["created"] is False
    assert gateway.store.get_product("KIT-9001").price == 39.0

    assert client.delete("/api/v1/admin/catalog/products/KIT-9001", headers=admin).status_code == 204
    assert "KIT-9001" not in search(client, admin, "glass kettle")
    gone = client.delete("/api/v1/admin/catalog/products/KIT-9001", headers=admin)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "product_not_found"


@pytest.mark.parametrize(("body", "fragment"), [
    ({**KETTLE, "price": -1}, "price: Must be greater than or equal to 0."),
    ({**KETTLE, "rating": 7}, "rating: Must be greater than or equal to 0 and less than or equal to 5."),
    ({**KETTLE, "availability": "soon"}, "availability: Must be one of: in-stock, limited, out-of-stock."),
    ({**KETTLE, "cost": 3}, "cost: Unknown field."),
    ({k: v for k, v in KETTLE.items() if k != "name"}, "name: Missing data for required field."),
    ({**KETTLE, "productId": "OTHER"}, "'OTHER' in the body does not match 'KIT-9002'"),
])
def test_bad_products_are_400_and_nothing_is_stored(client, admin, gateway, body, fragment):
    response = client.put("/api/v1/admin/catalog/products/KIT-9002", headers=admin, json=body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_product"
    assert fragment in response.json["error"]["message"]
    assert gateway.store.get_product("KIT-9002") is None


def test_admin_permission_is_required(app, client, admin):
    chat = {"X-API-Key": issue_key(app, permissions=("completions", "mcp"))}
    assert client.put("/api/v1/admin/catalog/products/X-1", headers=chat, json=KETTLE).status_code == 403
    assert client.delete("/api/v1/admin/catalog/products/ELE-0001", headers=chat).status_code == 403
    assert client.delete("/api/v1/admin/catalog/products/ELE-0001").status_code == 401
    assert client.put("/api/v1/admin/catalog/products/X-1", headers=admin, data="x",
                      content_type="text/plain").status_code == 415
