"""The OpenAPI description of the catalog plugin's routes: ``POST /mcp`` and the catalog admin API.

Loaded by ``plugins.catalog``'s ``gateway_openapi`` when the document is first built.
"""
from __future__ import annotations

from marshmallow import Schema
from marshmallow import fields as f

from gateway.catalog import ProductSchema
from gateway.openapi import WRITE_ERRORS, json_content, ok, operation


class ProductAnswer(Schema):
    """A stored product, and whether it was new."""

    product = f.Dict(required=True)
    created = f.Boolean(required=True)


class JsonRpcMessage(Schema):
    """One JSON-RPC 2.0 message (MCP, Streamable HTTP)."""

    jsonrpc = f.String(required=True, metadata={"enum": ["2.0"]})
    id = f.Raw(metadata={"type": ["string", "number"]})
    method = f.String(required=True)
    params = f.Dict()


class JsonRpcAnswer(Schema):
    """A JSON-RPC answer: a result, or an error (a gateway refusal carries the envelope in ``data``)."""

    jsonrpc = f.String(required=True)
    id = f.Raw(allow_none=True)
    result = f.Raw()
    error = f.Dict()


def document(spec) -> None:
    """Add ``/mcp``, the catalog admin routes and their schemas to the OpenAPI ``spec``."""
    for name, schema in (("Product", ProductSchema(exclude=("product_id",))), ("ProductAnswer", ProductAnswer),
                         ("JsonRpcMessage", JsonRpcMessage), ("JsonRpcAnswer", JsonRpcAnswer)):
        spec.components.schema(name, schema=schema)
    spec.path(path="/api/v1/admin/catalog/products/{product_id}", operations={
        "put": operation("Create or replace a product (admin); the id comes from the URL (a productId in the "
                         "body must equal it).",
                         {**ok("ProductAnswer", "Replaced."), **ok("ProductAnswer", "Created.", 201)},
                         WRITE_ERRORS, body="Product", path=("product_id",)),
        "delete": operation("Delete a product (admin).", ok(None, "Deleted.", 204), (401, 403, 404, 429, 503),
                            path=("product_id",))})
    refused = {str(status): {"description": "A JSON-RPC error or a gateway refusal, as JSON-RPC.",
                             "content": json_content("JsonRpcAnswer")} for status in (400, 401, 403, 404, 415, 429)}
    spec.path(path="/mcp", operations={"post": operation(
        "The Model Context Protocol server (Streamable HTTP, JSON answers).",
        {**ok("JsonRpcAnswer", "A JSON-RPC answer (a result, or a JSON-RPC error)."),
         "202": {"description": "A notification, acknowledged."}, **refused},
        (413,), body="JsonRpcMessage")})
