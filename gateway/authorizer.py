"""The API Gateway Lambda TOKEN authorizer, and the app's side of its context.

Zappa wires it up with ``"authorizer": {"function": "gateway.authorizer.handler",
"token_header": "X-API-Key"}``. It validates the key with the same hook the app
uses (``gateway_authenticate``) and answers an IAM policy: Allow with the caller in
the context (userId, apiKeyId, tier, permissions, limits), or Deny.

Behind it, Zappa passes the API Gateway event to the app in the WSGI environ
(``environ["lambda.event"]``, set by ``zappa.handler.LambdaHandler``); an HTTP
client cannot set environ keys, so a caller found there came through API Gateway
and its authorizer. :func:`caller_from_authorizer` turns that context back into a
:class:`Caller` so the app does not look the key up a second time.
"""
from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from gateway.errors import GatewayError
from gateway.types import Caller

logger = logging.getLogger(__name__)

#: The context keys the authorizer sets; all must be present for the app to trust it.
CONTEXT_KEYS = ("userId", "apiKeyId", "tier", "permissions")


def caller_context(caller: Caller) -> dict[str, str]:
    """A caller as authorizer context (API Gateway allows only flat string/number/bool values)."""
    context = {"userId": caller.user_id, "apiKeyId": caller.key_id, "tier": caller.tier,
               "permissions": ",".join(sorted(caller.permissions))}
    if caller.requests_per_minute is not None:
        context["requestsPerMinute"] = str(caller.requests_per_minute)
    if caller.requests_per_hour is not None:
        context["requestsPerHour"] = str(caller.requests_per_hour)
    if caller.allowed_models is not None:
        context["allowedModels"] = json.dumps(sorted(caller.allowed_models))
    if caller.mcp_context is not None:
        context["mcpContext"] = "true" if caller.mcp_context else "false"
    return context


def caller_from_authorizer(environ: dict[str, Any], presented_key: str) -> Caller | None:
    """The caller the authorizer vouched for, or None when the request did not come through it.

    The key sent with the request must be the one the authorizer saw (same key id).
    """
    event = environ.get("lambda.event")
    context = (event or {}).get("requestContext", {}).get("authorizer") if isinstance(event, dict) else None
    if not isinstance(context, dict) or not all(context.get(name) for name in CONTEXT_KEYS):
        return None
    parts = presented_key.split("_", 3)
    if len(parts) != 4 or parts[2] != context["apiKeyId"]:
        return None

    def optional_int(name: str) -> int | None:
        return int(context[name]) if context.get(name) not in (None, "") else None

    allowed = context.get("allowedModels")
    return Caller(user_id=context["userId"], key_id=context["apiKeyId"], tier=context["tier"],
                  permissions=frozenset(p for p in context["permissions"].split(",") if p),
                  requests_per_minute=optional_int("requestsPerMinute"),
                  requests_per_hour=optional_int("requestsPerHour"),
                  allowed_models=frozenset(json.loads(allowed)) if allowed else None,
                  mcp_context={"true": True, "false": False}.get(context.get("mcpContext")))


@cache
def _gateway():
    """The Gateway of this Lambda container, built on the first invocation and reused."""
    from gateway.app import create_app

    return create_app().extensions["gateway"]


def _policy(principal: str, effect: str, method_arn: str, context: dict[str, str] | None = None) -> dict:
    # Authorizer results are cached by token for the whole API: allow every method of it.
    api = "/".join(method_arn.split("/")[:2]) if "/" in method_arn else method_arn
    policy: dict[str, Any] = {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": f"{api}/*/*"}]},
    }
    if context:
        policy["context"] = context
    return policy


def authorize(gateway, token: str, method_arn: str) -> dict:
    """The policy for ``token``: Allow with the caller as context, or Deny."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    request = Request(EnvironBuilder(headers={"X-API-Key": token}).get_environ())
    try:
        caller = gateway.hook.gateway_authenticate(request=request, gateway=gateway)
    except GatewayError as exc:
        logger.info("authorizer denied a key", extra={"error_code": exc.code})
        caller = None
    if caller is None:
        return _policy("anonymous", "Deny", method_arn)
    return _policy(caller.user_id, "Allow", method_arn, caller_context(caller))


def handler(event: dict, context: Any = None) -> dict:
    """The Lambda entry point for an API Gateway TOKEN authorizer event."""
    return authorize(_gateway(), event.get("authorizationToken", "") or "", event.get("methodArn", ""))
