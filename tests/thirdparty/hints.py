"""A replacement of the built-in ``mcp`` plugin, written only against the documented hooks.

It declares a request switch (``hints``: a body field of both APIs, a ``metadata`` key, or the
``X-Hints`` header), an answer field and an answer header that report it, the ``hints``
permission of its route ``GET /hints``, and the model its records carry.
"""
from __future__ import annotations

from flask import jsonify, request
from marshmallow import RAISE, Schema, validate
from marshmallow import fields as f

from gateway import hookimpl
from gateway.types import Declaration

STYLES = ("short", "long")
HEADER = "X-Hints"


class HintsOption(Schema):
    """The ``hints`` request option."""

    class Meta:
        unknown = RAISE

    enabled = f.Boolean(required=True)
    style = f.String(validate=validate.OneOf(STYLES))


@hookimpl
def gateway_declare():
    """The ``hints`` switch, its answer field and header, the ``hints`` permission, its records' model."""
    return Declaration(
        permissions=("hints",),
        request_options={"hints": f.Nested(HintsOption)},
        answer_fields={"hints": f.Dict(allow_none=True)},
        response_headers={"X-Hints-Style": "The hint style applied."},
        recorded_models={"hints": ("hints:lookup",)},
    )


@hookimpl
def gateway_enrich_request(completion, request):
    """Add a style hint when the request asks for one: body option, then metadata, then header."""
    option = completion.options.get("hints") or {}
    enabled = option.get("enabled")
    if enabled is None:
        enabled = "on" in (completion.metadata.get("hints"), request.headers.get(HEADER))
    if not enabled:
        return
    style = option.get("style", "short")
    completion.messages.insert(0, {"role": "system", "content": f"Answer in a {style} style."})
    completion.answer_fields["hints"] = {"style": style}
    completion.response_headers["X-Hints-Style"] = style


def list_styles():
    """The styles, for a caller holding ``hints``."""
    from gateway.app import current_gateway
    from gateway.pipeline import admit

    admit(current_gateway(), request, "hints")
    return jsonify({"styles": list(STYLES)})


@hookimpl
def gateway_register_blueprints(app):
    """``GET /hints``."""
    app.add_url_rule("/hints", "hints", list_styles)


@hookimpl
def gateway_openapi(spec):
    """Document ``GET /hints``."""
    from gateway.openapi import READ_ERRORS, ok, operation

    spec.path(path="/hints", operations={"get": operation(
        "The hint styles.", ok(None, content={"application/json": {"schema": {"type": "object"}}}), READ_ERRORS)})
