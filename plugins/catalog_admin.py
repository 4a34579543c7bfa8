"""Catalog admin endpoints (``admin`` permission): upsert and delete one product.

``PUT /api/v1/admin/catalog/products/<id>`` validates the body exactly as a catalog
file row is validated, stores it (201 when new, 200 when replaced) and drops this
process's cached catalog reads, so search and context injection see the change at once
(other worker processes see it within ``catalog_cache_ttl`` seconds).
``DELETE`` answers 204, or 404 when there was no such product.

``plugins.catalog`` routes these views (loaded on their first request).
"""
from __future__ import annotations

from flask import Response, jsonify, request

from gateway import pipeline
from gateway.app import current_gateway
from gateway.catalog import CatalogError, validate_rows
from gateway.errors import InvalidRequest, NotFound
from gateway.http import read_json_body
from plugins.catalog_search import catalog_search, public_product


def upsert_product(product_id: str):
    """Create or replace a product; the body is one catalog row (``productId`` may be left out)."""
    gateway = current_gateway()
    pipeline.authenticate(gateway, request, "admin")
    body = read_json_body()
    if body.setdefault("productId", product_id) != product_id:
        raise InvalidRequest(f"productId {body['productId']!r} in the body does not match {product_id!r} "
                             "in the URL.", code="invalid_product")
    try:
        (product,) = validate_rows([body], "the product")
    except CatalogError as exc:
        raise InvalidRequest(exc.message.replace(", nothing was imported", "").replace("row 1: ", ""),
                             code="invalid_product") from None
    existed = gateway.store.get_product(product_id) is not None
    gateway.store.put_products([product])
    catalog_search(gateway).invalidate()
    response = jsonify({"product": public_product(product), "created": not existed})
    response.status_code = 200 if existed else 201
    return response


def delete_product(product_id: str):
    """Delete a product: 204, or 404 when there is none with this id."""
    gateway = current_gateway()
    pipeline.authenticate(gateway, request, "admin")
    if not gateway.store.delete_product(product_id):
        raise NotFound(f"No product with id {product_id!r}.", code="product_not_found")
    catalog_search(gateway).invalidate()
    return Response(status=204)
