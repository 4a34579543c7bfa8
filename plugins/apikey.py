"""API keys: ``gw_<env>_<key id>_<secret>``, stored only as an HMAC-SHA256 of the secret.

The key id is public and finds the stored row; the secret is verified by comparing
HMACs (keyed by the server-side pepper, salted by the key id) in constant time.
Validated keys are cached in process so the hot path does not read the store on
every request. A revocation, rotation or permission change takes effect at once on
every worker sharing a SQLite store (the cache is dropped whenever the store's change
marker moves), and within ``key_cache_ttl`` seconds (5) on stores that cannot tell
cheaply (DynamoDB).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError, validate
from marshmallow import fields as f

from gateway import hookimpl
from gateway.errors import AuthenticationError, ConfigError
from gateway.setting_fields import setting
from gateway.store.base import GROUNDING_MODES, ApiKey
from gateway.types import CORE_PERMISSIONS, TIERS, Caller

logger = logging.getLogger(__name__)
_CACHE = "apikey.cache"
#: The store's change marker as this thread last saw it (markers of two connections do not compare).
_SEEN_MARKER = "apikey.seen_marker"
_TOUCHED = "apikey.touched"
#: The largest per-key limit a store can hold (SQLite and DynamoDB integers; far above any real limit).
MAX_RATE = 2**31 - 1
#: ``lastUsedAt`` is written at most this often per key, in seconds.
LAST_USED_INTERVAL = 60.0
#: The development pepper: a stage other than dev must set its own (``gateway_startup`` refuses it).
DEV_PEPPER = "dev-only-pepper-change-me-in-production"
#: The key's defaults for plugins, passed on in ``Caller.attributes`` when set: catalog context
#: injection (``catalog``) and the grounding check of its answers.
CALLER_ATTRIBUTES = ("mcp_context", "grounding")


def _limit(value: str) -> None:
    """Refuse what the ``limits`` library cannot parse as a limit."""
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValidationError('not a limit such as "20/minute" or "100/hour"') from None


@dataclass(frozen=True, repr=False, eq=False)
class ApiKeySettings:
    """The apikey plugin's settings (no ``repr``: it would print the pepper)."""

    key_pepper: str = setting(DEV_PEPPER, f.String(validate=validate.Length(min=16)),
                              "the server-side secret keys are hashed with", secret=True, shown="a dev-only value")
    key_cache_ttl: float = setting(5.0, f.Float(validate=validate.Range(min=0)),
                                   "seconds a worker reuses a validated key where the store cannot signal changes "
                                   "(DynamoDB): the bound on revocation there. On SQLite a revocation, rotation "
                                   "or permission change reaches every worker at its next request")
    failed_auth_limit: str = setting("20/minute", f.String(validate=_limit),
                                     "failed authentications per client address (a `limits` string) before a "
                                     "wrong key gets 429 instead of 401; a valid key is never refused")
    key_rotation_grace_seconds: float = setting(86_400.0, f.Float(validate=validate.Range(min=0)),
                                                "seconds a rotated-out key keeps working")


@hookimpl
def gateway_declare_settings():
    """The apikey plugin's settings."""
    return ApiKeySettings


@hookimpl
def gateway_startup(gateway):
    """Refuse the development pepper outside the dev stage: keys hashed with it would be guessable."""
    if gateway.settings.stage != "dev" and gateway.plugin_settings[ApiKeySettings].key_pepper == DEV_PEPPER:
        raise ConfigError(f"key_pepper: stage {gateway.settings.stage!r} needs its own pepper "
                          "(set GATEWAY_KEY_PEPPER to a secret of 16+ characters)")


def hash_secret(pepper: str, key_id: str, secret: str) -> str:
    """The stored form of a key's secret: HMAC-SHA256(pepper, key id + secret), hex."""
    return hmac.new(pepper.encode(), f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def parse_key(value: str) -> tuple[str, str] | None:
    """Split ``gw_<env>_<id>_<secret>`` into (key id, secret); None when it is not one of ours."""
    parts = value.split("_", 3)
    if len(parts) != 4 or parts[0] != "gw" or not parts[2] or len(parts[3]) < 20:
        return None
    return parts[2], parts[3]


def create_key(gateway, user_id: str, tier: str = "free", permissions: list[str] | None = None,
               name: str = "", expires_at: float | None = None,
               requests_per_minute: int | None = None, requests_per_hour: int | None = None,
               allowed_models: list[str] | None = None,
               mcp_context: bool | None = None,
               concurrent_requests: int | None = None,
               grounding: str | None = None) -> tuple[str, ApiKey]:
    """Create and store a key; returns (the plaintext key, shown once, and the stored record)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    env = "live" if gateway.settings.stage == "prod" else "test"
    key = ApiKey(key_id=key_id, user_id=user_id, tier=tier,
                 key_hash=hash_secret(gateway.plugin_settings[ApiKeySettings].key_pepper, key_id, secret),
                 permissions=sorted(permissions or ["completions"]), active=True,
                 created_at=time.time(), expires_at=expires_at, name=name,
                 requests_per_minute=requests_per_minute, requests_per_hour=requests_per_hour,
                 concurrent_requests=concurrent_requests,
                 allowed_models=sorted(allowed_models) if allowed_models is not None else None,
                 mcp_context=mcp_context, grounding=grounding)
    gateway.store.put_key(key)
    return f"gw_{env}_{key_id}_{secret}", key


def rotate_key(gateway, key_id: str) -> tuple[str, ApiKey] | None:
    """Replace a key by a new one with the same owner and settings; the old key keeps working
    for ``key_rotation_grace_seconds`` (it expires then). None when there is no such key."""
    old = gateway.store.get_key(key_id)
    if old is None:
        return None
    grace_end = time.time() + gateway.plugin_settings[ApiKeySettings].key_rotation_grace_seconds
    plaintext, new = create_key(gateway, old.user_id, old.tier, old.permissions,
                                old.name, old.expires_at, old.requests_per_minute,
                                old.requests_per_hour, old.allowed_models, old.mcp_context,
                                old.concurrent_requests, old.grounding)
    gateway.store.update_key(key_id, {"expires_at": min(old.expires_at or grace_end, grace_end)})
    forget_key(gateway, key_id)
    return plaintext, new


def forget_key(gateway, key_id: str) -> None:
    """Drop ``key_id`` from this process's key cache (after changing it here)."""
    gateway.state.get(_CACHE, {}).pop(key_id, None)


def presented_key(request) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    value = request.headers.get("X-API-Key")
    if value:
        return value.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _lookup(gateway, key_id: str) -> ApiKey | None:
    cache: dict[str, tuple[float, ApiKey]] = gateway.state.setdefault(_CACHE, {})
    marker = gateway.store.change_marker()
    if marker is not None:  # another worker may have revoked or changed a key: start afresh
        seen = gateway.state.get(_SEEN_MARKER) or gateway.state.setdefault(_SEEN_MARKER, threading.local())
        if getattr(seen, "marker", None) != marker:
            cache.clear()
            seen.marker = marker
    now = time.monotonic()
    hit = cache.get(key_id)
    if hit and hit[0] > now:
        return hit[1]
    key = gateway.store.get_key(key_id)
    if key is not None:
        cache[key_id] = (now + gateway.plugin_settings[ApiKeySettings].key_cache_ttl, key)
    return key


def _note_use(gateway, key: ApiKey) -> None:
    """Write ``lastUsedAt`` at most once a minute per key: once per process by a local clock,
    and across instances by the store's conditional write."""
    touched: dict[str, float] = gateway.state.setdefault(_TOUCHED, {})
    now = gateway.clock()
    if now - touched.get(key.key_id, 0.0) < LAST_USED_INTERVAL:
        return
    touched[key.key_id] = now
    try:
        gateway.store.touch_last_used(key.key_id, now, LAST_USED_INTERVAL)
    except Exception as exc:  # bookkeeping: never fail the request for it
        logger.warning("cannot record key use", extra={"key_id": key.key_id, "error": type(exc).__name__})


def caller_for(key: ApiKey) -> Caller:
    """The :class:`Caller` a stored key stands for."""
    return Caller(user_id=key.user_id, key_id=key.key_id, tier=key.tier,
                  permissions=frozenset(key.permissions),
                  requests_per_minute=key.requests_per_minute,
                  requests_per_hour=key.requests_per_hour,
                  concurrent_requests=key.concurrent_requests,
                  allowed_models=frozenset(key.allowed_models) if key.allowed_models is not None else None,
                  attributes={name: getattr(key, name) for name in CALLER_ATTRIBUTES
                              if getattr(key, name) is not None})


def verify_key(gateway, presented: str) -> Caller | None:
    """The caller of a presented key; None when it is not a gateway key at all.

    :raises AuthenticationError: a gateway key that is unknown, wrong, revoked or expired.
    """
    parsed = parse_key(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    key = _lookup(gateway, key_id)
    presented_hash = hash_secret(gateway.plugin_settings[ApiKeySettings].key_pepper, key_id, secret)
    if key is None or not hmac.compare_digest(key.key_hash, presented_hash):
        raise AuthenticationError("Invalid API key.")
    if not key.active:
        raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= gateway.clock():
        raise AuthenticationError("This API key has expired.", code="expired_api_key")
    _note_use(gateway, key)
    return caller_for(key)


@hookimpl(trylast=True)
def gateway_authenticate(request, gateway):
    """A :class:`Caller` for a valid gateway key; None when no gateway key was sent."""
    presented = presented_key(request)
    return verify_key(gateway, presented) if presented else None


@hookimpl(trylast=True)
def gateway_issue_key(gateway, user_id, tier, permissions, options):
    """A new gateway key (``options``: the keyword arguments of :func:`create_key`)."""
    return create_key(gateway, user_id, tier, list(permissions), **options)[0]


@hookimpl
def gateway_openapi(spec, gateway):
    """Document the key admin API."""
    from plugins.apikey_admin import document

    document(spec, gateway)


@hookimpl
def gateway_register_blueprints(app, gateway):
    """Add the key admin API (``plugins.apikey_admin``) and throttle failed authentications
    per client address (``plugins.failed_auth``: 429 after ``failed_auth_limit`` wrong keys)."""
    from plugins import apikey_admin
    from plugins.failed_auth import FailedAuthThrottle

    app.register_blueprint(apikey_admin.blueprint)
    FailedAuthThrottle(gateway.limiter.storage, gateway.plugin_settings[ApiKeySettings].failed_auth_limit,
                       presented_key).install(app)


def kept_key(gateway, path: str, user_id: str, tier: str, permissions: list[str]) -> tuple[str, ApiKey] | None:
    """The key saved in ``path`` (``keys create --keep``) while it still works and still has this owner,
    tier and these permissions; None otherwise (no file, or a key revoked, expired, unknown or changed)."""
    try:
        plaintext = Path(path).read_text().strip()
        caller = verify_key(gateway, plaintext)
    except (FileNotFoundError, AuthenticationError):
        return None
    key = gateway.store.get_key(caller.key_id) if caller is not None else None
    if key is None or (key.user_id, key.tier, key.permissions) != (user_id, tier, sorted(permissions)):
        return None
    return plaintext, key


def save_key(path: str, plaintext: str) -> None:
    """Write a key to ``path``, readable and writable by its owner only (mode 0600). The store keeps
    only its hash: this file is the owner's own copy."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.unlink(missing_ok=True)
    with os.fdopen(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(plaintext + "\n")


def public(key: ApiKey) -> dict:
    """A key as the admin API and the CLI show it: every field but the hash."""
    row = asdict(key)
    del row["key_hash"]
    return row


@hookimpl
def gateway_register_commands(cli):
    """Add ``gateway keys create|list|revoke|rotate``."""
    from gateway.cli_output import answer, json_option

    @cli.group()
    def keys():
        """Create, list and revoke API keys."""

    @keys.command("create")
    @click.option("--user", "user_id", required=True, help="Owner of the key.")
    @click.option("--tier", type=click.Choice(TIERS), default="free", show_default=True)
    @click.option("--permissions", default="completions", show_default=True,
                  help=f"Comma-separated, from: {', '.join(CORE_PERMISSIONS)} and those plugins declare.")
    @click.option("--name", default="", help="A label for the key.")
    @click.option("--concurrent-requests", type=click.IntRange(1, MAX_RATE), default=None,
                  help="Calls this key may have in flight at once (default: its tier's).")
    @click.option("--grounding", type=click.Choice(GROUNDING_MODES), default=None,
                  help="The catalog grounding check of this key's answers (default: the global setting).")
    @click.option("--keep", type=click.Path(dir_okay=False), default=None,
                  help="Reuse the key saved in this file while it works; else save the new key there (mode 0600).")
    @json_option
    @with_appcontext
    def create(user_id, tier, permissions, name, concurrent_requests, grounding, keep, as_json):
        """Create a key and print it (it is shown only this once)."""
        from gateway.app import current_gateway

        gateway = current_gateway()
        wanted = [p.strip() for p in permissions.split(",") if p.strip()]
        unknown = sorted(set(wanted) - set(gateway.permissions))
        if unknown or not wanted:
            raise click.BadParameter(f"unknown permission(s) {', '.join(unknown) or '(none given)'}; "
                                     f"choose from {', '.join(gateway.permissions)}", param_hint="--permissions")
        kept = kept_key(gateway, keep, user_id, tier, wanted) if keep else None
        if kept is None:
            plaintext, key = create_key(gateway, user_id, tier, wanted, name,
                                        concurrent_requests=concurrent_requests, grounding=grounding)
            if keep:
                save_key(keep, plaintext)
        else:
            plaintext, key = kept
        if as_json:
            click.echo(json.dumps({"key": plaintext, **({"kept_in": keep} if keep else {}), **public(key)}))
            return
        click.echo(f"key id {key.key_id} for {user_id} ({tier}): {plaintext}")
        if keep:
            click.echo(f"{'Reused' if kept else 'Saved'} in {keep} (mode 0600; delete it for a new key): "
                       "the gateway keeps only the key's hash.")
        else:
            click.echo("Store it now: the gateway keeps only its hash and cannot show it again.")

    @keys.command("list")
    @click.option("--user", "user_id", default=None, help="Only this user's keys.")
    @json_option
    @with_appcontext
    def list_(user_id, as_json):
        """List keys (never their secrets)."""
        from gateway.app import current_gateway

        rows = [public(k) for k in current_gateway().store.list_keys(user_id)]
        if as_json:
            click.echo(json.dumps(rows))
            return
        for row in rows:
            state = "active" if row["active"] else "revoked"
            click.echo(f"{row['key_id']}  {row['user_id']:<20} {row['tier']:<10} {state:<8} "
                       f"{','.join(row['permissions'])}")

    @keys.command("revoke")
    @click.argument("key_id")
    @json_option
    @with_appcontext
    def revoke(key_id, as_json):
        """Revoke a key by its id."""
        from gateway.app import current_gateway

        if not current_gateway().store.set_key_active(key_id, False):
            raise click.ClickException(f"no key with id {key_id!r} (see 'gateway keys list')")
        answer(as_json, {"revoked": key_id}, f"revoked {key_id}")

    @keys.command("rotate")
    @click.argument("key_id")
    @json_option
    @with_appcontext
    def rotate(key_id, as_json):
        """Issue a new key replacing KEY_ID; the old one works for the grace period."""
        from gateway.app import current_gateway

        gateway = current_gateway()
        rotated = rotate_key(gateway, key_id)
        if rotated is None:
            raise click.ClickException(f"no key with id {key_id!r} (see 'gateway keys list')")
        plaintext, key = rotated
        if as_json:
            click.echo(json.dumps({"key": plaintext, "replaces": key_id, **public(key)}))
        else:
            grace = gateway.plugin_settings[ApiKeySettings].key_rotation_grace_seconds
            click.echo(f"key id {key.key_id} replaces {key_id} (which works {grace:.0f} s more): {plaintext}")
            click.echo("Store it now: the gateway keeps only its hash and cannot show it again.")
