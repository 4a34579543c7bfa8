"""The gateway's error family; each maps to one JSON envelope and one status.

Every error a caller sees is ``{"error": {"message", "type", "param", "code"}}``
(``param``: the request field at fault, or null), OpenAI's own shape. Messages say
what to fix and never carry a stack trace, an upstream URL or a secret.
"""
from __future__ import annotations

import math
import re

#: What an upstream's error text may carry that a caller must never see: credentials
#: (``sk-…``, ``gw_…`` keys, bearer tokens, ``api-key=…``) and URLs (upstream hosts).
_SECRETS_AND_URLS = re.compile(
    r"""\b(?:sk|gw|rk|pk)[-_][A-Za-z0-9_\-*]{6,}"""
    r"""|\bBearer\s+\S+"""
    r"""|\b(?:api[-_]?key|key|token|secret|password)\s*[=:]\s*['"]?[^\s'",;]+"""
    r"""|\b[a-z][a-z0-9+.\-]*://\S+""", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` with credentials and URLs replaced by ``[redacted]`` (for upstream error messages)."""
    return _SECRETS_AND_URLS.sub("[redacted]", text)


class GatewayError(Exception):
    """Base of every error that becomes an HTTP answer."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, param: str | None = None,
                 type_: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type = type_
        self.headers = headers or {}
        self.param = param

    def to_dict(self) -> dict:
        """The JSON envelope for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(GatewayError):
    """The body or parameters are wrong (400); ``param`` names the field when one is at fault."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class RequestTooLarge(InvalidRequest):
    """The body is over ``max_body_bytes``, as sent or decoded (413)."""

    status = 413
    code = "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    """The body is not JSON (415)."""

    status = 415
    code = "unsupported_media_type"


class AuthenticationError(GatewayError):
    """No usable credential (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    """The caller is known but may not do this (403)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    """The thing asked for does not exist, or is not the caller's (404)."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """No provider serves the requested model (404)."""

    code = "model_not_found"


class RateLimited(GatewayError):
    """Too many requests; carries ``Retry-After`` (429)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class ServiceUnavailable(GatewayError):
    """The gateway or a dependency it needs is not ready (503)."""

    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class AnswerRefused(GatewayError):
    """An answer check (``gateway_check_response``) refused the provider's answer (502): the answer
    came, but the gateway will not pass it on. ``code`` names the check's reason."""

    status = 502
    type = "answer_refused"
    code = "answer_refused"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None,
                 answer=None):
        super().__init__(message, code=code, headers=headers)
        #: The :class:`gateway.types.CheckedAnswer` refused (what the checks said of it).
        self.answer = answer


class ProviderError(GatewayError):
    """An upstream provider failed (502). ``retryable`` tells the retry loop whether to try again."""

    status = 502
    type = "provider_error"
    code = "provider_error"

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None,
                 code: str | None = None, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message, code=code, status=status, headers=headers)
        self.retryable = retryable
        self.retry_after = retry_after


class ProviderRateLimited(ProviderError):
    """The upstream answered 429: retried by the gateway first; once retries and fallbacks are
    spent the caller gets a 429 with ``Retry-After``, so its client backs off too."""

    status = 429
    type = "rate_limit_error"
    code = "provider_rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None):
        wait = max(1, math.ceil(retry_after)) if retry_after else 1
        super().__init__(message, retryable=True, retry_after=retry_after,
                         headers={"Retry-After": str(wait)})


class ProviderTimeout(ProviderError):
    """An upstream provider did not answer in time (504)."""

    status = 504
    code = "provider_timeout"

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class UpstreamRejected(ProviderError):
    """The provider refused the request itself (its 4xx other than 429): the caller's to fix.

    400 by default; an upstream's own 4xx keeps its status, and its error's ``type``,
    ``param`` and ``code`` when it gave them (the message scrubbed of keys and URLs).
    """

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None,
                 code: str | None = None, type_: str | None = None):
        super().__init__(message, retryable=False, status=status, code=code)
        self.param = param
        if type_ is not None:
            self.type = type_


class ConfigError(Exception):
    """A setting is unknown or malformed; start-up stops with this message."""
