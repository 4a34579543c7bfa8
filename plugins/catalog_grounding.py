"""The catalog grounding check: what an answer says about catalog products, compared with the catalog.

The catalog plugin's ``gateway_check_response`` calls :func:`check_grounding` when grounding is on
for the request (:func:`plugins.catalog.grounding_mode`). The verdict (``plugins.grounding``) goes to
the caller as the native answer's ``grounding`` field and the ``X-Gateway-Grounding`` header (a
stream: its last event), to the request log as the ``grounding`` check's outcome, and to CloudWatch
as ``GroundingMismatch``. In ``block`` mode a mismatch refuses the answer: 502 ``grounding_mismatch``.
"""
from __future__ import annotations

import logging

from gateway import metrics
from gateway.types import CheckedAnswer
from plugins.catalog_search import catalog_search
from plugins.grounding import GroundingIndex, Verdict, check_answer

logger = logging.getLogger(__name__)

CHECK = "grounding"
HEADER = "X-Gateway-Grounding"
#: The error code of an answer refused in ``block`` mode.
MISMATCH_CODE = "grounding_mismatch"


def grounding_index(gateway) -> GroundingIndex:
    """The catalog's grounding index, kept as long as the catalog's other reads (``catalog_cache_ttl``;
    an admin write drops it)."""
    search = catalog_search(gateway)
    return search.cached(("grounding",), lambda: GroundingIndex(search.store.list_products()))


def worst(verdicts: list[Verdict]) -> Verdict:
    """The verdict to report for an answer of several choices: the first mismatch, else the first."""
    return next((v for v in verdicts if v.status == "mismatch"), verdicts[0])


def check_grounding(gateway, answer: CheckedAnswer, mode: str, unavailable_metric: str) -> None:
    """Check every choice of ``answer`` against the catalog and report the verdict; in ``block`` mode
    refuse a mismatch. An unreadable catalog never fails the answer: it is reported as
    ``catalog_unavailable``, logged and counted (``unavailable_metric``), with no outcome recorded."""
    try:
        index = grounding_index(gateway)
    except Exception as exc:  # any store failure: the answer goes on, unchecked, and says so
        metrics.count(gateway, unavailable_metric)
        logger.warning("catalog unavailable; answer not checked against it",
                       extra={"event": "grounding_catalog_unavailable", "error": type(exc).__name__})
        answer.fields[CHECK] = {"status": "catalog_unavailable"}
        answer.headers[HEADER] = "catalog_unavailable"
        return
    verdict = worst([check_answer(text, index) for text in answer.texts or [""]])
    fields, headers = {CHECK: verdict.to_dict()}, {HEADER: verdict.header()}
    if verdict.status != "mismatch":
        answer.report(CHECK, "passed", fields, headers)
    elif mode == "block":
        answer.refuse(CHECK, f"The answer contradicts the product catalog: {verdict.summary()}.", MISMATCH_CODE,
                      fields, headers)
    else:
        answer.report(CHECK, "flagged", fields, headers)
