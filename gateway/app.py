"""The app factory and the per-app :class:`Gateway` that every hook receives."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app

from gateway import http
from gateway.config import PluginSettings, Settings, load_all_settings
from gateway.declarations import Declarations
from gateway.declarations import collect as collect_declarations
from gateway.errors import ConfigError
from gateway.logs import configure_logging, install_access_log
from gateway.models import load_model_table
from gateway.plugins import PluginManager
from gateway.ratelimit import RequestLimiter
from gateway.request_log import on_lambda
from gateway.resilience import Resilience
from gateway.schemas import (
    CHAT_COMPLETION,
    NATIVE_COMPLETION,
    ChatCompletionSchema,
    NativeCompletionSchema,
    with_request_options,
)
from gateway.store import Store, open_store
from gateway.types import Provider

logger = logging.getLogger(__name__)


class Gateway:
    """One app's state: settings, store, plugin manager and providers (built once, reused)."""

    def __init__(self, settings: Settings, pm: PluginManager, store: Store,
                 plugin_settings: PluginSettings | None = None):
        self.settings = settings
        #: Each plugin's validated settings by declaration class: ``gateway.plugin_settings[MySettings].x``.
        self.plugin_settings = plugin_settings if plugin_settings is not None else PluginSettings()
        self.pm = pm
        self.hook = pm.hook
        self.store = store
        self.limiter = RequestLimiter(settings)
        self.models = load_model_table(settings.model_table_path)
        self.resilience = Resilience(settings)
        #: Now, in seconds since the epoch, for what the app dates (tests replace it to move time on).
        self.clock: Callable[[], float] = time.time
        self.providers: dict[str, Provider] = {}
        #: Per-app state of plugins, by a name of their choosing (caches, clients).
        self.state: dict[str, Any] = {}
        #: What the plugins declared (``gateway_declare``), merged: see :meth:`load_declarations`.
        self.declared = Declarations()
        #: The completion schemas of the two APIs, with the plugins' request options.
        self.chat_schema = CHAT_COMPLETION
        self.native_schema = NATIVE_COMPLETION

    @property
    def permissions(self) -> tuple[str, ...]:
        """The permissions a caller may hold: the core's, then those plugins declared."""
        return self.declared.permissions

    def load_declarations(self) -> None:
        """Merge every plugin's declaration and build the completion schemas with their request options."""
        self.declared = collect_declarations(self.pm, self)
        options = self.declared.request_options
        self.chat_schema = with_request_options(ChatCompletionSchema, options)
        self.native_schema = with_request_options(NativeCompletionSchema, options)

    def unconfigured_providers(self) -> dict[str, str]:
        """The registered providers that cannot answer for lack of configuration, each with what to set:
        a provider's optional ``missing()`` (one without it counts as configured)."""
        found = {}
        for name, provider in self.providers.items():
            missing = getattr(provider, "missing", None)
            what = missing() if missing is not None else None
            if what:
                found[name] = what
        return found

    def load_providers(self) -> None:
        """Collect every plugin's providers; two providers with one name stop start-up."""
        for batch in self.hook.gateway_register_providers(gateway=self):
            for provider in batch or ():
                if provider.name in self.providers:
                    raise ConfigError(f"two plugins register a provider named {provider.name!r}")
                self.providers[provider.name] = provider


def current_gateway() -> Gateway:
    """The Gateway of the app serving the current request or CLI command."""
    return current_app.extensions["gateway"]


def _stop_start_up(impl, exc: Exception) -> None:
    """A ``gateway_startup`` implementation failed: a ConfigError stops start-up with the plugin's name
    and its message (no traceback); anything else is a bug, raised as it is."""
    if isinstance(exc, ConfigError):
        raise ConfigError(f"plugin {impl.plugin_name!r}: {exc}") from None
    raise exc


def create_app(config: Mapping[str, Any] | None = None, *, plugins: tuple[object, ...] = ()) -> Flask:
    """Build a gateway app.

    :param config: settings that override the config file and the environment
        (names as in :class:`gateway.config.Settings`).
    :param plugins: extra plugin objects registered after all others (for tests).
    :raises ConfigError: a setting is unknown or malformed, a plugin cannot load, or a plugin's
        ``gateway_startup`` refused to start.
    """
    settings, pm, plugin_settings = load_all_settings(config, plugins=plugins)
    configure_logging(settings.log_level)
    gateway = Gateway(settings, pm, open_store(settings), plugin_settings)
    gateway.load_providers()
    gateway.load_declarations()
    pm.call_each("gateway_startup", {"gateway": gateway}, _stop_start_up)

    app = Flask("gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["DEBUG"] = False
    app.json.sort_keys = False
    app.extensions["gateway"] = gateway
    if not on_lambda():  # API Gateway logs requests there; the request log has the rest
        install_access_log(app)
    http.install(app, settings, expose_headers=tuple(gateway.declared.response_headers))
    if settings.trusted_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    gateway.limiter.install(app)

    from gateway.api import admin, dashboard, health, native, openai_compat, usage

    app.register_blueprint(health.blueprint)
    app.register_blueprint(openai_compat.blueprint)
    app.register_blueprint(native.blueprint)
    app.register_blueprint(usage.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(admin.blueprint)
    # Loaded by its first request: building the document needs apispec and every schema.
    app.add_url_rule("/openapi.json", "openapi", http.LazyView("gateway.openapi.openapi_document"))
    pm.hook.gateway_register_blueprints(app=app, gateway=gateway)
    logger.info("gateway ready", extra={"stage": settings.stage, "store": settings.store,
                                        "providers": sorted(gateway.providers)})
    return app
