"""Settings: defaults < config file < environment (``GATEWAY_*``) < SSM/secret < overrides, validated at start-up.

The core declares its settings here (:class:`Settings`), each once, with
:func:`gateway.setting_fields.setting`; each plugin declares its own the same way
(``gateway_declare_settings``). All are read from the same sources (:func:`read_sources`):
:func:`load_settings` validates the core's, :func:`load_plugin_settings` the loaded plugins'.

A setting that is unknown (neither the core nor a loaded plugin declares it) or malformed
stops start-up with a :class:`ConfigError` naming it and saying what it accepts; a secret's
value is never repeated. The original Lambda deployment's variable names (``ENVIRONMENT``,
``API_KEY_TABLE_NAME`` …) are read where nothing else sets the setting.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from marshmallow import Schema, validate
from marshmallow import fields as f

from gateway.errors import ConfigError
from gateway.setting_fields import ENV_PREFIX, CommaList, JSONMapping, build, declarations, label, setting
from gateway.tiers import DEFAULT_TIERS, TIERS

T = TypeVar("T")

#: Environment variables with the prefix that are not settings (read elsewhere, by name).
NOT_SETTINGS = {"GATEWAY_CONFIG"}

STAGES = ("dev", "staging", "prod")


class TierSchema(Schema):
    """One tier's limits, as given in the ``tiers`` setting (each field optional)."""

    requests_per_minute = f.Integer(validate=validate.Range(min=1))
    requests_per_hour = f.Integer(validate=validate.Range(min=1))
    tokens_per_minute = f.Integer(validate=validate.Range(min=1))
    monthly_budget_usd = f.Float(validate=validate.Range(min=0, min_inclusive=False))
    concurrent_requests = f.Integer(validate=validate.Range(min=1))


@dataclass(frozen=True, eq=False)
class TierLimits:
    """What one tier allows: requests per minute and hour, tokens per minute, USD per month, and
    calls in flight at once (completions, embeddings, responses; a stream until it ends)."""

    requests_per_minute: int
    requests_per_hour: int
    tokens_per_minute: int
    monthly_budget_usd: float
    concurrent_requests: int


def _choice(*choices: str) -> f.String:
    return f.String(validate=validate.OneOf(choices))


def _name() -> f.String:
    return f.String(validate=validate.Length(min=1))


def _at_least(minimum: float, number: type[f.Number] = f.Float, maximum: float | None = None) -> f.Number:
    return number(validate=validate.Range(min=minimum, max=maximum))


def _tier_map(values: f.Field) -> JSONMapping:
    return JSONMapping(keys=f.String(validate=validate.OneOf(TIERS)), values=values)


@dataclass(frozen=True, repr=False, eq=False)
class Settings:
    """The core's validated settings of one app (a plugin's own are in ``gateway.plugin_settings``).

    No generated ``repr`` (it would print any secret into a log or a traceback) and no ``==``
    (nothing compares settings): with 50 fields, generating them cost about 2 ms of every cold start.
    """

    stage: str = setting("dev", _choice(*STAGES), "`dev`, `staging`, `prod`; non-dev stages require their "
                         "own `key_pepper`", alias="ENVIRONMENT")
    store: str = setting("sqlite", _choice("sqlite", "dynamodb"), "or `dynamodb` (tables "
                         "`ai-gateway-<stage>-api-keys`, `-product-catalog`, `-request-analytics`)")
    sqlite_path: str = setting("var/gateway.db", _name(), "the SQLite store's file")
    table_prefix: str = setting("ai-gateway", _name(), "DynamoDB tables: `<table_prefix>-<stage>-api-keys` "
                                "and so on, unless a table is named")
    api_key_table: str = setting("", f.String(), "the DynamoDB table of API keys, by name",
                                 alias="API_KEY_TABLE_NAME")
    product_table: str = setting("", f.String(), "the DynamoDB table of the product catalog, by name",
                                 alias="PRODUCT_CATALOG_TABLE_NAME")
    request_log_table: str = setting("", f.String(), "the DynamoDB table of the request log, by name",
                                     alias="REQUEST_ANALYTICS_TABLE_NAME")
    # Set by the Lambda runtime: the function's own region, so no stage names a region of its own.
    aws_region: str = setting("us-east-1", f.String(), "the DynamoDB store's region, and Bedrock's when the "
                              "AWS configuration names none", alias="AWS_REGION")
    max_body_bytes: int = setting(1024 * 1024, _at_least(1024, f.Integer), "the largest request body (413 beyond)")
    max_messages: int = setting(512, _at_least(1, f.Integer, 2048), "messages one completion may carry (400 beyond)")
    max_message_chars: int = setting(200_000, _at_least(1, f.Integer), "characters of text one message may hold "
                                     "(400 beyond)")
    allowed_upstream_hosts: list[str] = setting(list, CommaList(_name()), "hosts a configured upstream URL may "
                                                "name besides https public ones; loopback is allowed unlisted "
                                                "only in `dev`")
    cors_origins: list[str] = setting(list, CommaList(f.String()), "comma-separated origins; CORS is off "
                                      "without them")
    trusted_proxy_hops: int = setting(0, _at_least(0, f.Integer, 10), "proxies in front whose "
                                      "`X-Forwarded-For` to trust (werkzeug's ProxyFix): the client address the "
                                      "failed-auth throttle counts; 0 trusts none")
    plugins: list[str] = setting(list, CommaList(f.String()), "extra plugin modules to load")
    disable_plugins: list[str] = setting(list, CommaList(f.String()), "plugin names to skip")
    plugin_settings: dict[str, dict] = setting(dict, JSONMapping(keys=f.String(), values=f.Dict()),
                                               "free-form blocks per plugin (`plugin_config`); "
                                               '`{"$env": "NAME"}` values come from the environment', secret=True)
    rate_limit_free_tier_rpm: int = setting(10, _at_least(1, f.Integer), "the free tier's requests per minute",
                                            alias="RATE_LIMIT_FREE_TIER_RPM")
    tier_limits: dict[str, int] = setting(dict, _tier_map(_at_least(1, f.Integer)), "requests per minute by "
                                          'tier, e.g. `{"basic": 250}`', shown=", ".join(
                                              f"{tier} {limits['requests_per_minute']}"
                                              for tier, limits in DEFAULT_TIERS.items()))
    tiers: dict[str, dict] = setting(dict, _tier_map(f.Nested(TierSchema)), "JSON per tier: "
                                     "`requests_per_minute`, `requests_per_hour`, `tokens_per_minute` (also the "
                                     "largest `max_tokens` accepted), `monthly_budget_usd`, `concurrent_requests` "
                                     "(calls in flight at once, a stream until it ends; 429 "
                                     "`concurrency_limit_exceeded` beyond); a key's own limits override its tier",
                                     shown="`DEFAULT_TIERS` in `gateway/tiers.py`")
    rate_limit_storage_uri: str = setting(
        "", f.String(), "where counters live: `sqlite:///path`, `redis://host:port/db`, "
        "`dynamodb://table?region=…`, or `memory://` (per process: exact only with one worker)",
        shown="SQLite file next to `sqlite_path` (store `sqlite`), `dynamodb://<prefix>-<stage>-rate-limits` "
        "(store `dynamodb`)")
    rate_limit_fail_mode: str = setting("closed", _choice("open", "closed"), "counter store unreachable: "
                                        "`closed` answers 503, `open` serves, logs a warning and counts it")
    concurrency_lease_seconds: float = setting(30.0, _at_least(3, f.Float, 3600), "a call in flight holds a "
                                               "lease in the counter store, renewed every third of this: a "
                                               "crashed worker's slots are free again within it")
    circuit_breaker_failure_threshold: int = setting(5, _at_least(1, f.Integer), "per provider and model: open "
                                                     "the circuit after this many consecutive failures",
                                                     alias="CIRCUIT_BREAKER_FAILURE_THRESHOLD")
    circuit_breaker_cooldown: float = setting(30.0, _at_least(0), "seconds an open circuit stays open before "
                                              "one probe call is let through")
    request_log_retention_days: int = setting(90, _at_least(1, f.Integer), "records expire then: DynamoDB TTL, "
                                              "SQLite purge (hourly by the writer, or `gateway analytics purge`)")
    log_level: str = setting("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "JSON log lines on stderr, "
                             "and the console's access line per request (off Lambda), which `WARNING` silences; "
                             "the CLI logs at `WARNING` unless `GATEWAY_LOG_LEVEL` is set")
    request_log_writes: str = setting("auto", _choice("auto", "sync", "background"), "`sync` (inside the "
                                      "request), `background` (a writer thread), `auto`: sync on Lambda, "
                                      "background elsewhere")
    request_log_queue_size: int = setting(10_000, _at_least(1, f.Integer), "the background queue; when full, "
                                          "records are written in the request instead (never dropped)")
    request_log_batch_wait_ms: float = setting(100.0, _at_least(0, f.Float, 1000), "how long the background "
                                               "writer lets records gather into one batch, in ms: long enough "
                                               "that calls of seconds still share their writes (a graceful "
                                               "shutdown still writes them all; token and spend limits are "
                                               "charged as batches are written)")
    request_log_content: bool = setting(False, f.Boolean(), "store prompts and answers, after the "
                                        "`gateway_redact` hook (masks e-mails, keys, card numbers)")
    response_cache: str = setting("auto", f.String(validate=validate.Regexp(
        r"^$|^auto$|^(sqlite|memory|redis|rediss|dynamodb)://", error="must be empty (off), auto, "
        "or a sqlite://, memory://, redis:// or dynamodb:// URI")),
        '`""` (off); `auto`: `sqlite:///<sqlite_path\'s stem>-cache.db` on the SQLite store, `memory://` on '
        "DynamoDB; `sqlite:///path?max_entries=N` (shared by the host's workers, 10000), "
        "`memory://?max_entries=N` (per process, 1000), `redis://host:port/db`, `dynamodb://table`")
    response_cache_ttl: int = setting(3600, _at_least(1, f.Integer), "seconds a cached answer is served")
    metrics_emf: bool = setting(lambda: "AWS_LAMBDA_FUNCTION_NAME" in os.environ, f.Boolean(),
                                "CloudWatch Embedded Metric Format lines on stdout: on by default only on Lambda "
                                "(`AWS_LAMBDA_FUNCTION_NAME` set), where CloudWatch Logs turns them into metrics; "
                                "`true` elsewhere", shown="on Lambda only")
    provider_timeout: float = setting(20.0, _at_least(0.1, f.Float, 28), "seconds one upstream attempt may "
                                      "take to answer (read)")
    provider_connect_timeout: float = setting(3.0, _at_least(0.1, f.Float, 28), "seconds one upstream attempt "
                                              "may take to connect")
    request_timeout: float = setting(27.0, _at_least(0.1, f.Float, 28), "seconds for all attempts of one "
                                     "request (retries, fallbacks), inside API Gateway's 29 s")
    stream_idle_timeout: float = setting(300.0, _at_least(1), "seconds a stream from an OpenAI-compatible "
                                         "upstream may go without an event (a reasoning model may think "
                                         'minutes first) before it ends with a `data: {"error": …}` event')
    stream_max_seconds: float = setting(3600.0, _at_least(1), "seconds any stream may last in all before it "
                                        'ends with a `data: {"error": …}` event')
    retry_attempts: int = setting(2, _at_least(0, f.Integer, 10), "retries after the first attempt, per "
                                  "candidate, on 429, 5xx, timeouts, connection errors: exponential backoff, "
                                  "full jitter, at least the upstream's `Retry-After`")
    retry_base_delay: float = setting(0.25, _at_least(0), "seconds of the first retry's backoff")
    retry_max_delay: float = setting(4.0, _at_least(0), "the longest backoff, in seconds")
    model_table_path: str = setting("", f.String(), "JSON/TOML file adding to the built-in model table "
                                    "(see below)")
    trace_plugins: bool = setting(False, f.Boolean(), "log each plugin hook call's duration")
    ssm_path: str = setting("", f.String(validate=validate.Regexp(
        r"^(/[\w.-]+)+/$", error="an SSM path like /ai-gateway/prod/")),
        "read settings from the SSM parameters under this path at start (`gateway/ssm.py`)")
    secret_id: str = setting("", f.String(), "read settings from this Secrets Manager secret at start "
                             "(`gateway/ssm.py`)")

    def table(self, kind: str) -> str:
        """The DynamoDB table name for ``kind`` (api-keys, product-catalog, request-analytics)."""
        explicit = {"api-keys": self.api_key_table, "product-catalog": self.product_table,
                    "request-analytics": self.request_log_table}[kind]
        return explicit or f"{self.table_prefix}-{self.stage}-{kind}"

    def requests_per_minute(self, tier: str) -> int:
        """The per-minute request limit of ``tier`` (an unknown tier gets the free tier's)."""
        known = tier if tier in DEFAULT_TIERS else "free"
        default = self.rate_limit_free_tier_rpm if known == "free" else DEFAULT_TIERS[known]["requests_per_minute"]
        return self.tier_limits.get(known, default)

    def tier(self, name: str) -> TierLimits:
        """The limits of tier ``name`` (an unknown tier gets the free tier's)."""
        known = name if name in DEFAULT_TIERS else "free"
        values = {**DEFAULT_TIERS[known], "requests_per_minute": self.requests_per_minute(known),
                  **self.tiers.get(known, {})}
        return TierLimits(**values)

    def limit_storage_uri(self) -> str:
        """The ``limits`` storage URI for counters (see ``rate_limit_storage_uri``)."""
        if self.rate_limit_storage_uri:
            return self.rate_limit_storage_uri
        if self.store == "dynamodb":
            return f"dynamodb://{self.table_prefix}-{self.stage}-rate-limits?region={self.aws_region}"
        base = Path(self.sqlite_path)
        return f"sqlite:///{base.with_name(base.stem + '-ratelimits.db')}"

    def plugin_config(self, name: str) -> dict[str, Any]:
        """A plugin's free-form ``plugin_settings`` block, with ``{"$env": "NAME"}`` values (at any depth)
        read from the environment. Declared settings (``gateway_declare_settings``) are typed and checked."""
        return {key: _resolve_env(value) for key, value in self.plugin_settings.get(name, {}).items()}


#: Old deployment variable -> core setting name (a plugin's aliases are in its own declarations).
ENV_ALIASES = {d.alias: name for name, d in declarations(Settings).items() if d.alias}


def _resolve_env(value: Any) -> Any:
    """``value`` with every ``{"$env": "NAME"}`` in it, however deeply nested, read from the environment."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            return os.environ.get(value["$env"])
        return {key: _resolve_env(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_env(item) for item in value]
    return value


def read_mapping_file(path: str, what: str = "config file") -> dict[str, Any]:
    """A JSON (or, by suffix, TOML) file's content; :class:`ConfigError` naming ``what`` otherwise."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    try:
        if file.suffix == ".toml":
            import tomllib  # only for a TOML file: ~10 ms of cold start otherwise

            return tomllib.loads(text)
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {path}: not valid {file.suffix.lstrip('.') or 'JSON'} ({exc})") from None


class SettingSources:
    """Every setting's raw value, before validation: defaults < config file < environment < SSM and
    secret < overrides. Each declaration (the core's, each plugin's) takes its own names from it."""

    def __init__(self, raw: Mapping[str, Any], environ: Mapping[str, str]):
        """``raw``: the merged values by setting name; ``environ``: where old variable names are looked up."""
        self.raw = raw
        self.environ = environ

    def load(self, cls: type[T]) -> T:
        """``cls``'s settings (a declaration class), validated; :class:`ConfigError` naming each bad one."""
        values = {}
        for name, declaration in declarations(cls).items():
            if name in self.raw:
                values[name] = self.raw[name]
            elif declaration.alias and declaration.alias in self.environ:
                values[name] = self.environ[declaration.alias]
        return build(cls, values)

    def check_known(self, declared: Iterable[str]) -> None:
        """Raise :class:`ConfigError` naming every setting given that nothing declares."""
        unknown = sorted(set(self.raw) - set(declared))
        if unknown:
            raise ConfigError("invalid settings: " + ", ".join(
                f"{label(name)}: unknown setting (neither the core nor a loaded plugin declares it)"
                for name in unknown))


def read_sources(overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> SettingSources:
    """The raw settings from the ``GATEWAY_CONFIG`` file, the environment and ``overrides``.

    With ``ssm_path`` or ``secret_id`` set, the stage's SSM parameters and secret come
    between the environment and ``overrides`` (read once per process, see gateway/ssm.py).
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if environ.get("GATEWAY_CONFIG"):
        raw.update(read_mapping_file(environ["GATEWAY_CONFIG"]))
    raw.update((key[len(ENV_PREFIX):].lower(), value) for key, value in environ.items()
               if key.startswith(ENV_PREFIX) and key not in NOT_SETTINGS)
    if raw.get("ssm_path") or raw.get("secret_id"):
        from gateway import ssm

        region = raw.get("aws_region") or environ.get("AWS_REGION") or Settings.aws_region
        raw = ssm.merge(raw, ssm.remote_settings(raw.get("ssm_path", ""), raw.get("secret_id", ""), region))
    raw.update(overrides or {})
    return SettingSources(raw, environ)


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """The core's validated settings from defaults, ``GATEWAY_CONFIG`` file, environment, then ``overrides``.

    Names the core does not declare are left to the plugins (``load_plugin_settings``), which
    also reports the names nobody declares.
    """
    return read_sources(overrides, environ).load(Settings)


def declared_settings(pm) -> list[tuple[str, type]]:
    """``(owner, declaration class)``: the core's ``Settings``, then each loaded plugin's
    (``gateway_declare_settings``). A name declared twice (by the core and a plugin, or by two
    plugins) stops start-up."""
    owned: list[tuple[str, type]] = [("core", Settings)]
    owners = dict.fromkeys(declarations(Settings), "the core")
    for impl in pm.hook.gateway_declare_settings.get_hookimpls():
        owner = f"plugin {impl.plugin_name!r}"
        for cls in _as_list(impl.function()):
            for name in declarations(cls):
                if owners.setdefault(name, owner) != owner:
                    raise ConfigError(f"{owner} declares the setting {name!r}, which {owners[name]} declares: "
                                      "rename it")
            owned.append((impl.plugin_name, cls))
    return owned


class PluginSettings(dict):
    """Each plugin's validated settings, by declaration class (a plain dict lookup: read per request).
    A class no plugin declared raises :class:`ConfigError` saying how to declare it."""

    def __missing__(self, declaration: type) -> Any:
        raise ConfigError(f"{getattr(declaration, '__qualname__', declaration)} is not declared: return it "
                          "from a gateway_declare_settings implementation")


def load_plugin_settings(sources: SettingSources, pm) -> PluginSettings:
    """Every loaded plugin's declared settings, validated; a setting given that neither the core nor
    a plugin declares stops start-up."""
    owned = declared_settings(pm)
    loaded = PluginSettings((cls, sources.load(cls)) for _, cls in owned[1:])
    declared = {name for _, cls in owned for name in declarations(cls)}
    if set(sources.raw) - declared:
        declared |= _declared_by_disabled_builtins(pm)
    sources.check_known(declared)
    return loaded


def _declared_by_disabled_builtins(pm) -> set[str]:
    """The names the built-in plugins disabled in this app declare: a deployment that replaces one
    (say apikey, whose ``key_pepper`` the stage's secret holds) need not remove its settings too.
    Imported only when a setting is otherwise unknown."""
    import importlib

    from gateway.plugins import BUILTIN_PLUGINS

    names: set[str] = set()
    for module_name in BUILTIN_PLUGINS:
        if pm.is_blocked(module_name.rsplit(".", 1)[-1]) or pm.is_blocked(module_name):
            declare = getattr(importlib.import_module(module_name), "gateway_declare_settings", None)
            names.update(name for cls in _as_list(declare and declare()) for name in declarations(cls))
    return names


def load_all_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                      plugins: tuple[object, ...] = ()) -> tuple[Settings, Any, PluginSettings]:
    """The core's settings, the plugin manager they configure, and every plugin's declared settings:
    what ``create_app`` starts from (``plugins`` are extra plugin objects, registered last)."""
    from gateway.plugins import build_plugin_manager

    sources = read_sources(overrides, environ)
    settings = sources.load(Settings)
    pm = build_plugin_manager(settings, plugins)
    return settings, pm, load_plugin_settings(sources, pm)


def _as_list(declared: type | list[type] | None) -> list[type]:
    if declared is None:
        return []
    return list(declared) if isinstance(declared, (list, tuple)) else [declared]
