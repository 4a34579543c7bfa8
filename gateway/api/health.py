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
    """503 until the store answers and at least one provider is registered; ``degraded`` (still 200:
    fallbacks may answer) while a circuit breaker is open. Which one is an admin's detail
    (``/api/v1/admin/metrics``): the public page does not tell anyone when to strike again."""
    gateway = current_gateway()
    degraded = any(circuit["state"] != "closed" for circuit in gateway.resilience.circuits().values())
    checks = {"store": "ok", "providers": sorted(gateway.providers) or "none registered",
              "circuits": "degraded" if degraded else "ok"}
    healthy = bool(gateway.providers)
    try:
        gateway.store.ping()
    except Exception as exc:
        logger.warning("store not reachable", extra={"error": type(exc).__name__})
        checks["store"] = "unreachable"
        healthy = False
    status = "unavailable" if not healthy else "degraded" if degraded else "ok"
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 200 if healthy else 503
    return response
