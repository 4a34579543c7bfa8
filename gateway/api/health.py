"""Public health routes: liveness, and readiness (store reachable, providers configured, circuits closed)."""
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
    """503 until the store answers and at least one provider is registered and configured; ``degraded``
    (still 200: other models answer) while a provider lacks its configuration (``unconfigured`` names
    the setting each needs, never a value) or a circuit breaker is open. Which breaker is an admin's
    detail (``/api/v1/admin/metrics``): the public page does not tell anyone when to strike again."""
    gateway = current_gateway()
    open_circuit = any(circuit["state"] != "closed" for circuit in gateway.resilience.circuits().values())
    unconfigured = gateway.unconfigured_providers()
    checks = {"store": "ok", "providers": sorted(gateway.providers) or "none registered",
              "circuits": "degraded" if open_circuit else "ok"}
    if unconfigured:
        checks["unconfigured"] = {name: f"set {what}" for name, what in sorted(unconfigured.items())}
    degraded = open_circuit or bool(unconfigured)
    healthy = len(gateway.providers) > len(unconfigured)
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
