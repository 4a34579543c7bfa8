"""Public health routes: liveness, and readiness (store reachable, providers configured)."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from gateway.app import current_gateway

logger = logging.getLogger(__name__)
blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@blueprint.get("/api/v1/health/live")
def live():
    """The process answers."""
    return jsonify({"status": "ok"})


@blueprint.get("/api/v1/health/ready")
def ready():
    """503 until the store answers and at least one provider is registered; also each circuit
    breaker's state (an open circuit is reported, not fatal: fallbacks may still answer)."""
    gateway = current_gateway()
    checks = {"store": "ok", "providers": sorted(gateway.providers) or "none registered",
              "circuits": gateway.resilience.circuits()}
    healthy = bool(gateway.providers)
    try:
        gateway.store.ping()
    except Exception as exc:
        logger.warning("store not reachable", extra={"error": type(exc).__name__})
        checks["store"] = "unreachable"
        healthy = False
    response = jsonify({"status": "ok" if healthy else "unavailable", "checks": checks})
    response.status_code = 200 if healthy else 503
    return response
