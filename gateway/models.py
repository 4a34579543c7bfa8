"""The model table: public model names, aliases, who serves each, prices, fallbacks and strategy.

Built once per app from :data:`DEFAULT_MODELS` plus the optional ``model_table_path``
file (JSON or TOML). A file entry replaces the default of the same name;
``"replace_defaults": true`` drops the defaults altogether. The file's form::

    {"models": {
        "fast": {"aliases": ["quick"], "strategy": "lowest_cost", "fallbacks": ["claude-3-haiku"],
                 "routes": [{"provider": "openai", "model": "gpt-4o-mini",
                             "input": 0.15, "output": 0.60, "cached_input": 0.075, "weight": 2}]},
        "my-model": {"provider": "groq", "input": 0.05, "output": 0.08}}}

``routes`` lists the providers serving the model (``model`` is the id sent upstream,
default the public name); the short form names one provider. Prices are USD per
million tokens. ``strategy`` orders the routes: ``priority`` (listed order, the
default), ``lowest_latency``, ``lowest_cost`` or ``weighted``; ``fallbacks`` are
other models tried, in order, after every route of this one failed.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from marshmallow import RAISE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as f

from gateway.config import read_mapping_file
from gateway.errors import ConfigError
from gateway.types import Price

STRATEGIES = ("priority", "lowest_latency", "lowest_cost", "weighted")


@dataclass(frozen=True, eq=False)
class Route:
    """One provider serving a public model: the id it is asked for, its price and weight."""

    provider: str
    upstream: str
    price: Price
    weight: float = 1.0


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One public model of the table."""

    name: str
    routes: tuple[Route, ...]
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    strategy: str = "priority"


def _spec(name: str, provider: str, prices: tuple[float, ...], aliases: tuple[str, ...] = (),
          upstream: str | None = None) -> ModelSpec:
    return ModelSpec(name, (Route(provider, upstream or name, Price(*prices)),), aliases)


#: The built-in table (list prices, USD per million tokens: input, output, cached input).
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _spec("echo", "echo", (0.0, 0.0)),
    _spec("gpt-4o-mini", "openai", (0.15, 0.60, 0.075)),
    _spec("gpt-4o", "openai", (2.50, 10.00, 1.25)),
    _spec("gpt-4.1", "openai", (2.00, 8.00, 0.50)),
    _spec("gpt-4.1-mini", "openai", (0.40, 1.60, 0.10)),
    _spec("gpt-4.1-nano", "openai", (0.10, 0.40, 0.025)),
    _spec("o4-mini", "openai", (1.10, 4.40, 0.275)),
    _spec("anthropic.claude-3-haiku-20240307-v1:0", "bedrock", (0.25, 1.25, 0.03), ("claude-3-haiku",)),
    _spec("anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock", (3.00, 15.00, 0.30),
          ("claude-3-5-sonnet",)),
    _spec("us.anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock", (0.80, 4.00, 0.08),
          ("claude-3-5-haiku",)),
    _spec("amazon.nova-micro-v1:0", "bedrock", (0.035, 0.14, 0.00875), ("nova-micro",)),
    _spec("amazon.nova-lite-v1:0", "bedrock", (0.06, 0.24, 0.015), ("nova-lite",)),
    _spec("amazon.nova-pro-v1:0", "bedrock", (0.80, 3.20, 0.20), ("nova-pro",)),
    _spec("amazon.titan-text-express-v1", "bedrock", (0.20, 0.60), ("titan-text-express",)),
    _spec("meta.llama3-1-8b-instruct-v1:0", "bedrock", (0.22, 0.22), ("llama3-1-8b",)),
    _spec("meta.llama3-1-70b-instruct-v1:0", "bedrock", (0.72, 0.72), ("llama3-1-70b",)),
    _spec("mistral.mistral-large-2402-v1:0", "bedrock", (4.00, 12.00), ("mistral-large",)),
    _spec("cohere.command-r-v1:0", "bedrock", (0.50, 1.50), ("command-r",)),
    # Embedding models (``POST /v1/embeddings``): input tokens only.
    _spec("text-embedding-3-small", "openai", (0.02, 0.0)),
    _spec("text-embedding-3-large", "openai", (0.13, 0.0)),
    _spec("text-embedding-ada-002", "openai", (0.10, 0.0)),
    _spec("amazon.titan-embed-text-v2:0", "bedrock", (0.02, 0.0), ("titan-embed-text-v2",)),
    _spec("cohere.embed-english-v3", "bedrock", (0.10, 0.0), ("cohere-embed-english-v3",)),
    _spec("cohere.embed-multilingual-v3", "bedrock", (0.10, 0.0), ("cohere-embed-multilingual-v3",)),
)


class ModelTable:
    """Public models by name and alias; built once per app, read on every request."""

    def __init__(self, specs: tuple[ModelSpec, ...] | list[ModelSpec]):
        self._specs = {spec.name: spec for spec in specs}
        self._names: dict[str, str] = {name: name for name in self._specs}
        for spec in self._specs.values():
            for alias in spec.aliases:
                if alias in self._names and self._names[alias] != spec.name:
                    raise ConfigError(f"model table: {alias!r} names two models")
                self._names[alias] = spec.name
        self._prices = {(route.provider, route.upstream): route.price
                        for spec in self._specs.values() for route in spec.routes}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def resolve(self, name: str) -> ModelSpec | None:
        """The model called ``name`` (its name or an alias), or None."""
        canonical = self._names.get(name)
        return self._specs[canonical] if canonical else None

    def price(self, provider: str, upstream: str) -> Price | None:
        """The price of ``upstream`` at ``provider``, or None when the table does not list it."""
        return self._prices.get((provider, upstream))

    def served_by(self, provider: str) -> dict[str, Price]:
        """The upstream model ids the table routes to ``provider``, with prices."""
        return {upstream: price for (name, upstream), price in self._prices.items() if name == provider}


class _RouteSchema(Schema):
    class Meta:
        unknown = RAISE

    provider = f.String(required=True, validate=validate.Length(min=1))
    model = f.String(validate=validate.Length(min=1))
    input = f.Float(load_default=0.0, validate=validate.Range(min=0))
    output = f.Float(load_default=0.0, validate=validate.Range(min=0))
    cached_input = f.Float(load_default=None, allow_none=True, validate=validate.Range(min=0))
    weight = f.Float(load_default=1.0, validate=validate.Range(min=0, min_inclusive=False))


class _ModelSchema(_RouteSchema):
    provider = f.String(validate=validate.Length(min=1))
    routes = f.List(f.Nested(_RouteSchema), validate=validate.Length(min=1))
    aliases = f.List(f.String(validate=validate.Length(min=1)), load_default=list)
    fallbacks = f.List(f.String(validate=validate.Length(min=1)), load_default=list)
    strategy = f.String(load_default="priority", validate=validate.OneOf(STRATEGIES))

    @validates_schema
    def _one_form(self, data, **kwargs):
        if ("routes" in data) == ("provider" in data):
            raise ValidationError("give either 'provider' (one route) or 'routes'")


class _TableSchema(Schema):
    class Meta:
        unknown = RAISE

    replace_defaults = f.Boolean(load_default=False)
    models = f.Dict(keys=f.String(validate=validate.Length(min=1)), values=f.Nested(_ModelSchema),
                    load_default=dict)


def _route(name: str, data: dict) -> Route:
    return Route(data["provider"], data.get("model") or name,
                 Price(data["input"], data["output"], data["cached_input"]), data["weight"])


def parse_model_table(raw: dict, source: str) -> list[ModelSpec]:
    """The models described by ``raw`` (the file's content); :class:`ConfigError` naming what is wrong."""
    try:
        data = _TableSchema().load(raw)
    except ValidationError as exc:
        raise ConfigError(f"model table {source}: {json.dumps(exc.messages)}") from None
    specs = [] if data["replace_defaults"] else list(DEFAULT_MODELS)
    for name, entry in data["models"].items():
        routes = tuple(_route(name, r) for r in entry["routes"]) if "routes" in entry \
            else (_route(name, entry),)
        specs = [s for s in specs if s.name != name]
        specs.append(ModelSpec(name, routes, tuple(entry["aliases"]), tuple(entry["fallbacks"]),
                               entry["strategy"]))
    return specs


def load_model_table(path: str = "") -> ModelTable:
    """The default table, extended by the file at ``path`` (JSON, or TOML by suffix) when given."""
    if not path:
        return ModelTable(DEFAULT_MODELS)
    table = ModelTable(parse_model_table(read_mapping_file(path, "model table"), path))
    for spec in table:
        unknown = [name for name in spec.fallbacks if table.resolve(name) is None]
        if unknown:
            raise ConfigError(f"model table {path}: {spec.name!r} falls back to unknown model(s) "
                              f"{', '.join(unknown)}")
    return table
