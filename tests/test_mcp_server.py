"""The MCP server at /mcp, over real HTTP.

The official ``mcp`` SDK client drives it in its automatic mode (``server/discover``,
protocol 2026-07-28) and its legacy mode (``initialize`` handshake); raw HTTP checks
the envelope rules, and every result is validated with the SDK's own wire models
for the protocol version it was answered at.
"""
from __future__ import annotations

import asyncio
import json

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.methods import validate_server_result

from gateway.catalog import import_products
from gateway.testing import issue_key, make_app, serve
from plugins.mcp_server import GATEWAY_REFUSED
from tests.test_search_quality import DEMO

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def catalog_app(tmp_path_factory):
    """An app on the demo catalog (module scope: the catalog is only read, except where noted)."""
    app = make_app(tmp_path_factory.mktemp("mcp"), {"cors_origins": ["https://shop.example"]})
    import_products(app.extensions["gateway"].store, DEMO)
    return app


@pytest.fixture(scope="module")
def url(catalog_app):
    with serve(catalog_app) as base:
        yield f"{base}/mcp"


@pytest.fixture(scope="module")
def mcp_key(catalog_app):
    return issue_key(catalog_app, user="mcp-user", permissions=("mcp",), requests_per_minute=1000)


def run_client(url: str, key: str | None, mode: str, script):
    """Run ``script(client)`` inside an SDK client session over real HTTP; its return value."""
    async def main():
        headers = {"X-API-Key": key} if key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode, read_timeout_seconds=30) as client:
                return await script(client)
    return asyncio.run(main())


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN), ("legacy", "2025-11-25")])
def test_sdk_client_lists_and_calls_every_tool(url, mcp_key, mode, version):
    async def script(client):
        tools = await client.list_tools()
        search = await client.call_tool("search_products", {"query": "noise cancelling headphones under $300",
                                                            "limit": 5})
        exact = await client.call_tool("search_products", {"category": "toys", "max_price": 20})
        product = await client.call_tool("get_product", {"productId": "KIT-0013"})
        missing = await client.call_tool("get_product", {"productId": "NOPE-1"})
        categories = await client.call_tool("list_categories", {})
        return client.protocol_version, tools, search, exact, product, missing, categories

    negotiated, tools, search, exact, product, missing, categories = run_client(url, mcp_key, mode, script)
    assert negotiated == version
    assert [t.name for t in tools.tools] == ["search_products", "get_product", "list_categories"]
    for tool in tools.tools:
        assert tool.input_schema["type"] == "object" and tool.output_schema["type"] == "object"
    assert not search.is_error
    found = [p["productId"] for p in search.structured_content["products"]]
    assert found[:2] == ["AUD-0015", "AUD-0008"]
    assert json.loads(search.content[0].text) == search.structured_content  # the text copy
    assert all(p["price"] <= 300 for p in search.structured_content["products"])
    assert {p["productId"] for p in exact.structured_content["products"]} == {"TOY-0007", "TOY-0008", "TOY-0010"}
    assert product.structured_content["product"] == {
        "productId": "KIT-0013", "name": "Brewcraft Dual Basket Air Fryer", "brand": "Brewcraft",
        "category": "kitchen", "price": 175.0, "availability": "limited", "rating": 4.3,
        "description": product.structured_content["product"]["description"]}
    assert missing.is_error and "NOPE-1" in missing.content[0].text
    assert {c["name"]: c["productCount"] for c in categories.structured_content["categories"]}["books"] == 21


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_sdk_client_sees_unknown_tool_and_bad_argument(url, mcp_key, mode):
    async def script(client):
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("delete_everything", {})
        bad = await client.call_tool("search_products", {"query": "mouse", "limit": 500, "colour": "red"})
        return unknown.value, bad

    unknown, bad = run_client(url, mcp_key, mode, script)
    assert unknown.error.code == -32602 and "delete_everything" in unknown.error.message
    assert bad.is_error
    assert "limit" in bad.content[0].text and "colour" in bad.content[0].text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(("key", "message"), [
    (None, "Missing API key"),
    ("gw_test_0000000000000000_" + "x" * 43, "Invalid API key."),
])
def test_sdk_client_shows_the_gateway_refusal(url, mode, key, message):
    async def script(client):
        await client.list_tools()

    # The SDK raises from inside its task group, so the error arrives wrapped in an ExceptionGroup.
    with pytest.RaisesGroup(MCPError, flatten_subgroups=True) as refused:
        run_client(url, key, mode, script)
    (failure,) = leaves(refused.value)
    error = failure.error
    assert error.code == GATEWAY_REFUSED and error.message.startswith(message)
    assert error.data["type"] == "authentication_error"


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


# Raw HTTP: the envelope rules

def post(url, key, body, headers=None):
    return httpx.post(url, json=body, headers={"X-API-Key": key, **(headers or {})}, timeout=30)


def modern(method, params=None, *, name=None, version=MODERN):
    body = {"jsonrpc": "2.0", "id": 7, "method": method,
            "params": {**(params or {}), "_meta": {**META, "io.modelcontextprotocol/protocolVersion": version}}}
    headers = {"MCP-Protocol-Version": version, "Mcp-Method": method}
    if name:
        headers["Mcp-Name"] = name
    return body, headers


def test_discover_and_results_match_the_sdk_models_at_2026_07_28(url, mcp_key):
    for method, params, name in (("server/discover", {}, None), ("tools/list", {}, None),
                                 ("tools/call", {"name": "list_categories", "arguments": {}}, "list_categories")):
        body, headers = modern(method, params, name=name)
        response = post(url, mcp_key, body, headers)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
        answer = response.json()
        assert answer["id"] == 7 and answer["jsonrpc"] == "2.0"
        validate_server_result(method, MODERN, answer["result"])
        assert answer["result"]["resultType"] == "complete"
    assert MODERN in post(url, mcp_key, *modern("server/discover")).json()["result"]["supportedVersions"]


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26"])
def test_handshake_versions(url, mcp_key, version):
    init = post(url, mcp_key, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.json()["result"]["protocolVersion"] == version
    validate_server_result("initialize", version, init.json()["result"])
    initialized = post(url, mcp_key, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                       {"MCP-Protocol-Version": version})
    assert initialized.status_code == 202 and initialized.content == b""
    listed = post(url, mcp_key, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                  {"MCP-Protocol-Version": version}).json()["result"]
    validate_server_result("tools/list", version, listed)
    called = post(url, mcp_key, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "get_product", "arguments": {"productId": "BOK-0003"}}}, {"MCP-Protocol-Version": version})
    result = called.json()["result"]
    validate_server_result("tools/call", version, result)
    assert "resultType" not in result
    has_structure = version != "2025-03-26"  # outputSchema and structuredContent came with 2025-06-18
    assert ("structuredContent" in result) is has_structure
    assert all(("outputSchema" in tool) is has_structure for tool in listed["tools"])


def test_initialize_with_an_unknown_version_is_offered_the_latest(url, mcp_key):
    answer = post(url, mcp_key, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert answer.json()["result"]["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize(("change", "code", "status"), [
    (lambda b, h: h.pop("MCP-Protocol-Version"), -32020, 400),
    (lambda b, h: h.update({"MCP-Protocol-Version": "2025-11-25"}), -32020, 400),
    (lambda b, h: h.update({"Mcp-Method": "tools/list"}), -32020, 400),
    (lambda b, h: h.update({"Mcp-Name": "get_product"}), -32020, 400),
    (lambda b, h: b["params"].pop("_meta"), -32602, 400),
    (lambda b, h: b["params"]["_meta"].pop("io.modelcontextprotocol/clientCapabilities"), -32602, 400),
])
def test_modern_headers_are_checked_against_the_body(url, mcp_key, change, code, status):
    body, headers = modern("tools/call", {"name": "list_categories", "arguments": {}}, name="list_categories")
    change(body, headers)
    response = post(url, mcp_key, body, headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["id"] == 7


def test_mcp_name_may_be_base64_encoded(url, mcp_key):
    """The SDK sends names that are not printable ASCII as ``=?base64?...?=``; they are compared decoded."""
    import base64

    body, headers = modern("tools/call", {"name": "café", "arguments": {}})
    headers["Mcp-Name"] = "=?base64?" + base64.b64encode("café".encode()).decode() + "?="
    response = post(url, mcp_key, body, headers)
    assert response.json()["error"]["code"] == -32602  # past the header check: an unknown tool
    headers["Mcp-Name"] = "=?base64?" + base64.b64encode(b"cafe").decode() + "?="
    assert post(url, mcp_key, body, headers).json()["error"]["code"] == -32020


def test_unsupported_modern_version_names_the_supported_ones(url, mcp_key):
    response = post(url, mcp_key, *modern("server/discover", version="2027-01-01"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022
    assert error["data"] == {"supported": [MODERN], "requested": "2027-01-01"}


def test_unknown_method(url, mcp_key):
    response = post(url, mcp_key, *modern("resources/list"))
    assert response.status_code == 404 and response.json()["error"]["code"] == -32601
    legacy = post(url, mcp_key, {"jsonrpc": "2.0", "id": 4, "method": "prompts/list"},
                  {"MCP-Protocol-Version": "2025-06-18"})
    assert legacy.status_code == 200 and legacy.json()["error"]["code"] == -32601
    removed = post(url, mcp_key, *modern("initialize"))  # no handshake at 2026-07-28
    assert removed.json()["error"]["code"] == -32601


def test_malformed_messages(url, mcp_key):
    headers = {"X-API-Key": mcp_key, "Content-Type": "application/json"}
    parse = httpx.post(url, content=b"{not json", headers=headers)
    assert parse.status_code == 400 and parse.json()["error"]["code"] == -32700
    batch = post(url, mcp_key, [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}])
    assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
    not_rpc = post(url, mcp_key, {"id": 1, "method": "tools/list"})
    assert not_rpc.status_code == 400 and not_rpc.json()["error"]["code"] == -32600
    form = httpx.post(url, content=b"x=1", headers={**headers, "Content-Type": "text/plain"})
    assert form.status_code == 415 and form.json()["error"]["code"] == -32600
    old_header = post(url, mcp_key, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      {"MCP-Protocol-Version": "2024-01-01"})
    assert old_header.status_code == 400 and "2024-01-01" in old_header.json()["error"]["message"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_are_not_allowed(url, mcp_key, method):
    response = httpx.request(method, url, headers={"X-API-Key": mcp_key})
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed == {"POST", "OPTIONS"}  # OPTIONS: Flask's automatic preflight answer
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_foreign_origin_is_refused(url, mcp_key):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    foreign = post(url, mcp_key, body, {"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == GATEWAY_REFUSED
    assert foreign.json()["error"]["data"]["code"] == "origin_not_allowed"
    assert post(url, mcp_key, body, {"Origin": "https://shop.example"}).status_code == 200


def test_key_without_mcp_permission_is_refused(catalog_app, url):
    key = issue_key(catalog_app, user="chat-only", permissions=("completions",))
    response = post(url, key, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 403
    assert response.json()["error"]["data"] == {
        "message": "This API key lacks the 'mcp' permission.", "type": "permission_error",
        "param": None, "code": "permission_denied"}


def test_every_message_counts_against_the_rate_limit_and_tool_calls_are_logged(catalog_app, url):
    key = issue_key(catalog_app, user="limited", permissions=("mcp",), requests_per_minute=3)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search_products", "arguments": {"query": "yoga mat"}}}
    for _ in range(2):
        assert post(url, key, call).json()["result"]["isError"] is False
    listing = post(url, key, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert listing.status_code == 200  # the third message of the minute
    for message in (call, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}):
        limited = post(url, key, message)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["data"]["code"] == "rate_limit_exceeded"
        assert limited.json()["id"] == message["id"]
    records = catalog_app.extensions["gateway"].store.records_for_user("limited")
    assert sorted((r.model, r.provider, r.status, r.count) for r in records) == [
        ("", "", 429, 2), ("mcp:search_products", "mcp", 200, 1), ("mcp:search_products", "mcp", 200, 1)]
    assert all(r.latency_ms > 0 for r in records)  # the two refusals: one row (gateway/refusals.py)


def test_a_failing_catalog_is_a_tool_error(tmp_path):
    app = make_app(tmp_path)
    gateway = app.extensions["gateway"]
    gateway.store.init()
    gateway.store._connection().execute("DROP TABLE products")  # the catalog is really gone
    key = issue_key(app, user="u", permissions=("mcp",))
    with serve(app) as base:
        answer = post(f"{base}/mcp", key, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "list_categories", "arguments": {}}}).json()
    assert answer["result"]["isError"] is True
    assert "unavailable" in answer["result"]["content"][0]["text"]
    assert gateway.store.records_for_user("u")[0].error_code == "tool_error"


def test_the_declared_tool_models_are_the_servers_tools():
    """plugins.catalog declares its records' models without importing the tools at start-up."""
    from plugins.catalog import DECLARATION
    from plugins.mcp_tools import TOOLS

    assert DECLARATION.recorded_models == {"mcp": tuple(f"mcp:{name}" for name in TOOLS)}
