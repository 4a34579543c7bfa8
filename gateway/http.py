"""HTTP plumbing shared by every route: request and correlation ids, the error envelope, JSON bodies, CORS."""
from __future__ import annotations

import json
import logging
import re
import uuid
import zlib
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import import_string

from gateway.config import Settings
from gateway.errors import GatewayError, InvalidRequest, RequestTooLarge, UnsupportedMediaType

logger = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
#: The request's own id (the request log's ``request_id``), on every answer as OpenAI sends its own.
REQUEST_ID_HEADER = "x-request-id"
#: How deep a body may nest objects and arrays (deeper: 400 ``too_deeply_nested``).
MAX_NESTING = 64
#: A ``\uD800``-``\uDFFF`` escape in raw JSON: the only way a lone surrogate gets into a body.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: werkzeug's HTTP errors -> our (type, code).
_HTTP_CODES = {
    400: ("invalid_request_error", "bad_request"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


class LazyView:
    """A view function imported on its route's first request (Flask's "lazily loading views" pattern).

    For routes a cold start's first completion never calls (MCP, catalog admin, the
    OpenAPI document): their modules, and what those import, load when first needed.
    """

    def __init__(self, import_name: str):
        """``import_name``: the view as ``package.module.function``."""
        self.import_name = import_name
        self._view = None

    def __call__(self, **arguments: Any) -> Any:
        if self._view is None:
            self._view = import_string(self.import_name)
        return self._view(**arguments)


def error_response(status: int, message: str, type_: str, code: str,
                   headers: dict[str, str] | None = None, param: str | None = None) -> Response:
    """The one JSON error envelope (OpenAI's: ``message``, ``type``, ``param``, ``code``)."""
    response = jsonify({"error": {"message": message, "type": type_, "param": param, "code": code}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _gateway_error(exc: GatewayError) -> Response:
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers, exc.param)


def _http_error(exc: HTTPException) -> Response:
    type_, code = _HTTP_CODES.get(exc.code or 500, ("server_error", "http_error"))
    message = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        message = f"Request body is larger than the limit of {limit} bytes."
    elif exc.code == 404:
        message = f"No route for {request.method} {request.path}."
    elif exc.code == 405:
        allowed = ", ".join(exc.valid_methods or [])
        message = f"Method {request.method} is not allowed on {request.path}; use {allowed}."
    response = error_response(exc.code or 500, message, type_, code)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected_error(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, f"Internal error; quote correlation id {g.get('correlation_id')} "
                          "when reporting it.", "server_error", "internal_error")


def _assign_ids() -> None:
    g.request_id = uuid.uuid4().hex
    given = request.headers.get(CORRELATION_HEADER, "")
    g.correlation_id = given if _VALID_CORRELATION_ID.match(given) else g.request_id


def _drain_unread_body() -> None:
    """Read what is left of a request body of a stated length within the limit before answering.

    The gateway answers some requests without reading their body (a 401 or 429 comes before the
    body is parsed). granian then sometimes closes the kept-alive connection after the answer
    without saying so, and a client that reuses it for its next request gets a disconnect with no
    answer: 16 in 3,000 requests from 8 threads sharing a pool, all after 429s, none after 200s.
    Reading a body of a known length, at most ``max_body_bytes``, keeps the connection usable; a
    larger one is left unread (a 413), and its connection may close.
    """
    length = request.content_length
    if length and (request.max_content_length is None or length <= request.max_content_length):
        request.stream.exhaust()


def _finish(response: Response) -> Response:
    _drain_unread_body()
    response.headers[CORRELATION_HEADER] = g.get("correlation_id", "")
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


#: The answer headers of the core that browsers of ``cors_origins`` may read.
EXPOSED_HEADERS = (CORRELATION_HEADER, REQUEST_ID_HEADER, "X-Gateway-Provider", "X-Gateway-Model", "X-Cache",
                   "Retry-After")


def install(app: Flask, settings: Settings, expose_headers: tuple[str, ...] = ()) -> None:
    """Attach correlation ids, security headers, error handlers and CORS to ``app``.

    ``expose_headers``: the answer headers plugins declared, exposed to browsers beside the core's.

    Repeated slashes are not merged: werkzeug answers them with a redirect to an absolute URL
    built from the request's ``Host`` header, which a caller controls; they are a 404 instead.
    """
    app.url_map.merge_slashes = False
    app.before_request(_assign_ids)
    app.after_request(_finish)
    app.register_error_handler(GatewayError, _gateway_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    if settings.cors_origins:
        from flask_cors import CORS

        CORS(app, origins=settings.cors_origins, supports_credentials=False,
             expose_headers=[*EXPOSED_HEADERS, *expose_headers])


def read_json_body() -> dict[str, Any]:
    """The request body as a JSON object, or the right error (415, 413, 400).

    ``Content-Encoding: gzip`` and ``deflate`` bodies are decoded; the size limit
    (``max_body_bytes``) applies to the decoded body too, so a small bomb is a 413.
    Text that cannot be encoded as UTF-8 (a lone surrogate escape such as
    ``"\\ud800"``, what a JavaScript client sends when it cuts an emoji in half) is a
    400 here, before any provider is called.
    """
    if not request.is_json:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'}.")
    limit = request.max_content_length
    raw = read_body(limit)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding != "identity":
        raw = decode_body(raw, encoding, limit)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Body is not valid JSON: {exc}.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest(f"Body is nested more than {MAX_NESTING} levels deep.", code="too_deeply_nested") \
            from None
    if not isinstance(body, dict):
        raise InvalidRequest("Body must be a JSON object.", code="invalid_json")
    if nested_deeper_than(body, MAX_NESTING):
        raise InvalidRequest(f"Body is nested more than {MAX_NESTING} levels deep.", code="too_deeply_nested")
    if _SURROGATE_ESCAPE.search(raw):
        refuse_lone_surrogates(body)
    return body


def read_body(limit: int | None) -> bytes:
    """The raw body, at most ``limit`` bytes (413 past it), whether it came with a Content-Length or
    chunked: for a chunked body werkzeug stops reading at the limit without a word, so the JSON
    would be cut (a 400, or a 200 when the cut happened to parse)."""
    if request.content_length is not None or limit is None:
        try:
            return request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise too_large(limit) from None
    stream = request.environ["wsgi.input"]
    pieces, size = [], 0
    while size <= limit:
        piece = stream.read(min(65536, limit + 1 - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    if size > limit:
        raise too_large(limit)
    return b"".join(pieces)


def too_large(limit: int | None) -> RequestTooLarge:
    """The 413 for a body over ``limit`` bytes."""
    return RequestTooLarge(f"Request body is larger than the limit of {limit} bytes.")


#: zlib's ``wbits`` per content coding: gzip's header and trailer, or zlib's (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(raw: bytes, encoding: str, limit: int | None) -> bytes:
    """``raw`` decoded from ``encoding`` (gzip or deflate), at most ``limit`` bytes of it (413 past it).

    Written with :mod:`zlib` rather than werkzeug, which leaves request content codings to the
    server: a streaming decompressor with ``max_length`` stops a bomb before it fills memory.
    """
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate "
                                   "or none.", code="unsupported_content_encoding")
    try:
        decoder, decoded = _decompress(raw, wbits, limit)
    except zlib.error as exc:
        if encoding != "deflate":
            raise InvalidRequest(f"Body is not valid {encoding} data: {exc}.", code="invalid_encoding") from None
        try:  # raw deflate without zlib's header, as some clients send it
            decoder, decoded = _decompress(raw, -zlib.MAX_WBITS, limit)
        except zlib.error:
            raise InvalidRequest(f"Body is not valid deflate data: {exc}.", code="invalid_encoding") from None
    if limit and (len(decoded) > limit or decoder.unconsumed_tail):
        raise too_large(limit)
    if not decoder.eof:
        raise InvalidRequest(f"Body's {encoding} data is truncated.", code="invalid_encoding")
    return decoded


def _decompress(raw: bytes, wbits: int, limit: int | None) -> tuple[Any, bytes]:
    decoder = zlib.decompressobj(wbits)
    return decoder, decoder.decompress(raw, limit + 1) if limit else decoder.decompress(raw)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels (walked without
    recursion: what later walks the body, or serializes it, could not take much more)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def refuse_lone_surrogates(value: Any, path: str = "") -> None:
    """400 naming the first string in ``value`` that holds a lone UTF-16 surrogate (not UTF-8 encodable)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"{path or 'The body'} holds a lone UTF-16 surrogate (half of an emoji?), "
                                 "which is not valid Unicode text; send whole characters.",
                                 code="invalid_unicode", param=path or None) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_lone_surrogates(key, path)
            refuse_lone_surrogates(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_lone_surrogates(item, f"{path}[{index}]")
