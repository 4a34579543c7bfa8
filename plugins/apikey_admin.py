"""Key administration (``/api/v1/admin/keys``): create, list, show, change, rotate and revoke keys.

Registered by the apikey plugin (it owns the keys); the core's admin guard
(``gateway/api/admin.py``) has already required the ``admin`` permission for every
route and method under ``/api/v1/admin``. Bodies are validated by marshmallow and
unknown fields are refused: a caller can never set a key's hash, id or owner.
Answers never contain a key's hash; a new key's plaintext is shown once, on creation.
"""
from __future__ import annotations

import time

from flask import Blueprint, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as f

from gateway.api.admin import ADMIN_PREFIX
from gateway.app import current_gateway
from gateway.errors import InvalidRequest, NotFound
from gateway.http import read_json_body
from gateway.store.base import ApiKey
from gateway.types import PERMISSIONS, TIERS
from plugins.apikey import MAX_RATE, create_key, forget_key, public, rotate_key

blueprint = Blueprint("admin_keys", __name__, url_prefix=f"{ADMIN_PREFIX}/keys")


def _future(value: float) -> None:
    if value <= time.time():
        raise ValidationError("Must be in the future (epoch seconds).")


class KeyChangeSchema(Schema):
    """What ``PATCH /api/v1/admin/keys/<id>`` may change."""

    class Meta:
        unknown = RAISE

    tier = f.String(validate=validate.OneOf(TIERS))
    permissions = f.List(f.String(validate=validate.OneOf(PERMISSIONS)), validate=validate.Length(min=1))
    active = f.Boolean()
    name = f.String(validate=validate.Length(max=128))
    expires_at = f.Float(allow_none=True, validate=_future)
    requests_per_minute = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    requests_per_hour = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    #: Calls in flight at once; null follows the tier's ``concurrent_requests``.
    concurrent_requests = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    allowed_models = f.List(f.String(validate=validate.Length(min=1, max=256)), allow_none=True)
    mcp_context = f.Boolean(allow_none=True)


class KeyCreateSchema(KeyChangeSchema):
    """``POST /api/v1/admin/keys``: the owner, and any of the changeable fields."""

    user_id = f.String(required=True, validate=validate.Length(min=1, max=128))


_CREATE = KeyCreateSchema(exclude=("active",))
_CHANGE = KeyChangeSchema()


def _load(schema: Schema) -> dict:
    try:
        data = schema.load(read_json_body())
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                             for name, messages in sorted(exc.messages.items()))
        raise InvalidRequest(f"Invalid key fields: {problems.replace('Unknown field.', 'may not be set')}.",
                             code="invalid_key_fields") from None
    if "permissions" in data:
        data["permissions"] = sorted(set(data["permissions"]))
    return data


def _key_or_404(key_id: str) -> ApiKey:
    key = current_gateway().store.get_key(key_id)
    if key is None:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found")
    return key


@blueprint.post("")
def create():
    """Create a key; the answer holds the plaintext key, shown only this once (201)."""
    data = _load(_CREATE)
    plaintext, key = create_key(current_gateway(), data.pop("user_id"), **data)
    response = jsonify({"key": plaintext, **public(key)})
    response.status_code = 201
    return response


@blueprint.get("")
def list_keys():
    """Every key, or one user's (``?user_id=``), oldest first."""
    user_id = request.args.get("user_id")
    return jsonify({"data": [public(k) for k in current_gateway().store.list_keys(user_id or None)]})


@blueprint.get("/<key_id>")
def show(key_id: str):
    """One key."""
    return jsonify(public(_key_or_404(key_id)))


@blueprint.patch("/<key_id>")
def change(key_id: str):
    """Change a key's tier, limits, permissions, models, expiry, name or active flag."""
    gateway = current_gateway()
    data = _load(_CHANGE)
    if not data:
        raise InvalidRequest("Nothing to change: send at least one field.", code="invalid_key_fields")
    key = gateway.store.update_key(key_id, data)
    if key is None:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found")
    forget_key(gateway, key_id)
    return jsonify(public(key))


@blueprint.post("/<key_id>/rotate")
def rotate(key_id: str):
    """Issue a new key for the same owner and settings; the old one expires after the grace period."""
    rotated = rotate_key(current_gateway(), key_id)
    if rotated is None:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found")
    plaintext, key = rotated
    response = jsonify({"key": plaintext, "replaces": public(_key_or_404(key_id)), **public(key)})
    response.status_code = 201
    return response


@blueprint.delete("/<key_id>")
def revoke(key_id: str):
    """Revoke a key (it stays listed, inactive); other instances stop accepting it within the cache TTL."""
    gateway = current_gateway()
    if not gateway.store.set_key_active(key_id, False):
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found")
    forget_key(gateway, key_id)
    return jsonify(public(_key_or_404(key_id)))
