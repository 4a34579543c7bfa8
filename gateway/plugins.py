"""The plugin manager: built-ins, then ``ai_gateway`` entry points, then ``GATEWAY_PLUGINS``.

Built-in behaviour is registered exactly as a third-party plugin is: by module
name. A plugin named in ``disable_plugins`` is not loaded, whatever its source.
"""
from __future__ import annotations

import importlib
import logging
from importlib import metadata

import pluggy

from gateway import hookspecs
from gateway.config import Settings
from gateway.errors import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ai_gateway"

#: The built-in plugins, by module, registered under their last name part.
BUILTIN_PLUGINS = (
    "plugins.apikey",
    "plugins.routing",
    "plugins.echo_provider",
    "plugins.openai_provider",
    "plugins.bedrock_provider",
    "plugins.analytics",
    "plugins.mcp",
)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager that also remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}

    def register_module(self, module_name: str, source: str, name: str | None = None) -> None:
        """Import ``module_name`` and register it; a failed import stops start-up naming the plugin."""
        name = name or module_name.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any import failure is the plugin's, reported by name
            raise ConfigError(f"plugin {module_name!r} ({source}) cannot be imported: "
                              f"{type(exc).__name__}: {exc}") from None
        self.add(module, name, source)

    def add(self, plugin: object, name: str | None, source: str) -> str:
        """Register ``plugin``; a hook implementation with a wrong signature stops start-up."""
        try:
            name = self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f"plugin {name or plugin!r} ({source}): {exc}") from None
        self.sources[name] = source
        return name

    def plugin_version(self, name: str) -> str:
        """The installed distribution version of a plugin, or the gateway's for built-ins."""
        for plugin, dist in self.list_plugin_distinfo():
            if self.get_name(plugin) == name:
                return dist.version
        try:
            return metadata.version("ai-model-gateway")
        except metadata.PackageNotFoundError:
            return "unknown"


def _disabled(settings: Settings, module_name: str, name: str) -> bool:
    return module_name in settings.disable_plugins or name in settings.disable_plugins


def build_plugin_manager(settings: Settings, extra: tuple[object, ...] = ()) -> PluginManager:
    """A new, checked manager for one app (or one CLI run).

    ``extra`` plugin objects are registered last (tests use this). An
    implementation that matches no hook, or a plugin that cannot be imported,
    raises :class:`ConfigError`.
    """
    pm = PluginManager()
    for module_name in BUILTIN_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if not _disabled(settings, module_name, name):
            pm.register_module(module_name, "built-in", name)
    for name in settings.disable_plugins:
        pm.set_blocked(name)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise ConfigError(f"plugin {entry_point.name!r} (entry point {entry_point.value}) "
                              f"cannot be imported: {type(exc).__name__}: {exc}") from None
        pm.add(plugin, entry_point.name, f"entry point ({entry_point.value})")
    for module_name in settings.plugins:
        if not _disabled(settings, module_name, module_name.rsplit(".", 1)[-1]):
            pm.register_module(module_name, "GATEWAY_PLUGINS", module_name)
    for plugin in extra:
        pm.add(plugin, None, "registered at run time")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {exc.plugin!r}: {exc}") from None
    return pm
