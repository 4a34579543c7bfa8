"""Schemathesis against ``/openapi.json``, through its WSGI loader, with every check.

Every documented operation is fuzzed with valid data (positive) and invalid data (negative),
first with an admin key holding every permission: no 5xx, every status, header, content
type and body as documented, valid data accepted, invalid data refused. Each case gets a
key of its own, so a case that revokes or changes a key (it could only guess ids, but
still) can never take the credential away from the cases after it. Then the same
operations with a well-formed but unknown key: only 401s, so a broken key cannot make
the first run pass by answering everything with the same error.

The CI run is bounded (``FUZZ_EXAMPLES`` per operation and mode, derandomized); the
``slow`` variant runs many more.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway.schemas import upstream_url_field
from gateway.testing import issue_key, make_app

FUZZ_EXAMPLES = 8
SLOW_EXAMPLES = 100
WRONG_KEY_EXAMPLES = 5
#: Operations whose parameters have rules across fields JSON Schema cannot state (``from`` before
#: ``to``, a window of at most 400 days): schema-valid data may rightly get a 400 there, so the
#: "valid data is accepted" check is off for them; every other check still runs.
CROSS_PARAMETER_RULES = {"GET /api/v1/usage", "GET /api/v1/admin/usage", "GET /api/v1/admin/metrics"}


#: MCP answers a malformed message of the handshake era with a JSON-RPC error at HTTP 200, as its
#: specification says; the "invalid data is refused with a 4xx" check does not apply there.
ERRORS_AT_200 = {"POST /mcp"}


def breaks_a_rule_of_time(case) -> bool:
    """A key's ``expires_at`` must be in the future: a rule of the clock, not of the schema."""
    body = case.body if isinstance(case.body, dict) else {}
    expires = body.get("expires_at")
    return isinstance(expires, int | float) and not isinstance(expires, bool) and expires <= time.time() + 60


def names_an_upstream(case) -> bool:
    """A field named like an upstream URL anywhere in the body is refused (documented in the request's
    description): fields the gateway passes on are free-form, so the generator may well make one."""
    return isinstance(case.body, dict) and upstream_url_field(case.body) is not None


WRONG_KEY = "gw_test_0123456789abcdef_" + "x" * 43


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """An app with generous failed-auth throttling (the wrong-key run sends only bad keys)."""
    with pytest.MonkeyPatch.context() as patch:
        from gateway.testing import clean_environment

        clean_environment(patch)
        yield make_app(tmp_path_factory.mktemp("fuzz"), {"failed_auth_limit": "1000000/minute"})


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    """The app's own document, loaded the way schemathesis loads any WSGI app's."""
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


def operations(schema, *, secured_only: bool = False):
    """Every operation of the document (only the authenticated ones with ``secured_only``)."""
    found = [result.ok() for result in schema.get_all_operations()]
    if secured_only:
        found = [op for op in found if op.definition.raw.get("security") != []]
    return found


def fuzz(operation, mode: GenerationMode, examples: int, run_case) -> None:
    """Run ``run_case`` on ``examples`` generated cases of ``operation`` in ``mode``, deterministically."""
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        run_case(case)

    try:
        run()
    except Unsatisfiable:  # an operation with nothing to get wrong (no body, no parameters)
        if mode is not GenerationMode.NEGATIVE:
            raise


def admin_case_runner(app, statuses: Counter):
    """Each case with a fresh enterprise admin key holding every permission, all checks on
    (but those that cannot apply to the case, see above)."""
    def run_case(case):
        key = issue_key(app, user="fuzzer", tier="enterprise", permissions=app.extensions["gateway"].permissions)
        headers = {"X-API-Key": key}
        response = case.call(headers=headers)
        label = case.operation.label
        excluded = ([schemathesis.checks.positive_data_acceptance]
                    if label in CROSS_PARAMETER_RULES or breaks_a_rule_of_time(case) or names_an_upstream(case)
                    else [])
        if label in ERRORS_AT_200 or response.status_code == 413:  # 413: refused for its size, as documented
            excluded.append(schemathesis.checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded, headers=headers)
        statuses[response.status_code] += 1

    return run_case


def run_with_valid_key(app, schema, examples: int) -> Counter:
    statuses: Counter = Counter()
    for operation in operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, examples, admin_case_runner(app, statuses))
    return statuses


def test_every_operation_answers_as_documented_with_a_valid_key(fuzz_app, fuzz_schema):
    statuses = run_with_valid_key(fuzz_app, fuzz_schema, FUZZ_EXAMPLES)
    assert not any(status >= 500 for status in statuses), statuses
    assert sum(1 for status in statuses.elements() if 200 <= status < 300) > 50, statuses
    assert statuses[400] > 0, statuses  # invalid data was sent and refused
    print(f"fuzz (valid key): {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")


def test_a_wrong_key_sees_only_401(fuzz_app, fuzz_schema):
    statuses: Counter = Counter()

    def run_case(case):
        response = case.call(headers={"X-API-Key": WRONG_KEY})
        statuses[response.status_code] += 1
        assert response.status_code == 401, (case.operation.label, response.status_code, response.text)

    secured = operations(fuzz_schema, secured_only=True)
    assert len(secured) >= 12
    for operation in secured:
        fuzz(operation, GenerationMode.POSITIVE, WRONG_KEY_EXAMPLES, run_case)
    assert set(statuses) == {401} and statuses[401] >= len(secured), statuses
    print(f"fuzz (wrong key): {statuses[401]} cases, all 401")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_long_fuzz_run_with_a_valid_key(fuzz_app, fuzz_schema):
    statuses = run_with_valid_key(fuzz_app, fuzz_schema, SLOW_EXAMPLES)
    assert not any(status >= 500 for status in statuses), statuses
    print(f"fuzz (valid key, long): {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
