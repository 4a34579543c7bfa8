"""The core's plain data types: what hooks receive and return.

No Flask, SDK or store types appear here, so plugins and adapters can depend on
this module without pulling anything heavy in.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.tiers import TIERS  # noqa: F401  (re-exported: the one tier list lives in gateway/tiers.py)

#: What an answer check may say of an answer (``RequestLogRecord.checks``): nothing to report, found
#: something and said so (annotated), changed the answer, refused it. The last three are "flagged".
CHECK_OUTCOMES = ("passed", "flagged", "replaced", "blocked")
FLAGGED_OUTCOMES = frozenset(CHECK_OUTCOMES[1:])

#: The core's permissions; plugins add theirs (``Declaration.permissions``): ``Gateway.permissions``.
CORE_PERMISSIONS = ("completions", "health", "admin")


@dataclass(frozen=True)
class Caller:
    """Who is calling: what an authenticate hook returns and everything after reads."""

    user_id: str
    key_id: str
    tier: str = "free"
    permissions: frozenset[str] = frozenset({"completions"})
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    #: Calls in flight at once (None: the tier's ``concurrent_requests``).
    concurrent_requests: int | None = None
    #: Models this caller may use; None allows every model.
    allowed_models: frozenset[str] | None = None
    #: What the credential says for plugins, by a name of theirs (the built-in key's ``mcp_context``:
    #: its default for catalog context; ``grounding``: its grounding check, ``off``, ``annotate`` or
    #: ``block``). JSON values: they travel in the Lambda authorizer's context.
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        """True when this caller holds ``permission`` (admin implies every permission)."""
        return permission in self.permissions or "admin" in self.permissions


@dataclass(eq=False)
class ChatRequest:
    """A chat completion request, normalized: what both completion APIs turn their body into and
    the hooks receive (as their ``completion`` argument)."""

    model: str
    #: The messages as the caller sent them (every field kept), as enrichment left them.
    messages: list[dict[str, Any]]
    #: Every other field of the body the gateway does not read itself, as sent (the caller's
    #: ``metadata`` included, less the gateway's own switches): what an OpenAI-compatible
    #: upstream receives beside ``model`` and ``messages``.
    parameters: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    provider: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: The gateway's own notes on this request: the caller's ``metadata`` switches (the names of
    #: plugins' request options) and what enrichment plugins add; never sent upstream.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Headers an enrichment plugin adds to the answer (declare their names: ``Declaration``).
    response_headers: dict[str, str] = field(default_factory=dict)
    #: Fields an enrichment plugin adds to the native API's answer (declared in ``Declaration``).
    answer_fields: dict[str, Any] = field(default_factory=dict)

    def last_user_text(self) -> str:
        """The text of the last user message ("" when there is none)."""
        last_user = next((m for m in reversed(self.messages) if m["role"] == "user"), None)
        return message_text(last_user) if last_user else ""


def message_text(message: dict[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


@dataclass(eq=False)
class CheckedAnswer:
    """A completion's answer on its way to the caller, as ``gateway_check_response`` sees it, and
    what the checks said of it (the core turns that into headers, answer fields, the final event of
    a stream, the request log's ``checks`` and an error)."""

    #: Each choice's whole text, the first choice first (a streamed answer's too: checked at its end).
    texts: list[str]
    streamed: bool
    provider: str
    model: str
    #: Each check's outcome, by the check's name: one of :data:`CHECK_OUTCOMES`.
    outcomes: dict[str, str] = field(default_factory=dict)
    #: Native answer fields the checks set (declared in ``Declaration.answer_fields``); a stream's
    #: final event carries them.
    fields: dict[str, Any] = field(default_factory=dict)
    #: Answer headers the checks set (declared); a streamed answer's headers are sent before its end,
    #: so its checks' headers are dropped (its final event says it all).
    headers: dict[str, str] = field(default_factory=dict)
    #: The choices whose text a check replaced (the caller gets ``texts[i]`` instead).
    replaced: set[int] = field(default_factory=set)

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.texts[0] if self.texts else ""

    def report(self, check: str, outcome: str, fields: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> None:
        """Say what ``check`` found: ``passed`` or ``flagged``, with the answer fields and headers that
        tell the caller (each declared by the plugin)."""
        if outcome not in ("passed", "flagged"):
            raise ValueError(f"report() takes 'passed' or 'flagged', not {outcome!r}: use replace() or refuse()")
        self.outcomes[check] = outcome
        self.fields.update(fields or {})
        self.headers.update(headers or {})

    def replace(self, check: str, text: str, choice: int = 0) -> None:
        """Give the caller ``text`` instead of choice ``choice``'s text. A streamed answer was sent
        already: ``ValueError`` (report it instead)."""
        if self.streamed:
            raise ValueError("a streamed answer was sent already: it cannot be replaced, only reported")
        self.texts[choice] = text
        self.replaced.add(choice)
        self.outcomes[check] = "replaced"

    def refuse(self, check: str, message: str, code: str, fields: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> None:
        """Refuse the answer: the caller gets a 502 ``code`` error with ``headers`` instead (a stream:
        its final event with ``fields``, then the error). Raises :class:`gateway.errors.AnswerRefused`;
        the checks after this one do not run."""
        from gateway.errors import AnswerRefused

        self.outcomes[check] = "blocked"
        self.fields.update(fields or {})
        self.headers.update(headers or {})
        raise AnswerRefused(message, code=code, headers=dict(self.headers), answer=self)


@dataclass(frozen=True)
class Declaration:
    """What a plugin adds to the core's contracts, returned by ``gateway_declare`` (read once at
    start-up). Every part is optional.

    Marshmallow fields are typed ``Any`` here so that this module stays free of marshmallow.
    """

    #: Permission names this plugin's routes check (``pipeline.authenticate(..., "<name>")``).
    permissions: tuple[str, ...] = ()
    #: Request switches, by name: a body field of both completion APIs, validated by the marshmallow
    #: field given (its value goes to ``completion.options[name]``), and a ``metadata`` key taken
    #: out of what goes upstream (its value stays in ``completion.metadata[name]``).
    request_options: Mapping[str, Any] = field(default_factory=dict)
    #: Fields of the native API's answer (marshmallow fields, for the OpenAPI document): each is
    #: in every native answer, ``completion.answer_fields[name]`` or null.
    answer_fields: Mapping[str, Any] = field(default_factory=dict)
    #: Answer headers this plugin may set (``completion.response_headers``), each with its
    #: description: documented, and readable by browsers of ``cors_origins``.
    response_headers: Mapping[str, str] = field(default_factory=dict)
    #: The (provider, model) names this plugin's own request-log records carry, as provider name
    #: -> model names: metric dimensions (other values are counted as ``unknown``).
    recorded_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The answer checks this plugin runs (``gateway_check_response``), as check name -> the CloudWatch
    #: metric counting the answers it flagged (``{"grounding": "GroundingMismatch"}``); the usage and
    #: metrics APIs report each check's flagged rate per model.
    answer_checks: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Usage:
    """Token counts reported by a provider."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatAnswer:
    """A provider's normalized, complete answer to a :class:`ChatRequest` (the completion)."""

    text: str
    model: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[dict[str, Any]] | None = None
    #: Choices 1..n-1 when the request asked for ``n`` > 1 (their usage is in this one's).
    extra_choices: list[ChatAnswer] = field(default_factory=list)
    #: The upstream's own JSON answer, as received: OpenAI-API callers get it unchanged
    #: (OpenAI-compatible upstreams). None for translated providers, whose answer the gateway builds.
    body: bytes | None = None


@dataclass(eq=False)
class Chunk:
    """One normalized piece of a streamed answer (``index``: its choice, when ``n`` > 1)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] | None = None
    index: int = 0
    #: The upstream's Server-Sent Event as received (``data: …\n\n``), forwarded unchanged to
    #: OpenAI-API callers; None for translated providers, whose events the gateway builds.
    #: ``b""``: nothing to forward (the usage event of a caller who did not ask for usage:
    #: the gateway always asks the upstream for it).
    raw: bytes | None = None


@dataclass(eq=False)
class EmbeddingRequest:
    """A ``POST /v1/embeddings`` body: the model, its ``input`` (a string, a list of strings, or
    token ids) and every other field (``dimensions``, ``encoding_format``, ``user``, …) as sent."""

    model: str
    input: Any
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class EmbeddingAnswer:
    """A provider's embeddings answer: OpenAI's ``{"object": "list", "data": [...], "model",
    "usage"}`` JSON as bytes (the upstream's own for OpenAI-compatible ones), and its usage."""

    body: bytes
    usage: Usage
    model: str


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        """The cost of ``usage`` at this price, in USD."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_rate
            + usage.completion_tokens * self.output
        ) / 1_000_000


@runtime_checkable
class Provider(Protocol):
    """A model provider, as registered through ``gateway_register_providers``.

    ``complete`` and ``stream`` raise :class:`gateway.errors.ProviderError`
    (or a subclass), never an SDK exception.

    Optional capabilities, looked up with ``getattr`` (a provider without one answers
    400 naming itself): ``embed(request: EmbeddingRequest) -> EmbeddingAnswer`` for
    ``POST /v1/embeddings``, and ``forward(path, model, body, stream)`` for OpenAI routes
    a provider can only pass through (``POST /v1/responses``).
    """

    name: str

    def models(self) -> dict[str, Price]:
        """The model names this provider serves, each with its price."""

    def complete(self, completion: ChatRequest) -> ChatAnswer:
        """Answer ``completion`` in one piece."""

    def stream(self, completion: ChatRequest) -> Iterator[Chunk]:
        """Answer ``completion`` as a stream of chunks."""


@dataclass
class RequestLogRecord:
    """One record of the request log (a row of its table); what ``gateway_after_response``
    receives, and what the usage API and metrics are built from."""

    request_id: str
    correlation_id: str
    timestamp: float
    user_id: str = ""
    api_key_id: str = ""
    tier: str = ""
    model: str = ""
    provider: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    upstream_latency_ms: float = 0.0
    status: int = 200
    error_code: str = ""
    streamed: bool = False
    cached: bool = False
    #: What a cached answer would have cost had the provider been called (its ``cost`` is 0).
    saved_cost: float = 0.0
    #: The prompt and answer, redacted; empty unless the ``request_log_content`` setting is on.
    prompt_text: str = ""
    completion_text: str = ""
    #: Requests this row stands for: 1, or the refusals (429s of the gateway's own limits) of one
    #: key, minute and reason folded into one row (gateway/refusals.py).
    count: int = 1
    #: What each answer check (``gateway_check_response``) said of the answer, by the check's name
    #: (``"grounding"``): one of :data:`CHECK_OUTCOMES`. Empty when no check ran.
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


#: Names of earlier releases -> today's, for plugins written against them.
_RENAMED = {"Completion": "ChatRequest", "Result": "ChatAnswer", "EmbeddingResult": "EmbeddingAnswer",
            "UsageRecord": "RequestLogRecord"}


def __getattr__(name: str) -> Any:
    """Resolve a type's earlier name (``Completion``, ``Result``, ``EmbeddingResult``,
    ``UsageRecord``) to the type, with a ``DeprecationWarning`` naming the new one."""
    if name in _RENAMED:
        import warnings

        warnings.warn(f"gateway.types.{name} is now gateway.types.{_RENAMED[name]}", DeprecationWarning,
                      stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
