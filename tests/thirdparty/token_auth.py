"""A replacement of the built-in ``apikey`` plugin, written only against the documented hooks.

Tokens look like ``tok-<id>-<secret>`` and are sent as ``X-Token`` or ``Authorization: Bearer``;
they live in the app's memory (``gateway.state``). ``POST /api/v1/admin/tokens`` issues one (the
core's admin guard requires ``admin``), ``GET /api/v1/tokens/me`` shows the caller (the ``tokens``
permission this plugin declares); both are in the OpenAPI document.
"""
from __future__ import annotations

import hmac
import secrets

from flask import Blueprint, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as f

from gateway import hookimpl
from gateway.errors import AuthenticationError, InvalidRequest
from gateway.types import TIERS, Caller, Declaration

PREFIX = "tok-"
_TOKENS = "token_auth.tokens"
blueprint = Blueprint("token_auth", __name__)


class TokenRequest(Schema):
    """The body of ``POST /api/v1/admin/tokens``."""

    class Meta:
        unknown = RAISE

    user_id = f.String(required=True, validate=validate.Length(min=1, max=64))
    tier = f.String(load_default="free", validate=validate.OneOf(TIERS))
    permissions = f.List(f.String(), load_default=["completions"])


class NewToken(Schema):
    """An issued token, shown once."""

    token = f.String(required=True)
    user_id = f.String(required=True)


def issue(gateway, user_id: str, tier: str, permissions, allowed_models=None) -> str:
    """A new token for ``user_id``, kept in this app's memory."""
    token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(16)
    caller = Caller(user_id=user_id, key_id=token_id, tier=tier, permissions=frozenset(permissions),
                    allowed_models=frozenset(allowed_models) if allowed_models is not None else None)
    gateway.state.setdefault(_TOKENS, {})[token_id] = (secret, caller)
    return f"{PREFIX}{token_id}-{secret}"


def _presented(request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return request.headers.get("X-Token") or (value.strip() if scheme.lower() == "bearer" else None)


@hookimpl
def gateway_authenticate(request, gateway):
    """The caller of a ``tok-`` token; None for any other credential."""
    token = _presented(request)
    if not token or not token.startswith(PREFIX):
        return None
    token_id, _, secret = token[len(PREFIX):].partition("-")
    stored = gateway.state.get(_TOKENS, {}).get(token_id)
    if stored is None or not hmac.compare_digest(stored[0], secret):
        raise AuthenticationError("Unknown token.", code="invalid_token")
    return stored[1]


@hookimpl
def gateway_issue_key(gateway, user_id, tier, permissions, options):
    """A token (``options``: ``allowed_models`` only)."""
    return issue(gateway, user_id, tier, permissions, **options)


@hookimpl
def gateway_declare():
    """The ``tokens`` permission of ``GET /api/v1/tokens/me``."""
    return Declaration(permissions=("tokens",))


@blueprint.post("/api/v1/admin/tokens")
def create_token():
    """Issue a token (the core's admin guard has checked ``admin``)."""
    from gateway.app import current_gateway

    gateway = current_gateway()
    try:
        body = TokenRequest().load(request.get_json(force=True, silent=True) or {})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid token request: {exc.messages}.", code="invalid_token_request") from None
    unknown = set(body["permissions"]) - set(gateway.permissions)
    if unknown:
        raise InvalidRequest(f"Unknown permissions: {', '.join(sorted(unknown))}.", code="invalid_token_request")
    token = issue(gateway, body["user_id"], body["tier"], body["permissions"])
    return jsonify({"token": token, "user_id": body["user_id"]}), 201


@blueprint.get("/api/v1/tokens/me")
def me():
    """The caller, for a token holding ``tokens``."""
    from gateway.app import current_gateway
    from gateway.pipeline import admit

    caller = admit(current_gateway(), request, "tokens")
    return jsonify({"user_id": caller.user_id, "tier": caller.tier, "permissions": sorted(caller.permissions)})


@hookimpl
def gateway_register_blueprints(app):
    """The token routes."""
    app.register_blueprint(blueprint)


@hookimpl
def gateway_openapi(spec):
    """Document the token routes."""
    from gateway.openapi import READ_ERRORS, WRITE_ERRORS, ok, operation

    spec.components.schema("TokenRequest", schema=TokenRequest)
    spec.components.schema("NewToken", schema=NewToken)
    spec.path(path="/api/v1/admin/tokens", operations={"post": operation(
        "Issue a token (admin).", ok("NewToken", "Created.", 201), WRITE_ERRORS, body="TokenRequest")})
    spec.path(path="/api/v1/tokens/me", operations={"get": operation(
        "The caller of this token.", ok(None, content={"application/json": {"schema": {"type": "object"}}}),
        READ_ERRORS)})
