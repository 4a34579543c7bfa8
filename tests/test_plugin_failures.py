"""What happens when a plugin fails: the rules of docs/plugins.md, "When a plugin fails"."""
from __future__ import annotations

import logging
import types

import pytest

from gateway import hookimpl
from gateway.errors import AuthenticationError, ConfigError, InvalidRequest
from gateway.testing import FakeProvider, ProviderPlugin, chat, issue_key, make_app

SECRET_DETAIL = "db password=hunter2 at 10.0.0.7"


def exception_texts(caplog) -> str:
    """Every logged traceback, as text (where the details of a 500 must be)."""
    formatter = logging.Formatter()
    return "\n".join(formatter.formatException(r.exc_info) for r in caplog.records if r.exc_info)


def assert_internal_error(response, correlation_id: str) -> None:
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert correlation_id in error["message"]
    assert response.headers["X-Correlation-ID"] == correlation_id
    assert "hunter2" not in response.get_data(as_text=True)


class Recorder:
    """Sees every enrich and after-response call, to prove the others still ran."""

    def __init__(self):
        self.enriched = []
        self.records = []

    @hookimpl(trylast=True)
    def gateway_enrich_request(self, completion):
        self.enriched.append(completion.messages[-1]["content"])

    @hookimpl(trylast=True)
    def gateway_after_response(self, record):
        self.records.append(record)


# authenticate


def test_authenticate_raising_unexpectedly_is_a_500_with_details_only_in_the_log(tmp_path, caplog):
    class Broken:
        @hookimpl
        def gateway_authenticate(self, request):
            raise RuntimeError(SECRET_DETAIL)

    app = make_app(tmp_path, plugins=(Broken(),))
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/v1/chat/completions", headers={"X-Correlation-ID": "corr-auth-1"},
                                          json={"model": "echo", "messages": []})
    assert_internal_error(response, "corr-auth-1")
    assert SECRET_DETAIL in exception_texts(caplog)


def test_authenticate_raising_the_auth_error_is_a_401(tmp_path):
    class Strict:
        @hookimpl
        def gateway_authenticate(self, request):
            raise AuthenticationError("Partner token expired.", code="partner_token_expired")

    app = make_app(tmp_path, plugins=(Strict(),))
    response = chat(app.test_client(), issue_key(app))
    assert response.status_code == 401
    assert response.get_json()["error"] == {"message": "Partner token expired.",
                                            "type": "authentication_error", "param": None,
                                            "code": "partner_token_expired"}


# enrich


class FailingEnricher:
    @hookimpl(tryfirst=True)
    def gateway_enrich_request(self, completion):
        raise RuntimeError(SECRET_DETAIL)


class OptionalFailingEnricher(FailingEnricher):
    gateway_optional = True


def optional_failing_module() -> types.ModuleType:
    """The module form of an optional plugin: ``gateway_optional = True`` at module level."""
    module = types.ModuleType("flaky_context")
    module.gateway_optional = True

    @hookimpl(tryfirst=True)
    def gateway_enrich_request(completion):
        raise RuntimeError(SECRET_DETAIL)

    module.gateway_enrich_request = gateway_enrich_request
    return module


def test_enrich_raising_fails_the_request_cleanly_and_reaches_no_provider(tmp_path, caplog):
    provider, recorder = FakeProvider(), Recorder()
    app = make_app(tmp_path, plugins=(FailingEnricher(), recorder, ProviderPlugin(provider)))
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post(
            "/v1/chat/completions", headers={"X-API-Key": issue_key(app), "X-Correlation-ID": "corr-enrich-1"},
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    assert_internal_error(response, "corr-enrich-1")
    assert provider.calls == []
    texts = exception_texts(caplog)
    assert SECRET_DETAIL in texts and "raised by plugin" in texts and "gateway_enrich_request" in texts
    assert [(r.status, r.error_code) for r in recorder.records] == [(500, "internal_error")]


@pytest.mark.parametrize("plugin", [OptionalFailingEnricher(), optional_failing_module()],
                         ids=["object attribute", "module attribute"])
def test_an_optional_enrich_plugin_that_raises_is_skipped_and_logged(tmp_path, caplog, plugin):
    provider, recorder = FakeProvider(outcomes=["answered anyway"]), Recorder()
    app = make_app(tmp_path, plugins=(plugin, recorder, ProviderPlugin(provider)))
    with caplog.at_level(logging.ERROR):
        response = chat(app.test_client(), issue_key(app), "hi", model="fake-model")
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "answered anyway"
    assert recorder.enriched == ["hi"] and len(provider.calls) == 1
    skipped = [r for r in caplog.records if r.getMessage() == "optional enrich plugin failed; skipped"]
    assert len(skipped) == 1
    assert skipped[0].plugin in ("OptionalFailingEnricher", "flaky_context")
    assert SECRET_DETAIL in exception_texts(caplog)


def test_an_optional_plugin_refusing_with_a_gateway_error_still_refuses(tmp_path):
    class OptionalGuard:
        gateway_optional = True

        @hookimpl
        def gateway_enrich_request(self):
            raise InvalidRequest("Blocked by policy.", code="content_blocked")

    app = make_app(tmp_path, plugins=(OptionalGuard(),))
    response = chat(app.test_client(), issue_key(app))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "content_blocked"


# after response


def test_after_response_raising_is_logged_and_changes_nothing(tmp_path, caplog):
    class Exploding:
        @hookimpl(tryfirst=True)
        def gateway_after_response(self, record):
            raise RuntimeError(SECRET_DETAIL)

    recorder = Recorder()
    app = make_app(tmp_path, plugins=(Exploding(), recorder))
    with caplog.at_level(logging.ERROR):
        response = chat(app.test_client(), issue_key(app), "still answered")
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "still answered"
    assert [r.status for r in recorder.records] == [200]
    assert len(app.extensions["gateway"].store.records_for_user("alice")) == 1
    failed = [r for r in caplog.records if r.getMessage() == "after-response plugin failed"]
    assert [r.plugin for r in failed] == ["Exploding"]
    assert "hunter2" not in response.get_data(as_text=True)


# start-up


class Typo:
    @hookimpl
    def gateway_authenticat(self, request):
        return None


class WrongArgument:
    @hookimpl
    def gateway_after_response(self, record, response):
        pass


class NoHooks:
    def gateway_enrich_request(self, completion):  # not marked @hookimpl
        pass


class Wrapper:
    @hookimpl(wrapper=True)
    def gateway_after_response(self, record):
        return (yield)


@pytest.mark.parametrize("plugin, message", [
    (Typo(), r"plugin 'Typo' \(registered at run time\): unknown hook 'gateway_authenticat'"),
    (WrongArgument(), r"(?s)plugin 'WrongArgument' \(registered at run time\).*\{'response'\}"),
    (NoHooks(), r"plugin 'NoHooks' \(registered at run time\) implements no hook"),
    (Wrapper(), r"plugin 'Wrapper' \(registered at run time\): gateway_after_response cannot be a wrapper"),
], ids=["unknown hook", "wrong argument", "no hook", "wrapper"])
def test_a_malformed_plugin_stops_start_up_naming_it(tmp_path, plugin, message):
    with pytest.raises(ConfigError, match=message):
        make_app(tmp_path, plugins=(plugin,))


def test_a_module_with_a_misnamed_hook_stops_start_up_naming_the_module(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(
        "from gateway import hookimpl\n\n@hookimpl\ndef gateway_enrich(completion):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"plugin 'typo_plugin' \(GATEWAY_PLUGINS\): unknown hook 'gateway_enrich'"):
        make_app(tmp_path, {"plugins": ["typo_plugin"]})


# tracing


def traced_calls(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "plugin hook call"]


def test_trace_plugins_logs_each_hook_call_with_its_duration(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GATEWAY_TRACE_PLUGINS", "1")
    recorder = Recorder()
    app = make_app(tmp_path, plugins=(recorder,))
    key = issue_key(app)
    with caplog.at_level(logging.INFO, logger="gateway.plugins"):
        assert chat(app.test_client(), key).status_code == 200
    calls = {(r.hook, tuple(r.plugins)): r.duration_ms for r in traced_calls(caplog)}
    recorder_name = "Recorder"
    assert ("gateway_authenticate", ("apikey",)) in calls
    assert ("gateway_select_provider", ("routing",)) in calls
    assert ("gateway_enrich_request", (recorder_name,)) in calls
    assert ("gateway_after_response", ("analytics",)) in calls
    assert ("gateway_after_response", (recorder_name,)) in calls
    assert all(isinstance(ms, float) and ms >= 0 for ms in calls.values())


def test_without_trace_plugins_no_hook_call_is_logged(tmp_path, caplog):
    app = make_app(tmp_path)
    key = issue_key(app)
    with caplog.at_level(logging.INFO, logger="gateway.plugins"):
        assert chat(app.test_client(), key).status_code == 200
    assert traced_calls(caplog) == []

