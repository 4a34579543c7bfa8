"""The API Gateway Lambda REQUEST authorizer, and the app's side of its context.

``cloudformation/api.yaml`` puts it in front of every route but ``OPTIONS`` preflights; it
allows the app's public routes (:data:`PUBLIC_PATHS`) without a key. A REQUEST authorizer
sees the request's headers and path, so a key is accepted in ``X-API-Key`` and in
``Authorization: Bearer`` alike (a TOKEN authorizer reads one header only). It asks the auth
plugins about the request's headers with the same hook the app uses (``gateway_authenticate``),
on the app Zappa's handler serves in this container
(:func:`_gateway`: one app per container), and answers an IAM policy: Allow for the
one method called, with the caller in the context (userId, apiKeyId, tier,
permissions, limits), or Deny. A Deny, for a missing credential too, counts in the
``AuthFailures`` metric; API Gateway answers it with the 401 envelope of api.yaml.
The authorizer's results are not cached (TTL 0): a revoked key is refused after at
most ``key_cache_ttl`` seconds, the app's own bound.

Behind it, Zappa passes the API Gateway event to the app in the WSGI environ
(``environ["lambda.event"]``, set by ``zappa.handler.LambdaHandler``); an HTTP
client cannot set environ keys, so a caller found there came through API Gateway
and its authorizer. :func:`caller_from_authorizer` turns that context back into a
:class:`Caller` (``gateway.pipeline.authenticate``) so the app does not ask the auth plugins a
second time.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from gateway.errors import GatewayError
from gateway.types import Caller

logger = logging.getLogger(__name__)

#: The context keys the authorizer sets; all must be present for the app to trust it.
CONTEXT_KEYS = ("userId", "apiKeyId", "tier", "permissions")
#: The app's routes that need no key (health checks, the dashboard page that asks for one, the
#: OpenAPI document), allowed without a key for GET and HEAD. Exact paths only: a path the app would
#: normalise differently is not public here.
PUBLIC_PATHS = frozenset({"/health", "/api/v1/health/live", "/api/v1/health/ready", "/dashboard", "/openapi.json"})
PUBLIC_PREFIXES = ("/dashboard/static/",)
#: The request headers that may carry a key (names compared case-insensitively).
CREDENTIAL_HEADERS = ("x-api-key", "authorization")
#: The caller's correlation id, as the app accepts it (``gateway.http``); anything else is replaced
#: by API Gateway's request id, so the access log and the app's log share one id.
CORRELATION_HEADER = "x-correlation-id"
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def caller_context(caller: Caller) -> dict[str, str]:
    """A caller as authorizer context (API Gateway allows only flat string/number/bool values)."""
    context = {"userId": caller.user_id, "apiKeyId": caller.key_id, "tier": caller.tier,
               "permissions": ",".join(sorted(caller.permissions))}
    if caller.requests_per_minute is not None:
        context["requestsPerMinute"] = str(caller.requests_per_minute)
    if caller.requests_per_hour is not None:
        context["requestsPerHour"] = str(caller.requests_per_hour)
    if caller.concurrent_requests is not None:
        context["concurrentRequests"] = str(caller.concurrent_requests)
    if caller.allowed_models is not None:
        context["allowedModels"] = json.dumps(sorted(caller.allowed_models))
    if caller.attributes:
        context["attributes"] = json.dumps(caller.attributes, sort_keys=True)
    return context


def caller_from_authorizer(environ: dict[str, Any]) -> Caller | None:
    """The caller the authorizer vouched for, or None when the request did not come through it
    (or came as a public route's, without a caller).

    API Gateway sets the context for the very request it passes on, after the authorizer asked the
    auth plugins about that request's credential: nothing of the credential is parsed here, so any
    auth plugin works behind the authorizer.
    """
    event = environ.get("lambda.event")
    if event is None:
        return None
    context = event.get("requestContext", {}).get("authorizer") if isinstance(event, dict) else None
    if not isinstance(context, dict) or not all(context.get(name) for name in CONTEXT_KEYS):
        return None

    def optional_int(name: str) -> int | None:
        return int(context[name]) if context.get(name) not in (None, "") else None

    allowed = context.get("allowedModels")
    return Caller(user_id=context["userId"], key_id=context["apiKeyId"], tier=context["tier"],
                  permissions=frozenset(p for p in context["permissions"].split(",") if p),
                  requests_per_minute=optional_int("requestsPerMinute"),
                  requests_per_hour=optional_int("requestsPerHour"),
                  concurrent_requests=optional_int("concurrentRequests"),
                  allowed_models=frozenset(json.loads(allowed)) if allowed else None,
                  attributes=json.loads(context["attributes"]) if context.get("attributes") else {})


def _gateway():
    """The Gateway of the app Zappa's handler serves (``gateway.wsgi.app``): imported once per
    container, whichever of the authorizer and the handler runs first; never a second app."""
    from gateway.wsgi import app

    return app.extensions["gateway"]


def _policy(principal: str, effect: str, method_arn: str, context: dict[str, str] | None = None) -> dict:
    # Results are not cached (api.yaml: TTL 0), so the policy names exactly the method called.
    policy: dict[str, Any] = {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}]},
    }
    if context:
        policy["context"] = context
    return policy


def _request_headers(event: dict) -> dict[str, str]:
    """The request's headers, lower-cased names (API Gateway passes them as the client wrote them)."""
    headers = event.get("headers") or {}
    return {str(name).lower(): value for name, value in headers.items() if isinstance(value, str)}


def correlation_id(event: dict, headers: dict[str, str]) -> str:
    """The caller's correlation id when the app would accept it, else API Gateway's request id."""
    given = headers.get(CORRELATION_HEADER, "")
    if _VALID_CORRELATION_ID.match(given):
        return given
    return str((event.get("requestContext") or {}).get("requestId") or "")


def is_public(event: dict) -> bool:
    """Whether the request is a GET or HEAD of one of the app's public routes."""
    path = event.get("path") or ""
    return event.get("httpMethod") in ("GET", "HEAD") and (path in PUBLIC_PATHS or (
        path.startswith(PUBLIC_PREFIXES) and ".." not in path and "//" not in path))


def authorize(gateway, event: dict) -> dict:
    """The policy for a REQUEST authorizer event: Allow for a public route; Allow with the caller as
    context; or Deny (counted in ``AuthFailures``: no credential, or one that is invalid, revoked or
    expired)."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from gateway.metrics import count_auth_failure

    headers = _request_headers(event)
    method_arn = event.get("methodArn", "")
    if is_public(event):  # a key sent anyway is checked by the app itself
        return _policy("public", "Allow", method_arn, {"correlationId": correlation_id(event, headers)})
    request = Request(EnvironBuilder(path=event.get("path") or "/", method=event.get("httpMethod") or "GET",
                                     headers=headers).get_environ())
    try:
        caller = gateway.hook.gateway_authenticate(request=request, gateway=gateway)
    except GatewayError as exc:
        logger.info("authorizer denied a key", extra={"error_code": exc.code})
        caller = None
    if caller is None:
        if not any(name in headers for name in CREDENTIAL_HEADERS):
            logger.info("authorizer denied a request without a key")
        count_auth_failure(gateway)
        return _policy("anonymous", "Deny", method_arn)
    context = {**caller_context(caller), "correlationId": correlation_id(event, headers)}
    return _policy(caller.user_id, "Allow", method_arn, context)


def is_authorizer_event(event: Any) -> bool:
    """Whether ``event`` is what API Gateway sends a REQUEST authorizer (not a proxied request)."""
    return isinstance(event, dict) and event.get("type") == "REQUEST" and "methodArn" in event


def handler(event: dict, context: Any = None) -> dict:
    """The authorizer's entry point, for an API Gateway REQUEST authorizer event."""
    return authorize(_gateway(), event)


def lambda_handler(event: Any, context: Any) -> Any:
    """The function's Lambda handler (``lambda_handler`` in zappa_settings.json): authorizer
    events to :func:`handler`, every other event to Zappa's own handler. Zappa's handler would
    take a REQUEST authorizer event for a request (it carries ``httpMethod``) and serve it."""
    if is_authorizer_event(event):
        return handler(event, context)
    from zappa.handler import lambda_handler as zappa_lambda_handler

    return zappa_lambda_handler(event, context)
