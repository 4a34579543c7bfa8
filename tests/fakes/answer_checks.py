"""An answer check for tests: ``promises``, declared as the catalog plugin declares ``grounding``
(``GroundingMismatch``), under names of its own so that the two never clash."""
from __future__ import annotations

from gateway.hookspecs import hookimpl
from gateway.types import Declaration

CHECK = "promises"
METRIC = "AnswersWithPromises"


class PromiseCheck:
    """Declares the check and its metric, and runs it: an answer saying "guarantee" is flagged, any
    other passes."""

    @hookimpl
    def gateway_declare(self):
        return Declaration(answer_checks={CHECK: METRIC})

    @hookimpl
    def gateway_check_response(self, answer):
        answer.report(CHECK, "flagged" if "guarantee" in answer.text else "passed")
