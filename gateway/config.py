"""Settings: defaults < config file < environment (``GATEWAY_*``), validated at start-up.

A setting that is unknown or malformed stops start-up with a :class:`ConfigError`
naming it and saying what it accepts. The original Lambda deployment's variable
names (``ENVIRONMENT``, ``API_KEY_TABLE_NAME`` …) are accepted as aliases.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as f

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"

#: Old deployment variable -> setting name. Read only when the GATEWAY_ form is absent.
ENV_ALIASES = {
    "ENVIRONMENT": "stage",
    "API_KEY_TABLE_NAME": "api_key_table",
    "PRODUCT_CATALOG_TABLE_NAME": "product_table",
    "REQUEST_ANALYTICS_TABLE_NAME": "request_log_table",
    "OPENAI_PROVIDER_ENABLED": "openai_provider_enabled",
    "RATE_LIMIT_FREE_TIER_RPM": "rate_limit_free_tier_rpm",
    "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "circuit_breaker_failure_threshold",
    # Set by the Lambda runtime: the function's own region, so no stage names a region of its own.
    "AWS_REGION": "aws_region",
}

#: Settings whose values an error message never repeats (they may hold secrets).
SECRET_SETTINGS = {"key_pepper", "plugin_settings"}

#: Environment variables with the prefix that are not settings (read elsewhere, by name).
NOT_SETTINGS = {"GATEWAY_CONFIG"}


class CommaList(f.List):
    """A list that also accepts a comma-separated string (the environment's form)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return super()._deserialize(value, attr, data, **kwargs)


class JSONMapping(f.Dict):
    """A mapping that also accepts a JSON object string (the environment's form)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValidationError(f"not valid JSON: {exc}") from exc
        return super()._deserialize(value, attr, data, **kwargs)


class TierSchema(Schema):
    """One tier's limits, as given in the ``tiers`` setting (each field optional)."""

    class Meta:
        unknown = RAISE

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


#: Tier defaults (DESIGN.md "Data"); the ``tiers`` setting overrides any field of any tier.
DEFAULT_TIERS = {
    "free": {"requests_per_hour": 100, "tokens_per_minute": 10_000, "monthly_budget_usd": 5.0,
             "concurrent_requests": 4},
    "basic": {"requests_per_hour": 3_000, "tokens_per_minute": 100_000, "monthly_budget_usd": 50.0,
              "concurrent_requests": 16},
    "premium": {"requests_per_hour": 30_000, "tokens_per_minute": 1_000_000, "monthly_budget_usd": 500.0,
                "concurrent_requests": 64},
    "enterprise": {"requests_per_hour": 200_000, "tokens_per_minute": 5_000_000,
                   "monthly_budget_usd": 5_000.0, "concurrent_requests": 512},
}


class SettingsSchema(Schema):
    """Every setting, its type and what it accepts."""

    class Meta:
        unknown = RAISE

    stage = f.String(validate=validate.OneOf(["dev", "staging", "prod"]))
    store = f.String(validate=validate.OneOf(["sqlite", "dynamodb"]))
    sqlite_path = f.String(validate=validate.Length(min=1))
    table_prefix = f.String(validate=validate.Length(min=1))
    api_key_table = f.String(validate=validate.Length(min=1))
    product_table = f.String(validate=validate.Length(min=1))
    request_log_table = f.String(validate=validate.Length(min=1))
    aws_region = f.String()
    key_pepper = f.String(validate=validate.Length(min=16))
    key_cache_ttl = f.Float(validate=validate.Range(min=0))
    max_body_bytes = f.Integer(validate=validate.Range(min=1024))
    max_messages = f.Integer(validate=validate.Range(min=1, max=2048))
    max_message_chars = f.Integer(validate=validate.Range(min=1))
    allowed_upstream_hosts = CommaList(f.String(validate=validate.Length(min=1)))
    cors_origins = CommaList(f.String())
    trusted_proxy_hops = f.Integer(validate=validate.Range(min=0, max=10))
    plugins = CommaList(f.String())
    disable_plugins = CommaList(f.String())
    plugin_settings = JSONMapping(keys=f.String(), values=f.Dict())
    openai_provider_enabled = f.Boolean()
    rate_limit_free_tier_rpm = f.Integer(validate=validate.Range(min=1))
    tier_limits = JSONMapping(keys=f.String(validate=validate.OneOf(
        ["free", "basic", "premium", "enterprise"])), values=f.Integer(validate=validate.Range(min=1)))
    tiers = JSONMapping(keys=f.String(validate=validate.OneOf(["free", "basic", "premium", "enterprise"])),
                        values=f.Nested(TierSchema))
    rate_limit_storage_uri = f.String()
    rate_limit_fail_mode = f.String(validate=validate.OneOf(["open", "closed"]))
    concurrency_lease_seconds = f.Float(validate=validate.Range(min=3, max=3600))
    failed_auth_limit = f.String(validate=validate.Length(min=1))
    key_rotation_grace_seconds = f.Float(validate=validate.Range(min=0))
    circuit_breaker_failure_threshold = f.Integer(validate=validate.Range(min=1))
    request_log_retention_days = f.Integer(validate=validate.Range(min=1))
    log_level = f.String(validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))
    provider_timeout = f.Float(validate=validate.Range(min=0.1, max=28))
    mcp_context_default = f.Boolean()
    mcp_max_products = f.Integer(validate=validate.Range(min=1, max=20))
    mcp_context_token_budget = f.Integer(validate=validate.Range(min=100, max=100_000))
    catalog_cache_ttl = f.Float(validate=validate.Range(min=0))
    request_log_writes = f.String(validate=validate.OneOf(["auto", "sync", "background"]))
    request_log_queue_size = f.Integer(validate=validate.Range(min=1))
    request_log_batch_wait_ms = f.Float(validate=validate.Range(min=0, max=1000))
    request_log_content = f.Boolean()
    response_cache = f.String(validate=validate.Regexp(
        r"^$|^auto$|^(sqlite|memory|redis|rediss|dynamodb)://", error="must be empty (off), auto, "
        "or a sqlite://, memory://, redis:// or dynamodb:// URI"))
    response_cache_ttl = f.Integer(validate=validate.Range(min=1))
    metrics_emf = f.Boolean()
    provider_connect_timeout = f.Float(validate=validate.Range(min=0.1, max=28))
    request_timeout = f.Float(validate=validate.Range(min=0.1, max=28))
    stream_idle_timeout = f.Float(validate=validate.Range(min=1))
    stream_max_seconds = f.Float(validate=validate.Range(min=1))
    retry_attempts = f.Integer(validate=validate.Range(min=0, max=10))
    retry_base_delay = f.Float(validate=validate.Range(min=0))
    retry_max_delay = f.Float(validate=validate.Range(min=0))
    circuit_breaker_cooldown = f.Float(validate=validate.Range(min=0))
    model_table_path = f.String()
    trace_plugins = f.Boolean()
    ssm_path = f.String(validate=validate.Regexp(r"^(/[\w.-]+)+/$", error="an SSM path like /ai-gateway/prod/"))
    secret_id = f.String()


DEV_PEPPER = "dev-only-pepper-change-me-in-production"


@dataclass(frozen=True, repr=False, eq=False)
class Settings:
    """The validated settings of one app.

    No generated ``repr`` (it would print the key pepper and any secret into a log or a
    traceback) and no ``==`` (nothing compares settings): with 70 fields, generating
    them cost about 2 ms of every cold start.
    """

    stage: str = "dev"
    store: str = "sqlite"
    sqlite_path: str = "var/gateway.db"
    table_prefix: str = "ai-gateway"
    api_key_table: str = ""
    product_table: str = ""
    request_log_table: str = ""
    aws_region: str = "us-east-1"
    key_pepper: str = DEV_PEPPER
    #: Seconds a worker may keep using a cached key where the store cannot signal changes
    #: (DynamoDB): the bound on how long a revoked key keeps working there.
    key_cache_ttl: float = 5.0
    max_body_bytes: int = 1024 * 1024
    #: Messages one completion may carry, and characters of text one message may hold (400 beyond).
    max_messages: int = 512
    max_message_chars: int = 200_000
    #: Hosts a configured upstream URL may name besides https ones (plain http, private addresses);
    #: loopback is allowed without listing only in the dev stage (gateway/upstreams.py).
    allowed_upstream_hosts: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    #: Proxies in front of the gateway whose X-Forwarded-For (and -Proto, -Host) to trust, counted
    #: from the server: the client address the failed-auth throttle sees. 0 trusts none.
    trusted_proxy_hops: int = 0
    plugins: list[str] = field(default_factory=list)
    disable_plugins: list[str] = field(default_factory=list)
    plugin_settings: dict[str, dict] = field(default_factory=dict)
    openai_provider_enabled: bool = True
    rate_limit_free_tier_rpm: int = 10
    tier_limits: dict[str, int] = field(default_factory=dict)
    #: Per-tier overrides of DEFAULT_TIERS, e.g. {"free": {"tokens_per_minute": 2000}}.
    tiers: dict[str, dict] = field(default_factory=dict)
    #: Where limit counters live: "" picks sqlite:///<next to sqlite_path> (store sqlite) or
    #: dynamodb://<prefix>-<stage>-rate-limits (store dynamodb); memory:// is per process;
    #: redis://host:port/db.
    rate_limit_storage_uri: str = ""
    #: Counter store unreachable: "closed" answers 503, "open" serves and logs a warning.
    rate_limit_fail_mode: str = "closed"
    #: Seconds a call-in-flight slot (the tiers' ``concurrent_requests``) outlives its holder's last
    #: renewal (every third of it): how long a crashed worker's slots stay taken, at most.
    concurrency_lease_seconds: float = 30.0
    #: Failed authentications allowed per client address (a ``limits`` limit string such as "20/minute").
    failed_auth_limit: str = "20/minute"
    #: How long a rotated-out key keeps working, in seconds.
    key_rotation_grace_seconds: float = 86_400.0
    circuit_breaker_failure_threshold: int = 5
    request_log_retention_days: int = 90
    log_level: str = "INFO"
    #: Inject catalog context into completions that do not say (per-request switches win).
    mcp_context_default: bool = False
    mcp_max_products: int = 5
    #: Estimated tokens (about 4 characters each) the injected catalog block may take.
    mcp_context_token_budget: int = 1000
    #: Seconds a process reuses what it read from the catalog for search.
    catalog_cache_ttl: float = 60.0
    #: "auto": in the request on Lambda, on a background thread elsewhere.
    request_log_writes: str = "auto"
    request_log_queue_size: int = 10_000
    #: How long the background request-log writer lets records gather into one batch, in ms: long
    #: enough that calls of seconds (a few dozen a second per worker) still share their writes.
    request_log_batch_wait_ms: float = 100.0
    #: Store prompts and completions (after the ``gateway_redact`` hook) in the request log.
    request_log_content: bool = False
    #: "" (off), "auto" (sqlite:///<sqlite_path's stem>-cache.db on the SQLite store, memory://
    #: on DynamoDB), "sqlite:///path?max_entries=N", "memory://?max_entries=N" (per process),
    #: "redis://host:port/db" or "dynamodb://table".
    response_cache: str = "auto"
    response_cache_ttl: int = 3600
    #: CloudWatch Embedded Metric Format lines on stdout: by default only on Lambda (where CloudWatch Logs
    #: turns them into metrics); elsewhere they would fill the console, so a host turns them on itself.
    metrics_emf: bool = field(default_factory=lambda: "AWS_LAMBDA_FUNCTION_NAME" in os.environ)
    #: Seconds one upstream attempt may take (SDK read timeout); connect has its own, shorter one.
    provider_timeout: float = 20.0
    provider_connect_timeout: float = 3.0
    #: Seconds for all attempts of one request (retries, fallbacks): inside API Gateway's 29 s.
    request_timeout: float = 27.0
    #: Seconds a stream may go without an upstream event (a reasoning model may think minutes
    #: before its first token) before it ends with an error event; then the total a stream may last.
    stream_idle_timeout: float = 300.0
    stream_max_seconds: float = 3600.0
    #: Retries after the first attempt, per candidate, with exponential backoff and full jitter.
    retry_attempts: int = 2
    retry_base_delay: float = 0.25
    retry_max_delay: float = 4.0
    #: Seconds an open circuit stays open before one probe call is let through.
    circuit_breaker_cooldown: float = 30.0
    #: JSON or TOML file adding to (or replacing) the built-in model table; see gateway/models.py.
    model_table_path: str = ""
    #: Log each plugin hook call's duration (``GATEWAY_TRACE_PLUGINS=1``).
    trace_plugins: bool = False
    #: Read settings from these SSM parameters and this secret at start (gateway/ssm.py); "" is off.
    ssm_path: str = ""
    secret_id: str = ""

    def table(self, kind: str) -> str:
        """The DynamoDB table name for ``kind`` (api-keys, product-catalog, request-analytics)."""
        explicit = {"api-keys": self.api_key_table, "product-catalog": self.product_table,
                    "request-analytics": self.request_log_table}[kind]
        return explicit or f"{self.table_prefix}-{self.stage}-{kind}"

    def requests_per_minute(self, tier: str) -> int:
        """The per-minute request limit of ``tier``."""
        defaults = {"free": self.rate_limit_free_tier_rpm, "basic": 100,
                    "premium": 1000, "enterprise": 5000}
        return self.tier_limits.get(tier, defaults.get(tier, self.rate_limit_free_tier_rpm))

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
        """A plugin's own settings, with ``{"$env": "NAME"}`` values (at any depth) read from the environment."""
        return {key: _resolve_env(value) for key, value in self.plugin_settings.get(name, {}).items()}


def _resolve_env(value: Any) -> Any:
    """``value`` with every ``{"$env": "NAME"}`` in it, however deeply nested, read from the environment."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            return os.environ.get(value["$env"])
        return {key: _resolve_env(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_env(item) for item in value]
    return value


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for alias, name in ENV_ALIASES.items():
        if alias in environ:
            found[name] = environ[alias]
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key not in NOT_SETTINGS:
            found[key[len(ENV_PREFIX):].lower()] = value
    return found


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


def _describe(errors: dict, source: dict) -> str:
    parts = []
    for name, messages in sorted(errors.items()):
        text = "; ".join(m if isinstance(m, str) else json.dumps(m) for m in
                         (messages if isinstance(messages, list) else [messages]))
        label = f"{name} ({ENV_PREFIX}{name.upper()})"
        if text == "Unknown field.":
            parts.append(f"{label}: unknown setting")
        else:
            shown = name in source and name not in SECRET_SETTINGS
            parts.append(f"{label} = {source.get(name)!r}: {text}" if shown else f"{label}: {text}")
    return "invalid settings: " + ", ".join(parts)


_SCHEMA = SettingsSchema()


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build validated settings from defaults, ``GATEWAY_CONFIG`` file, environment, then ``overrides``.

    With ``ssm_path`` or ``secret_id`` set, the stage's SSM parameters and secret come
    between the environment and ``overrides`` (read once per process, see gateway/ssm.py).
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if environ.get("GATEWAY_CONFIG"):
        raw.update(read_mapping_file(environ["GATEWAY_CONFIG"]))
    raw.update(_from_environment(environ))
    if raw.get("ssm_path") or raw.get("secret_id"):
        from gateway import ssm

        raw = ssm.merge(raw, ssm.remote_settings(raw.get("ssm_path", ""), raw.get("secret_id", ""),
                                                 raw.get("aws_region", Settings.aws_region)))
    raw.update(overrides or {})
    try:
        values = _SCHEMA.load(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.messages, raw)) from None
    settings = Settings(**values)
    if settings.stage != "dev" and settings.key_pepper == DEV_PEPPER:
        raise ConfigError(f"key_pepper: stage {settings.stage!r} needs its own pepper "
                          "(set GATEWAY_KEY_PEPPER to a secret of 16+ characters)")
    return settings

