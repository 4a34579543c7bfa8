"""The README's settings table is the one the declarations print (``gateway settings --markdown``):
every setting of the core and of the built-in plugins, with its default, owner and meaning."""
from __future__ import annotations

from pathlib import Path

from gateway.config import declared_settings, load_settings
from gateway.plugins import BUILTIN_PLUGINS, build_plugin_manager
from gateway.setting_fields import declarations, settings_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BUILT_IN = {"core"} | {module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS}


def built_in_declarations() -> list[tuple[str, type]]:
    """The core's and the built-in plugins' settings declarations (installed plugins left out)."""
    pm = build_plugin_manager(load_settings({}, environ={}))
    return [(owner, cls) for owner, cls in declared_settings(pm) if owner in BUILT_IN]


def test_the_readme_has_the_table_the_declarations_print():
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    expected = settings_table(built_in_declarations())
    assert expected in section, "README.md's settings table is stale: paste `gateway settings --markdown`"


def test_every_setting_has_a_meaning_and_the_plugins_own_theirs():
    owned = built_in_declarations()
    owners = {name: owner for owner, cls in owned for name in declarations(cls)}
    assert [name for owner, cls in owned for name, d in declarations(cls).items() if not d.help] == []
    assert {owners[name] for name in ("key_pepper", "key_cache_ttl", "failed_auth_limit")} == {"apikey"}
    assert {owners[name] for name in ("mcp_max_products", "catalog_cache_ttl")} == {"catalog"}
    assert owners["openai_provider_enabled"] == "openai_provider" and owners["stage"] == "core"
