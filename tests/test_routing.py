"""The model table and the default provider selection: explicit provider, alias, fallbacks, strategies."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from gateway.errors import ConfigError
from gateway.models import ModelTable, load_model_table, parse_model_table
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import Caller, ChatRequest, Price
from plugins.routing import order_routes

CALLER = Caller(user_id="alice", key_id="k")


def route(prices=(1.0, 1.0), weight=1.0, provider="fast"):
    return {"provider": provider, "input": prices[0], "output": prices[1], "weight": weight}


@pytest.fixture
def shared_app(tmp_path):
    """Two fake providers both serving ``shared`` (and ``solo`` on one only), per a model table."""
    def build(strategy="priority", **entry):
        table = {"models": {
            "shared": {"strategy": strategy, "aliases": ["common"],
                       "routes": [{"provider": "slow", "model": "shared-v1", "input": 5, "output": 5},
                                  {"provider": "fast", "model": "shared-v2", "input": 1, "output": 1}],
                       **entry},
            "solo": {"provider": "fast", "input": 0.5, "output": 0.5}}}
        path = tmp_path / "models.json"
        path.write_text(json.dumps(table))
        slow = FakeProvider(name="slow", served={})
        fast = FakeProvider(name="fast", served={})
        return make_app(tmp_path, {"model_table_path": str(path)}, plugins=(ProviderPlugin(slow, fast),))
    return build


def candidates(app, model, provider=None):
    gateway = app.extensions["gateway"]
    chosen = gateway.hook.gateway_select_provider(
        completion=ChatRequest(model=model, messages=[], provider=provider), caller=CALLER,
        providers=gateway.providers, gateway=gateway)
    return [(p.name, m) for p, m in chosen]


def test_priority_is_the_listed_order_and_aliases_resolve(shared_app):
    app = shared_app()
    assert candidates(app, "shared") == [("slow", "shared-v1"), ("fast", "shared-v2")]
    assert candidates(app, "common") == candidates(app, "shared")


def test_lowest_cost_orders_by_price(shared_app):
    assert candidates(shared_app("lowest_cost"), "shared")[0] == ("fast", "shared-v2")


def test_lowest_latency_follows_the_moving_average(shared_app):
    app = shared_app("lowest_latency")
    latency = app.extensions["gateway"].resilience.latency
    latency.observe(("slow", "shared-v1"), 900.0)
    latency.observe(("fast", "shared-v2"), 50.0)
    assert candidates(app, "shared")[0] == ("fast", "shared-v2")
    for _ in range(10):
        latency.observe(("fast", "shared-v2"), 3000.0)
    assert candidates(app, "shared")[0] == ("slow", "shared-v1")


def test_weighted_follows_the_weights():
    [spec] = parse_model_table({"replace_defaults": True, "models": {"m": {"strategy": "weighted", "routes": [
        route(weight=3, provider="a"), route(weight=1, provider="b")]}}}, "test")
    rng = random.Random(7)
    firsts = Counter(order_routes(spec, None, rng)[0].provider for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80  # 3:1 -> 75 % first


def test_explicit_provider_prefix_and_native_provider_field(shared_app):
    app = shared_app()
    assert candidates(app, "fast/shared") == [("fast", "shared-v2")]
    assert candidates(app, "shared", provider="slow") == [("slow", "shared-v1")]
    assert candidates(app, "fast/shared-v2") == [("fast", "shared-v2")]  # the upstream id works too
    assert candidates(app, "slow/solo") == []


def test_fallbacks_follow_the_models_own_routes(shared_app):
    app = shared_app(fallbacks=["solo"])
    assert candidates(app, "shared") == [("slow", "shared-v1"), ("fast", "shared-v2"), ("fast", "solo")]


def test_explicit_provider_over_http_and_unknown_model_404(tmp_path):
    app = make_app(tmp_path)
    key = issue_key(app)
    client = app.test_client()

    def ask(model):
        return client.post("/v1/chat/completions", headers={"X-API-Key": key},
                           json={"model": model, "messages": [{"role": "user", "content": "x"}]})

    assert ask("echo/echo").headers["X-Gateway-Provider"] == "echo"
    assert ask("openai/claude-3-haiku").status_code == 404
    assert ask("no-such-model").get_json()["error"]["code"] == "model_not_found"


def test_the_cost_comes_from_the_table(shared_app):
    app = shared_app("lowest_cost")
    key = issue_key(app)
    response = app.test_client().post("/api/v1/completions", headers={"X-API-Key": key},
                                      json={"model": "shared", "messages": [{"role": "user", "content": "x"}]})
    assert response.get_json()["cost"] == pytest.approx((10 * 1 + 5 * 1) / 1_000_000)


def test_a_table_file_adds_and_replaces_defaults(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[models.gpt-4o-mini]\nprovider = "openai"\ninput = 9.0\noutput = 9.0\n'
                    'aliases = ["mini"]\n')
    table = load_model_table(str(path))
    assert table.resolve("mini").routes[0].price == Price(9.0, 9.0)
    assert table.resolve("gpt-4o") is not None  # defaults kept
    assert table.price("bedrock", "anthropic.claude-3-haiku-20240307-v1:0") == Price(0.25, 1.25, 0.03)


@pytest.mark.parametrize("content, message", [
    ('{"models": {"x": {"input": 1}}}', "either 'provider'"),
    ('{"models": {"x": {"provider": "a", "strategy": "random"}}}', "strategy"),
    ('{"models": {"x": {"provider": "a", "fallbacks": ["nope"]}}}', "unknown model"),
    ('{"modelz": {}}', "modelz"),
    ("{not json", "not valid json"),
])
def test_a_bad_table_file_stops_start_up_saying_why(tmp_path, content, message):
    path = tmp_path / "models.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        make_app(tmp_path, {"model_table_path": str(path)})


def test_an_alias_naming_two_models_is_refused():
    with pytest.raises(ConfigError, match="names two models"):
        ModelTable(parse_model_table({"replace_defaults": True, "models": {
            "a": {"provider": "p", "aliases": ["x"]}, "b": {"provider": "p", "aliases": ["x"]}}}, "t"))
