"""The plugin manager and the hook contracts."""
from __future__ import annotations

import inspect
import logging
import re
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from marshmallow import fields

from gateway import hookimpl, hookspecs
from gateway.config import load_settings
from gateway.errors import ConfigError, InvalidRequest
from gateway.plugins import BUILTIN_PLUGINS, build_plugin_manager, installed_entry_points
from gateway.testing import FakeProvider, ProviderPlugin, issue_key, make_app
from gateway.types import Declaration

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
CHAT = "/v1/chat/completions"


def hook_specs():
    return [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("gateway_")]


def ask(client, key, model="echo", content="hello"):
    return client.post(CHAT, headers={"X-API-Key": key},
                       json={"model": model, "messages": [{"role": "user", "content": content}]})


def test_every_hook_has_a_docstring_and_a_docs_section():
    docs = DOCS.read_text()
    sections = set(re.findall(r"^### (\w+)$", docs, re.MULTILINE))
    specs = hook_specs()
    assert specs
    for name, fn in specs:
        assert fn.__doc__ and ":return:" in fn.__doc__, f"{name} lacks a docstring with :return:"
        assert name in sections, f"docs/plugins.md has no section for {name}"
    assert sections == {name for name, _ in specs}, "docs/plugins.md documents a hook that does not exist"


def test_builtins_are_registered_by_module_name():
    pm = build_plugin_manager(load_settings({}, environ={}))
    names = {name for name, _ in pm.list_name_plugin()}
    assert {m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS} <= names
    assert pm.sources["apikey"] == "built-in"


def test_disabled_plugins_are_not_loaded(tmp_path):
    app = make_app(tmp_path, {"disable_plugins": ["echo_provider"]})
    assert "echo" not in app.extensions["gateway"].providers
    response = ask(app.test_client(), issue_key(app))
    assert response.status_code == 404


def test_a_plugin_registered_at_test_time_answers_and_sees_every_hook(tmp_path):
    seen = []

    class Recorder:
        @hookimpl
        def gateway_enrich_request(self, completion, caller):
            seen.append(("enrich", caller.user_id))
            completion.messages.insert(0, {"role": "system", "content": "be brief"})

        @hookimpl
        def gateway_after_response(self, record):
            seen.append(("after", record.status, record.provider))

    provider = FakeProvider(outcomes=["from the fake"])
    app = make_app(tmp_path, plugins=(Recorder(), ProviderPlugin(provider)))
    response = ask(app.test_client(), issue_key(app), model="fake-model")
    assert response.get_json()["choices"][0]["message"]["content"] == "from the fake"
    assert seen == [("enrich", "alice"), ("after", 200, "fake")]
    assert provider.calls[0].messages[0] == {"role": "system", "content": "be brief"}


def test_gateway_plugins_setting_loads_a_module(tmp_path, monkeypatch):
    (tmp_path / "shouty_plugin.py").write_text(textwrap.dedent('''
        from gateway import hookimpl
        from gateway.types import Price, ChatAnswer, Usage

        class Shouty:
            name = "shouty"
            def models(self):
                return {"shout": Price(0.0, 0.0)}
            def complete(self, completion):
                return ChatAnswer(text=completion.messages[-1]["content"].upper(),
                              model=completion.model, usage=Usage(1, 1))
            def stream(self, completion):
                raise NotImplementedError

        @hookimpl
        def gateway_register_providers():
            return [Shouty()]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GATEWAY_PLUGINS", "shouty_plugin")
    app = make_app(tmp_path)
    assert app.extensions["gateway"].pm.sources["shouty_plugin"] == "GATEWAY_PLUGINS"
    response = ask(app.test_client(), issue_key(app), model="shout", content="quiet")
    assert response.get_json()["choices"][0]["message"]["content"] == "QUIET"
    sys.modules.pop("shouty_plugin", None)


def test_plugin_that_cannot_be_imported_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"plugin 'no_such_plugin_module'.*cannot be imported"):
        make_app(tmp_path, {"plugins": ["no_such_plugin_module"]})


def test_implementation_matching_no_hook_stops_start_up(tmp_path):
    class Typo:
        @hookimpl
        def gateway_authenticat(self, request):
            return None

    with pytest.raises(ConfigError, match="gateway_authenticat"):
        make_app(tmp_path, plugins=(Typo(),))


def test_implementation_with_a_wrong_argument_stops_start_up(tmp_path):
    class Wrong:
        @hookimpl
        def gateway_enrich_request(self, completion, flavour):
            pass

    with pytest.raises(ConfigError, match="flavour"):
        make_app(tmp_path, plugins=(Wrong(),))


def test_two_providers_with_one_name_stop_start_up(tmp_path):
    with pytest.raises(ConfigError, match="'echo'"):
        make_app(tmp_path, plugins=(ProviderPlugin(FakeProvider(name="echo")),))


def test_a_failing_after_response_plugin_never_breaks_the_answer_or_the_others(tmp_path, caplog):
    class Exploding:
        @hookimpl(tryfirst=True)
        def gateway_after_response(self, record):
            raise RuntimeError("boom")

    app = make_app(tmp_path, plugins=(Exploding(),))
    with caplog.at_level(logging.ERROR):
        response = ask(app.test_client(), issue_key(app))
    assert response.status_code == 200
    assert len(app.extensions["gateway"].store.records_for_user("alice")) == 1  # analytics still ran
    assert any("after-response plugin failed" in r.getMessage() for r in caplog.records)


def test_an_enrich_plugin_can_refuse_with_400(tmp_path):
    class Guard:
        @hookimpl
        def gateway_enrich_request(self, completion):
            if "forbidden" in completion.messages[-1]["content"]:
                raise InvalidRequest("That topic is blocked.", code="content_blocked")

    app = make_app(tmp_path, plugins=(Guard(),))
    response = ask(app.test_client(), issue_key(app), content="forbidden words")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "content_blocked"


def test_a_plugin_authenticator_overrides_the_builtin(tmp_path):
    from gateway.types import Caller

    class Partner:
        @hookimpl
        def gateway_authenticate(self, request):
            if request.headers.get("X-Partner") == "p1":
                return Caller(user_id="partner", key_id="p1", tier="basic")
            return None

    app = make_app(tmp_path, plugins=(Partner(),))
    response = app.test_client().post(CHAT, headers={"X-Partner": "p1"},
                                      json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert app.extensions["gateway"].store.records_for_user("partner")[0].api_key_id == "p1"


def test_installed_entry_points_finds_what_importlib_metadata_finds():
    for group in ("ai_gateway", "console_scripts"):
        ours = {(ep.name, ep.value) for ep in installed_entry_points(group)}
        assert ours == {(ep.name, ep.value) for ep in metadata.entry_points(group=group)}
    assert {ep.name for ep in installed_entry_points("console_scripts")} >= {"gateway", "pytest"}
    assert installed_entry_points("no-such-group-anywhere") == []


#: A plugin distribution of its own version, as pip would install it: a module and its ``.dist-info``.
VERSIONED_PLUGIN = {
    "gw_versioned_plugin.py": "from gateway import hookimpl\n\n\n@hookimpl\ndef gateway_after_response(record):\n"
                              "    pass\n",
    "gw_versioned_plugin-7.3.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: gw-versioned-plugin\n"
                                                    "Version: 7.3.1\n",
    "gw_versioned_plugin-7.3.1.dist-info/entry_points.txt": "[ai_gateway]\nversioned = gw_versioned_plugin\n",
}


def listed_plugins(tmp_path, **environment) -> dict[str, dict]:
    """``gateway plugins --json`` in a fresh process that also sees the distributions under ``tmp_path``."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={
                              **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                              "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]),
                              "GATEWAY_SQLITE_PATH": str(tmp_path / "cli.db"), **environment})
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_an_entry_point_plugin_shows_its_own_distributions_version(tmp_path):
    for name, text in VERSIONED_PLUGIN.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    rows = listed_plugins(tmp_path)
    assert rows["versioned"] == {"name": "versioned", "version": "7.3.1", "source": "entry point (gw_versioned_plugin)",
                                 "hooks": ["gateway_after_response"]}
    assert rows["apikey"]["version"] == metadata.version("ai-model-gateway") != "7.3.1"
    assert "versioned" not in listed_plugins(tmp_path, GATEWAY_DISABLE_PLUGINS="versioned")


def test_the_gateway_runs_without_the_apikey_plugin(tmp_path):
    """The core does not depend on the built-in key plugin: another authenticator can replace it."""
    from gateway.types import Caller

    class Partner:
        @hookimpl
        def gateway_authenticate(self, request):
            if request.headers.get("X-Partner") == "p1":
                return Caller(user_id="partner", key_id="p1", tier="basic",
                              permissions=frozenset({"completions", "admin"}))
            return None

    app = make_app(tmp_path, {"disable_plugins": ["apikey"]}, plugins=(Partner(),))
    client = app.test_client()
    chat = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    assert client.post(CHAT, json=chat, headers={"X-Partner": "p1"}).status_code == 200
    assert client.get("/api/v1/admin/keys", headers={"X-Partner": "p1"}).status_code == 404  # the plugin's routes
    assert client.get("/api/v1/admin/keys").status_code == 401  # the core's guard still holds


def test_the_core_imports_nothing_from_the_plugins():
    """gateway/ reaches plugins only through hooks; the loader names the built-ins (BUILTIN_PLUGINS)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "gateway"
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and path.name != "plugins.py" and re.fullmatch(r"plugins(\.\w+)+", node.value) else [])
            found += [f"{path.name}: {name}" for name in names if name == "plugins" or name.startswith("plugins.")]
    assert found == []


@pytest.mark.parametrize("declarations, message", [
    ((Declaration(request_options={"tone": fields.String()}), Declaration(request_options={"tone": fields.String()})),
     "request option tone"),
    ((Declaration(response_headers={"X-Tone": "a"}), Declaration(response_headers={"X-Tone": "b"})),
     "response header X-Tone"),
    ((Declaration(request_options={"model": fields.String()}),), "model would replace the gateway's own"),
    (({"permissions": ["x"]},), "must return a gateway.types.Declaration"),
])
def test_a_conflicting_or_malformed_declaration_stops_start_up(tmp_path, declarations, message):
    def declaring(declaration):
        class Plugin:
            @hookimpl
            def gateway_declare(self):
                return declaration
        return Plugin()

    with pytest.raises(ConfigError, match=message):
        make_app(tmp_path, plugins=tuple(declaring(d) for d in declarations))


def test_declared_permissions_are_the_ones_keys_may_hold(tmp_path):
    class Reports:
        @hookimpl
        def gateway_declare(self):
            return Declaration(permissions=("reports", "completions"))

    app = make_app(tmp_path, plugins=(Reports(),))
    assert set(app.extensions["gateway"].permissions) == {"completions", "health", "admin", "mcp", "reports"}
    admin = {"X-API-Key": issue_key(app, "root", permissions=("admin",))}
    client = app.test_client()
    created = client.post("/api/v1/admin/keys", headers=admin, json={"user_id": "u", "permissions": ["reports"]})
    assert created.status_code == 201 and created.get_json()["permissions"] == ["reports"]
    refused = client.post("/api/v1/admin/keys", headers=admin, json={"user_id": "u", "permissions": ["nope"]})
    assert refused.status_code == 400


def test_earlier_type_names_still_import_with_a_deprecation_warning():
    """Plugins written against the earlier names keep loading; each name says what it is now."""
    import gateway.types as types

    for old, new in (("Completion", "ChatRequest"), ("Result", "ChatAnswer"),
                     ("EmbeddingResult", "EmbeddingAnswer"), ("UsageRecord", "RequestLogRecord")):
        with pytest.warns(DeprecationWarning, match=f"is now gateway.types.{new}"):
            assert getattr(types, old) is getattr(types, new)
    with pytest.raises(AttributeError):
        types.NoSuchType  # noqa: B018


def test_disabling_the_catalog_plugin_by_its_earlier_name_stops_start_up(tmp_path):
    """``mcp`` is now ``catalog``: a stage that disabled ``mcp`` must not get the plugin back silently."""
    with pytest.raises(ConfigError, match="'mcp': that built-in plugin is now named 'catalog'"):
        make_app(tmp_path, {"disable_plugins": ["mcp"]})
    assert not make_app(tmp_path, {"disable_plugins": ["catalog"]}).extensions["gateway"].pm.has_plugin("catalog")
