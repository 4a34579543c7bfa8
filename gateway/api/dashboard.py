"""``GET /dashboard``: the usage dashboard, a static page drawing ``/api/v1/admin/metrics``.

The admin key is typed into the page and kept in the tab's sessionStorage only; the
page itself is public and holds no data. Chart.js is served from ``gateway/static/vendor``
(no CDN), so the page works offline. A strict Content-Security-Policy allows only
this origin's scripts and calls.
"""
from __future__ import annotations

from flask import Blueprint, make_response, render_template

blueprint = Blueprint("dashboard", __name__, static_folder="../static", static_url_path="/dashboard/static",
                      template_folder="../templates")

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@blueprint.get("/dashboard")
def dashboard():
    """The dashboard page."""
    response = make_response(render_template("dashboard.html"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
