"""The admin guard: every route under ``/api/v1/admin``, whoever registered it, needs ``admin``.

Checked before routing, for every method (401 without a key, 403 without the
permission), so that even a wrong method or an unknown admin path learns nothing.
The admin routes themselves belong to their plugins (keys: ``plugins.apikey_admin``;
catalog: ``plugins.catalog_admin``) or to ``gateway.api.usage``.
"""
from __future__ import annotations

from flask import Blueprint, request

from gateway import pipeline
from gateway.app import current_gateway

ADMIN_PREFIX = "/api/v1/admin"
blueprint = Blueprint("admin", __name__)


@blueprint.before_app_request
def _require_admin() -> None:
    """Every method of every route under /api/v1/admin needs the admin permission."""
    if request.path == ADMIN_PREFIX or request.path.startswith(f"{ADMIN_PREFIX}/"):
        pipeline.admit(current_gateway(), request, "admin")
