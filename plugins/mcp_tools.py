"""The catalog as MCP tools: ``search_products``, ``get_product``, ``list_categories``.

Each tool has a JSON ``inputSchema`` and ``outputSchema`` (what clients see) and a
marshmallow schema that validates the arguments (what the server enforces). A tool
answers ``structuredContent`` plus the same JSON as text; a bad argument or a
failure is a tool result with ``isError: true`` (so a model can read it and retry),
never a protocol error.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from gateway.store.base import AVAILABILITY
from plugins.catalog_search import CatalogSearch, public_product

logger = logging.getLogger(__name__)

PRODUCT_SCHEMA = {
    "type": "object",
    "properties": {
        "productId": {"type": "string"}, "name": {"type": "string"}, "brand": {"type": "string"},
        "category": {"type": "string"}, "price": {"type": "number", "minimum": 0},
        "availability": {"type": "string", "enum": list(AVAILABILITY)},
        "rating": {"type": "number", "minimum": 0, "maximum": 5}, "description": {"type": "string"},
    },
    "required": ["productId", "name", "category", "price", "availability"],
}
MAX_LIMIT = 50


class SearchArguments(Schema):
    """``search_products`` arguments."""

    class Meta:
        unknown = RAISE

    query = fields.String(validate=validate.Length(max=500))
    category = fields.String(validate=validate.Length(min=1, max=100))
    brand = fields.String(validate=validate.Length(min=1, max=100))
    min_price = fields.Float(validate=validate.Range(min=0))
    max_price = fields.Float(validate=validate.Range(min=0))
    availability = fields.String(validate=validate.OneOf(AVAILABILITY))
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_LIMIT))

    @validates_schema
    def _bounds(self, data, **_kwargs):
        if data.get("min_price") is not None and data.get("max_price") is not None \
                and data["min_price"] > data["max_price"]:
            raise ValidationError("min_price must not exceed max_price.", "min_price")


class GetArguments(Schema):
    """``get_product`` arguments."""

    class Meta:
        unknown = RAISE

    productId = fields.String(required=True, validate=validate.Length(min=1, max=200))  # noqa: N815 (wire name)


class NoArguments(Schema):
    """A tool without arguments."""

    class Meta:
        unknown = RAISE


class ToolFailed(Exception):
    """A tool could not answer; the message is shown to the client as the tool's error text."""


@dataclass(frozen=True)
class Tool:
    """One MCP tool: its listing and its implementation."""

    name: str
    title: str
    description: str
    input_schema: dict
    output_schema: dict
    arguments: Schema
    run: Callable[[CatalogSearch, dict], dict]

    def listing(self, with_output_schema: bool) -> dict:
        """The tool as ``tools/list`` shows it (2025-03-26 had no ``outputSchema``)."""
        listed = {"name": self.name, "title": self.title, "description": self.description,
                  "inputSchema": self.input_schema}
        if with_output_schema:
            listed["outputSchema"] = self.output_schema
        return listed


def _search(catalog: CatalogSearch, args: dict) -> dict:
    query = catalog.understand(args.get("query", ""))
    for name in ("category", "brand", "min_price", "max_price", "availability"):
        if args.get(name) is not None:
            setattr(query, name, args[name])
    products = catalog.search(query, limit=args["limit"])
    return {"products": [public_product(p) for p in products], "count": len(products)}


def _get(catalog: CatalogSearch, args: dict) -> dict:
    product = catalog.store.get_product(args["productId"])
    if product is None:
        raise ToolFailed(f"No product with id {args['productId']!r}; search_products finds product ids.")
    return {"product": public_product(product)}


def _categories(catalog: CatalogSearch, _args: dict) -> dict:
    counts, _brands = catalog.vocabulary()
    return {"categories": [{"name": name, "productCount": count} for name, count in counts.items()]}


TOOLS = {tool.name: tool for tool in (
    Tool(
        name="search_products", title="Search products",
        description=("Search the product catalog. 'query' understands plain shopping requests "
                     "(\"wireless earbuds under $100, in stock, rated 4+\"); the other arguments "
                     "are exact filters. Results are ranked by relevance and rating."),
        input_schema={"type": "object", "properties": {
            "query": {"type": "string", "description": "What the shopper asks for, in plain words."},
            "category": {"type": "string", "description": "Exact category (see list_categories)."},
            "brand": {"type": "string"},
            "min_price": {"type": "number", "minimum": 0},
            "max_price": {"type": "number", "minimum": 0},
            "availability": {"type": "string", "enum": list(AVAILABILITY)},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10},
        }, "additionalProperties": False},
        output_schema={"type": "object", "properties": {
            "products": {"type": "array", "items": PRODUCT_SCHEMA}, "count": {"type": "integer"}},
            "required": ["products", "count"]},
        arguments=SearchArguments(), run=_search),
    Tool(
        name="get_product", title="Get a product",
        description="One product by its id, with price, stock and rating.",
        input_schema={"type": "object", "properties": {"productId": {"type": "string"}},
                      "required": ["productId"], "additionalProperties": False},
        output_schema={"type": "object", "properties": {"product": PRODUCT_SCHEMA}, "required": ["product"]},
        arguments=GetArguments(), run=_get),
    Tool(
        name="list_categories", title="List categories",
        description="The catalog's categories, each with its number of products.",
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        output_schema={"type": "object", "properties": {"categories": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"}, "productCount": {"type": "integer"}},
            "required": ["name", "productCount"]}}}, "required": ["categories"]},
        arguments=NoArguments(), run=_categories),
)}


def _describe(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{name}: {' '.join(map(str, problems)) if isinstance(problems, list) else problems}"
                         for name, problems in messages.items())
    return str(messages)


def call_tool(tool: Tool, catalog: CatalogSearch, arguments: Any, with_structured: bool) -> dict:
    """Run ``tool`` and answer a ``CallToolResult`` (``isError`` for bad arguments or a failure)."""
    try:
        args = tool.arguments.load(arguments if arguments is not None else {})
        structured = tool.run(catalog, args)
    except ValidationError as exc:
        return _error(f"Invalid arguments for {tool.name}: {_describe(exc.messages)}")
    except ToolFailed as exc:
        return _error(str(exc))
    except Exception as exc:  # the store failed: the client sees a tool error, the log the cause
        logger.warning("mcp tool failed", extra={"tool": tool.name, "error": type(exc).__name__})
        return _error(f"{tool.name} failed: the product catalog is unavailable right now; try again later.")
    result = {"content": [{"type": "text", "text": json.dumps(structured, ensure_ascii=False)}],
              "isError": False}
    if with_structured:
        result["structuredContent"] = structured
    return result


def _error(message: str) -> dict:
    return {"content": [{"type": "text", "text": message}], "isError": True}
