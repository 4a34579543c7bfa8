"""Every hook a plugin can implement. These docstrings are the plugin author's reference.

An implementation may accept any subset of a hook's arguments (pluggy passes only
the ones it names). Every hook also receives ``gateway``: the app's
:class:`gateway.app.Gateway` (settings, store, providers, plugin settings).
``docs/plugins.md`` documents each hook with an example; a test keeps the two in step.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ai_gateway")
hookimpl = pluggy.HookimplMarker("ai_gateway")


@hookspec
def gateway_register_providers(gateway):
    """Return the providers this plugin offers (called once at start-up).

    :param gateway: the app's Gateway; read your settings with
        ``gateway.settings.plugin_config("<name>")``.
    :return: a list of provider objects (see :class:`gateway.types.Provider`), or None
        for none. Results of all plugins are collected; two providers with one name
        stop start-up.
    """


@hookspec(firstresult=True)
def gateway_authenticate(request, gateway):
    """Say who is calling (each request; the first non-None answer wins).

    :param request: the incoming ``flask.Request`` (read headers from it).
    :param gateway: the app's Gateway.
    :return: a :class:`gateway.types.Caller`, or None when the request carries no
        credential of this plugin's kind (another plugin may know it). Raise
        :class:`gateway.errors.AuthenticationError` for a credential that is this
        plugin's but invalid, so that it is a 401 whatever other plugins think. Any
        other exception is a 500 whose details go only to the log.
    """


@hookspec
def gateway_enrich_request(completion, caller, request, gateway):
    """Change the request before a provider sees it (each request; every implementation runs).

    :param completion: the :class:`gateway.types.ChatRequest`; mutate its
        ``messages`` or ``metadata`` in place, and report to the caller through its
        ``response_headers`` and ``answer_fields`` (declared in ``gateway_declare``).
    :param caller: the authenticated :class:`gateway.types.Caller` (already authorized
        for ``completion.model``).
    :param request: the incoming ``flask.Request`` (read headers from it).
    :param gateway: the app's Gateway.
    :return: nothing. Raise :class:`gateway.errors.InvalidRequest` to refuse the
        request with a 400 (a guardrail). Any other exception fails the request with
        a 500, unless the plugin declares ``gateway_optional = True``: then it is
        logged and the request goes on without it.
    """


@hookspec(firstresult=True)
def gateway_select_provider(completion, caller, providers, gateway):
    """Choose who answers (each request; the first non-None answer wins).

    :param completion: the :class:`gateway.types.ChatRequest` (``completion.model``,
        ``completion.provider`` when the caller named one). For ``/v1/embeddings`` and
        ``/v1/responses`` it has no messages and ``completion.options["route"]`` is
        ``"embeddings"`` or ``"responses"``; a candidate must then have ``embed`` or
        ``forward`` (one without answers 400 naming itself).
    :param caller: the authenticated :class:`gateway.types.Caller`.
    :param providers: every registered provider, by name.
    :param gateway: the app's Gateway.
    :return: an ordered list of ``(provider, model)`` candidates (the first is tried
        first, the rest are fallbacks), or None to leave the choice to the next
        plugin. An empty list means no provider serves the model: a 404.
    """


@hookspec
def gateway_check_response(completion, answer, caller, gateway):
    """Check a chat completion's answer before the caller gets it (every answer of both completion
    APIs, cached ones too; every implementation runs, in pluggy's order, until one refuses).

    :param completion: the :class:`gateway.types.ChatRequest` as it was sent (its ``metadata``
        holds what enrichment noted, e.g. the catalog context injected).
    :param answer: the :class:`gateway.types.CheckedAnswer`: ``texts`` (every choice's whole text),
        ``streamed``, ``provider``, ``model``. Call ``answer.report(check, "passed" | "flagged",
        fields=..., headers=...)`` to annotate it (native answer fields and headers you declared;
        a stream's final event carries the fields), ``answer.replace(check, text)`` to give the
        caller other text (not for streams: sent already), or ``answer.refuse(check, message,
        code)`` to refuse it with a 502. Each outcome lands in the request log's ``checks``.
        A streamed answer is checked when it ends, before its ``[DONE]``.
    :param caller: the authenticated :class:`gateway.types.Caller`.
    :param gateway: the app's Gateway.
    :return: nothing. Any exception other than the refusal fails the answer with a 500 (a guardrail
        that fails must not let the answer through), unless the plugin declares
        ``gateway_optional = True``: then it is logged and skipped.
    """


@hookspec
def gateway_after_response(record, gateway):
    """See the outcome of every completion, successful or not (every implementation runs).

    :param record: the :class:`gateway.types.RequestLogRecord` of the request.
    :param gateway: the app's Gateway.
    :return: nothing. An implementation that raises is logged and skipped: it never
        changes the answer nor stops the other implementations.
    """


@hookspec(firstresult=True)
def gateway_redact(text, gateway):
    """Redact a prompt or answer before the request log stores it (only when the
    ``request_log_content`` setting is on; the first non-None answer wins).

    :param text: the prompt (``role: text`` lines) or the answer.
    :param gateway: the app's Gateway.
    :return: the text to store, or None to leave the decision to the next plugin. The
        built-in implementation runs last and masks e-mail addresses, API keys and
        card-like numbers; call :func:`plugins.analytics.redact` to build on it.
    """


@hookspec
def gateway_register_blueprints(app, gateway):
    """Add routes (called once at start-up).

    :param app: the Flask app; call ``app.register_blueprint(...)``.
    :param gateway: the app's Gateway.
    :return: nothing.
    """


@hookspec
def gateway_register_commands(cli):
    """Add commands to the ``gateway`` CLI (called once when the CLI starts).

    :param cli: the ``click.Group`` of the ``gateway`` command; use ``@cli.command()``.
        Commands that need the app use ``flask.cli.with_appcontext`` and
        ``gateway.app.current_gateway()``.
    :return: nothing.
    """


# What a plugin adds to the core's contracts, its OpenAPI operations, and key issuance.


@hookspec
def gateway_declare(gateway):
    """Declare what this plugin adds to the core's contracts (called once at start-up).

    :param gateway: the app's Gateway.
    :return: a :class:`gateway.types.Declaration` (permissions, request options, answer
        fields, response headers, recorded models), or None. Every plugin's is merged
        into ``gateway.declared`` (``gateway.permissions``: the core's and the declared);
        two plugins declaring one request option, answer field or header stop start-up.
    """


@hookspec
def gateway_openapi(spec, gateway):
    """Document this plugin's routes in ``GET /openapi.json`` (called once per app, on the
    document's first request).

    :param spec: the ``apispec.APISpec`` being built, with the core's components:
        add schemas with ``spec.components.schema(name, schema=...)`` and operations with
        ``spec.path(path=..., operations=...)``; :func:`gateway.openapi.operation` builds
        an operation with the gateway's security and error answers.
    :param gateway: the app's Gateway.
    :return: nothing.
    """


@hookspec(firstresult=True)
def gateway_issue_key(gateway, user_id, tier, permissions, options):
    """Issue a credential this plugin accepts (the first non-None answer wins; what
    ``gateway.testing.issue_key`` calls).

    :param gateway: the app's Gateway.
    :param user_id: the owner.
    :param tier: the tier, one of :data:`gateway.types.TIERS`.
    :param permissions: permission names (of ``gateway.permissions``).
    :param options: further fields of the credential (limits, ``allowed_models``,
        ``expires_at``, …), as ``dict``; refuse one you do not know with ``TypeError``.
    :return: the plaintext credential, sent as ``X-API-Key`` or ``Authorization: Bearer``;
        or None when this plugin issues none.
    """


# Settings and start-up: a plugin declares its settings, then checks them before any request.

@hookspec
def gateway_declare_settings():
    """Declare this plugin's settings (called once at start-up, before ``gateway_startup``).

    :return: a settings class, a list of them, or None. A settings class is a dataclass
        whose fields are made with :func:`gateway.setting_fields.setting` (default, marshmallow
        field, help). Each setting is read like the core's (``GATEWAY_<NAME>``, the config
        file, SSM, ``create_app`` overrides) and validated at start-up; a bad value stops
        start-up naming it. Read the values with ``gateway.plugin_settings[YourClass]``.
        A name the core or another plugin declares stops start-up.
    """


@hookspec
def gateway_startup(gateway):
    """Check this plugin's settings and prepare it (once per app, after settings are validated and
    providers registered, before any request).

    :param gateway: the app's Gateway.
    :return: nothing. Raise :class:`gateway.errors.ConfigError` with a message naming the
        setting and saying what to set: ``create_app`` raises it (prefixed with the plugin's
        name), and ``gateway serve`` and every CLI command print it and exit non-zero.
    """
