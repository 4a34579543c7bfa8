"""The plugin manager: built-ins, then ``ai_gateway`` entry points, then ``GATEWAY_PLUGINS``.

Built-in behaviour is registered exactly as a third-party plugin is: by module
name. A plugin named in ``disable_plugins`` is not loaded, whatever its source.
A plugin that sets ``gateway_optional = True`` (module or object attribute) may
fail in ``gateway_enrich_request`` without failing the request.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pluggy

from gateway import hookspecs
from gateway.config import Settings
from gateway.errors import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ai_gateway"

#: The attribute by which a plugin declares itself optional.
OPTIONAL_ATTRIBUTE = "gateway_optional"

#: Hooks whose implementations the pipeline calls one by one (see ``call_each``); a
#: wrapper implementation cannot wrap such a call, so one stops start-up.
CALLED_ONE_BY_ONE = ("gateway_enrich_request", "gateway_after_response")

#: The built-in plugins, by module, registered under their last name part.
BUILTIN_PLUGINS = (
    "plugins.apikey",
    "plugins.routing",
    "plugins.echo_provider",
    "plugins.openai_provider",
    "plugins.bedrock_provider",
    "plugins.analytics",
    "plugins.catalog",
)

#: Built-in plugins' earlier names -> today's: disabling one by its earlier name stops start-up.
RENAMED_BUILTINS = {"mcp": "catalog"}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager that also remembers where each plugin came from."""

    def __init__(self, trace: bool = False) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        #: The distribution each entry-point plugin came from, by plugin name.
        self.distributions: dict[str, metadata.Distribution] = {}
        self.trace = trace
        if trace:
            self.add_hookcall_monitoring(*_hook_call_timer())

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
        callers = self.get_hookcallers(plugin) or []
        if not callers:
            raise ConfigError(f"plugin {name!r} ({source}) implements no hook: mark its functions "
                              "with @hookimpl (from gateway import hookimpl)")
        for caller in callers:
            if caller.name in CALLED_ONE_BY_ONE and any(
                    impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
                    for impl in caller.get_hookimpls()):
                raise ConfigError(f"plugin {name!r} ({source}): {caller.name} cannot be a wrapper; "
                                  "its implementations are called one by one")
        self.sources[name] = source
        return name

    def call_each(self, hook_name: str, arguments: dict[str, Any],
                  on_error: Callable[[pluggy.HookImpl, Exception], None]) -> None:
        """Call each implementation of ``hook_name`` on its own, in pluggy's order.

        pluggy stops a hook call at the first exception; here ``on_error(impl, exc)``
        decides instead: re-raise, or log and let the rest run. The exception carries
        a note naming the plugin, so the logged traceback says whose it is.
        """
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            started = time.perf_counter()
            try:
                impl.function(*(arguments[name] for name in impl.argnames))
            except Exception as exc:
                exc.add_note(f"raised by plugin {impl.plugin_name!r} in {hook_name}")
                on_error(impl, exc)
            finally:
                if self.trace:
                    _log_duration(hook_name, [impl.plugin_name], started)

    def plugin_version(self, name: str) -> str | None:
        """The version of the distribution a plugin came from: its own for an entry point, the
        gateway's for a built-in, None when unknown (a module named in ``GATEWAY_PLUGINS``, an
        object registered at run time)."""
        if name in self.distributions:
            return self.distributions[name].version
        if self.sources.get(name) != "built-in":
            return None
        try:
            return metadata.version("ai-model-gateway")
        except metadata.PackageNotFoundError:
            return None


def is_optional(plugin: object) -> bool:
    """True when ``plugin`` declared ``gateway_optional = True``."""
    return getattr(plugin, OPTIONAL_ATTRIBUTE, False) is True


def _log_duration(hook_name: str, plugin_names: list[str], started: float) -> None:
    logger.info("plugin hook call", extra={
        "hook": hook_name, "plugins": plugin_names,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3)})


def _hook_call_timer():
    """pluggy monitoring callbacks (before, after) that log each hook call's duration.

    Hook calls can nest (a hook implementation may call another hook), so the start
    times are a per-thread stack.
    """
    local = threading.local()

    def before(hook_name, implementations, kwargs):
        local.__dict__.setdefault("started", []).append(time.perf_counter())

    def after(outcome, hook_name, implementations, kwargs):
        _log_duration(hook_name, [impl.plugin_name for impl in implementations], local.started.pop())

    return before, after


def _run_time_name(pm: PluginManager, plugin: object) -> str:
    """A readable, unique name for a plugin object: its module or class name."""
    base = getattr(plugin, "__name__", None) or type(plugin).__name__
    name, number = base, 1
    while pm.has_plugin(name):
        number += 1
        name = f"{base}-{number}"
    return name


def _disabled(settings: Settings, module_name: str, name: str) -> bool:
    return module_name in settings.disable_plugins or name in settings.disable_plugins


def installed_entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points in ``group`` of the installed distributions, each knowing its distribution
    (``entry_point.dist``, where the plugin's version comes from).

    As ``importlib.metadata.entry_points(group=group)``, but only the distributions whose
    ``entry_points.txt`` names the group are parsed: the standard call (and pluggy's
    ``load_setuptools_entrypoints``, which also registers without the checks of
    :meth:`PluginManager.add`) parses every installed distribution's file, ~17 ms of each cold
    start with 100 distributions (~4 ms this way). A distribution found twice on ``sys.path`` is
    listed twice; the caller keeps the first.
    """
    header = f"[{group}]"
    found: list[metadata.EntryPoint] = []
    for distribution in metadata.distributions():
        text = distribution.read_text("entry_points.txt")
        if text and header in text:
            found.extend(distribution.entry_points.select(group=group))
    return found


def build_plugin_manager(settings: Settings, extra: tuple[object, ...] = ()) -> PluginManager:
    """A new, checked manager for one app (or one CLI run).

    ``extra`` plugin objects are registered last (tests use this). A plugin that
    cannot be imported, implements no hook, has an implementation that matches no
    hook or takes an argument its hook does not offer raises :class:`ConfigError`
    naming the plugin.
    """
    for old, new in RENAMED_BUILTINS.items():
        if old in settings.disable_plugins:  # else the renamed plugin would silently load again
            raise ConfigError(f"disable_plugins names {old!r}: that built-in plugin is now named {new!r}")
    pm = PluginManager(trace=settings.trace_plugins)
    for module_name in BUILTIN_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if not _disabled(settings, module_name, name):
            pm.register_module(module_name, "built-in", name)
    for name in settings.disable_plugins:
        pm.set_blocked(name)
    for entry_point in installed_entry_points(ENTRY_POINT_GROUP):
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise ConfigError(f"plugin {entry_point.name!r} (entry point {entry_point.value}) "
                              f"cannot be imported: {type(exc).__name__}: {exc}") from None
        pm.add(plugin, entry_point.name, f"entry point ({entry_point.value})")
        pm.distributions[entry_point.name] = entry_point.dist
    for module_name in settings.plugins:
        if not _disabled(settings, module_name, module_name.rsplit(".", 1)[-1]):
            pm.register_module(module_name, "GATEWAY_PLUGINS", module_name)
    for plugin in extra:
        pm.add(plugin, _run_time_name(pm, plugin), "registered at run time")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin)
        raise ConfigError(f"plugin {name!r} ({pm.sources.get(name, '?')}): {exc}") from None
    return pm
