"""gateway-pii-guard: a guardrail plugin for the AI Model Gateway.

Before a prompt leaves the gateway it refuses a request that mentions a phrase
of the deny list (400, code ``content_blocked``), then replaces e-mail addresses,
phone numbers and Luhn-valid card numbers in every message with
``[redacted <kind>]``. Before an answer reaches the caller it masks the same in
every choice (``gateway_check_response``); a streamed answer has left already, so
its last event says what it held (``pii_in_answer``). Settings (``plugin_settings.pii_guard``):

- ``deny``: phrases to refuse, matched case-insensitively as whole words (default none);
- ``redact``: which kinds to redact, from ``email``, ``card``, ``phone`` (default all);
- ``answers``: ``true`` (default) to check answers too.

It is not optional (no ``gateway_optional``): a guardrail that fails must fail the
request, never let it through unguarded.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from marshmallow import fields

from gateway import hookimpl
from gateway.errors import ConfigError, InvalidRequest
from gateway.types import Declaration
from gateway_pii_guard.detect import KINDS, redact

NAME = "pii_guard"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """The compiled settings: a deny pattern (or None) and the kinds to redact."""

    deny: re.Pattern | None
    kinds: tuple[str, ...]
    answers: bool = True


def load_policy(config: dict) -> Policy:
    """Validate and compile ``plugin_settings.pii_guard``; a bad value raises :class:`ConfigError`."""
    deny = config.get("deny", [])
    if not isinstance(deny, list) or not all(isinstance(p, str) and p.strip() for p in deny):
        raise ConfigError(f"plugin_settings.{NAME}.deny must be a list of non-empty phrases")
    kinds = config.get("redact", list(KINDS))
    if not isinstance(kinds, list) or set(kinds) - set(KINDS):
        raise ConfigError(f"plugin_settings.{NAME}.redact must be a list from {', '.join(KINDS)}")
    answers = config.get("answers", True)
    if not isinstance(answers, bool):
        raise ConfigError(f"plugin_settings.{NAME}.answers must be true or false")
    pattern = None
    if deny:
        phrases = "|".join(re.escape(" ".join(p.split())).replace(r"\ ", r"\s+") for p in deny)
        pattern = re.compile(rf"(?<!\w)(?:{phrases})(?!\w)", re.IGNORECASE)
    return Policy(deny=pattern, kinds=tuple(kinds), answers=answers)


@hookimpl
def gateway_startup(gateway):
    """Check and compile this app's policy once, before any request: a bad one stops start-up."""
    gateway.state[NAME] = load_policy(gateway.settings.plugin_config(NAME))


def _texts(message: dict):
    """(container, key) pairs holding the message's text, whether content is a string or parts."""
    content = message.get("content")
    if isinstance(content, str):
        yield message, "content"
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                yield part, "text"


@hookimpl
def gateway_enrich_request(completion, gateway):
    """Refuse a prompt on the deny list; redact personal data from every message."""
    rules: Policy = gateway.state[NAME]
    places = [place for message in completion.messages for place in _texts(message)]
    if rules.deny is not None and any(rules.deny.search(holder[key]) for holder, key in places):
        raise InvalidRequest("The request mentions a topic this gateway does not accept.",
                             code="content_blocked")
    total = {}
    for holder, key in places:
        holder[key], found = redact(holder[key], rules.kinds)
        for kind, count in found.items():
            total[kind] = total.get(kind, 0) + count
    if total:
        completion.metadata["pii_redacted"] = total
        logger.info("personal data redacted", extra={"redacted": total})


@hookimpl
def gateway_declare():
    """The answer check ``pii_guard`` (counted in ``AnswersWithPersonalData``) and its answer field."""
    return Declaration(
        answer_checks={NAME: "AnswersWithPersonalData"},
        answer_fields={"pii_in_answer": fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True,
                                                    metadata={"description": "Personal data found in the answer, "
                                                              "by kind (masked unless streamed)."})})


@hookimpl
def gateway_check_response(answer, gateway):
    """Mask personal data in every choice of the answer; a streamed one is reported, not masked."""
    rules: Policy = gateway.state[NAME]
    if not rules.answers:
        return
    total: dict[str, int] = {}
    for index, text in enumerate(answer.texts):
        masked, found = redact(text, rules.kinds)
        for kind, count in found.items():
            total[kind] = total.get(kind, 0) + count
        if found and not answer.streamed:
            answer.replace(NAME, masked, choice=index)
    if not total:
        answer.report(NAME, "passed")
    elif answer.streamed:
        answer.report(NAME, "flagged", fields={"pii_in_answer": total})
    else:
        answer.fields["pii_in_answer"] = total
