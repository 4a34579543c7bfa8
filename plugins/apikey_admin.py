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
from gateway.store.base import GROUNDING_MODES, ApiKey
from gateway.types import TIERS
from plugins.apikey import MAX_RATE, create_key, forget_key, public, rotate_key

blueprint = Blueprint("admin_keys", __name__, url_prefix=f"{ADMIN_PREFIX}/keys")


def _grounding(**options) -> f.String:
    """A key's ``grounding`` field."""
    return f.String(allow_none=True, validate=validate.OneOf(GROUNDING_MODES), metadata={
        "description": "What the catalog grounding check does with this key's answers: off, annotate (say what "
                       "it found) or block (refuse an answer the catalog contradicts); null follows the global "
                       "setting."}, **options)


def _future(value: float) -> None:
    if value <= time.time():
        raise ValidationError("Must be in the future (epoch seconds).")


class KeyChangeSchema(Schema):
    """What ``PATCH /api/v1/admin/keys/<id>`` may change."""

    class Meta:
        unknown = RAISE

    tier = f.String(validate=validate.OneOf(TIERS))
    #: Checked against the app's permissions by the schemas of :func:`key_schemas`.
    permissions = f.List(f.String(), validate=validate.Length(min=1))
    active = f.Boolean()
    name = f.String(validate=validate.Length(max=128))
    expires_at = f.Float(allow_none=True, validate=_future)
    requests_per_minute = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    requests_per_hour = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    #: Calls in flight at once; null follows the tier's ``concurrent_requests``.
    concurrent_requests = f.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_RATE))
    allowed_models = f.List(f.String(validate=validate.Length(min=1, max=256)), allow_none=True)
    mcp_context = f.Boolean(allow_none=True)
    grounding = _grounding()


class KeyCreateSchema(KeyChangeSchema):
    """``POST /api/v1/admin/keys``: the owner, and any of the changeable fields."""

    user_id = f.String(required=True, validate=validate.Length(min=1, max=128))


_SCHEMAS = "apikey.schemas"


def key_schemas(gateway) -> tuple[Schema, Schema]:
    """This app's (create, change) schemas: a permission must be one of ``gateway.permissions``
    (the core's and those plugins declare). Built once per app."""
    schemas = gateway.state.get(_SCHEMAS)
    if schemas is None:
        permissions = {"permissions": f.List(f.String(validate=validate.OneOf(gateway.permissions)),
                                             validate=validate.Length(min=1))}
        schemas = gateway.state[_SCHEMAS] = (
            KeyCreateSchema.from_dict(permissions, name="KeyCreate")(exclude=("active",)),
            KeyChangeSchema.from_dict(permissions, name="KeyChange")())
    return schemas


def _load(schema: Schema) -> dict:
    try:
        data = schema.load(read_json_body())
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                             for name, messages in sorted(exc.messages.items()))
        at_fault = [name for name in exc.messages if not name.startswith("_")]  # not "_schema": the body itself
        raise InvalidRequest(f"Invalid key fields: {problems.replace('Unknown field.', 'may not be set')}.",
                             code="invalid_key_fields", param=at_fault[0] if len(at_fault) == 1 else None) from None
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
    data = _load(key_schemas(current_gateway())[0])
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
    data = _load(key_schemas(gateway)[1])
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


#: Field types of the stored key, as annotated on ``ApiKey``, and their marshmallow fields.
_KEY_FIELD_TYPES = {"str": f.String, "float": f.Float, "int": f.Integer, "bool": f.Boolean,
                    "list[str]": lambda **options: f.List(f.String(), **options)}


def _key_view_fields(gateway) -> dict[str, f.Field]:
    """Every field of a stored key but its hash, typed from ``ApiKey`` itself: the document follows
    the store's record without a second list to keep in step."""
    from dataclasses import fields as dataclass_fields

    view = {}
    for field in dataclass_fields(ApiKey):
        if field.name == "key_hash":
            continue
        base, _, rest = str(field.type).partition(" | ")
        view[field.name] = _KEY_FIELD_TYPES[base](required=True, allow_none=rest == "None")
    view["tier"] = f.String(required=True, metadata={"enum": list(TIERS)})
    view["permissions"] = f.List(f.String(metadata={"enum": list(gateway.permissions)}), required=True)
    view["grounding"] = _grounding(required=True)
    return view


class KeyListQuery(Schema):
    """Keys of one user."""

    user_id = f.String()


def document(spec, gateway) -> None:
    """Add the key admin routes and their schemas to the OpenAPI ``spec`` (``gateway_openapi``)."""
    from gateway.openapi import READ_ERRORS, WRITE_ERRORS, ok, operation

    key_view = Schema.from_dict(_key_view_fields(gateway), name="KeyView")
    new_key = key_view.from_dict({"key": f.String(required=True), "replaces": f.Nested(key_view)}, name="NewKey")
    create, change = key_schemas(gateway)
    for name, schema, rules in (
            ("KeyView", key_view, None), ("NewKey", new_key, None),
            ("KeyListing", Schema.from_dict({"data": f.List(f.Nested(key_view), required=True)}), None),
            ("KeyCreate", create, None), ("KeyChange", change, {"minProperties": 1})):
        spec.components.schema(name, rules, schema=schema)
    base = f"{ADMIN_PREFIX}/keys"
    missing = (401, 403, 404, 429, 503)
    spec.path(path=base, operations={
        "get": operation("List keys (admin).", ok("KeyListing"), READ_ERRORS, query="KeyListQuery"),
        "post": operation("Create a key; its plaintext is shown once (admin).", ok("NewKey", "Created.", 201),
                          WRITE_ERRORS, body="KeyCreate")})
    spec.path(path=f"{base}/{{key_id}}", operations={
        "get": operation("One key (admin).", ok("KeyView"), missing, path=("key_id",)),
        "patch": operation("Change a key (admin).", ok("KeyView"), WRITE_ERRORS, body="KeyChange",
                           path=("key_id",)),
        "delete": operation("Revoke a key (admin).", ok("KeyView"), missing, path=("key_id",))})
    spec.path(path=f"{base}/{{key_id}}/rotate", operations={"post": operation(
        "Issue a new key for the same owner; the old one expires after the grace period (admin).",
        ok("NewKey", "Created.", 201), missing, path=("key_id",))})
