"""The per-key limit on calls in flight, through the pipeline (SQLite counters, real HTTP where the
way a call ends matters): a full key answers 429 ``concurrency_limit_exceeded``; every way a call
ends gives its slot back; a key's own limit beats its tier's; a crashed holder's slot comes back
within the lease; and on SQLite a slot costs one statement to take and one to give back."""
from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time

import flask
import httpx
import pytest
from click.testing import CliRunner

from gateway import pipeline
from gateway.cli import build_cli
from gateway.concurrency import Slots
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.leases import SQLiteLeases
from gateway.plugins import build_plugin_manager
from gateway.schemas import CHAT_COMPLETION
from gateway.testing import chat, issue_key, serve
from gateway.types import Caller
from tests.fakes.openai_server import Scripted, error_body, stream_events
from tests.test_keys_cli_and_setup import cli_runner
from tests.test_streaming import wait_for

MESSAGES = [{"role": "user", "content": "hello"}]


def live_leases(app) -> int:
    """Unexpired leases in the shared counters file (what every worker counts)."""
    storage = app.extensions["gateway"].limiter.storage
    return storage.connection().execute("SELECT count(*) FROM leases WHERE expires_at > ?",
                                        (time.time(),)).fetchone()[0]


def held(app) -> dict:
    return app.extensions["gateway"].limiter.slots.held()


def open_stream(client, key, model="gpt-4o-mini"):
    """A streamed call whose answer is not read yet: its slot stays taken until it is."""
    return client.post("/v1/chat/completions", headers={"X-API-Key": key},
                       json={"model": model, "messages": MESSAGES, "stream": True})


def test_a_full_key_gets_429_concurrency_limit_exceeded_then_a_slot_when_one_ends(openai_app, fake_openai):
    key = issue_key(openai_app, concurrent_requests=1)
    client = openai_app.test_client()
    stream = open_stream(client, key)
    assert stream.status_code == 200 and live_leases(openai_app) == 1
    refused = chat(client, key, model="gpt-4o-mini")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.get_json()["error"] == {
        "message": "Concurrency limit of 1 calls in flight reached for this key; retry when one of them has ended.",
        "type": "rate_limit_error", "param": None, "code": "concurrency_limit_exceeded"}
    assert len(fake_openai.requests) == 1  # the refused call never reached the upstream
    assert b"[DONE]" in stream.get_data()
    assert (live_leases(openai_app), held(openai_app)) == (0, {})
    assert chat(client, key, model="gpt-4o-mini").status_code == 200


def _answer(url, key, fake):
    assert httpx.post(f"{url}/v1/chat/completions", headers={"X-API-Key": key},
                      json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200


def _upstream_error(url, key, fake):
    fake.push(*[Scripted(status=503, body=error_body("down"))] * 3)  # the first try and both retries
    assert httpx.post(f"{url}/v1/chat/completions", headers={"X-API-Key": key},
                      json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 502


def _stream_to_the_end(url, key, fake):
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"X-API-Key": key},
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as response:
        assert response.read().rstrip().endswith(b"data: [DONE]")


def _stream_failing_upstream(url, key, fake):
    fake.push(Scripted(events=stream_events("gpt-4o-mini", "one two three four"), reset_after=2))
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"X-API-Key": key},
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as response:
        assert b'"error"' in response.read()


def _client_gone_mid_stream(url, key, fake):
    words = " ".join(f"w{i}" for i in range(100))
    fake.push(Scripted(events=stream_events("gpt-4o-mini", words), event_delay=0.05))
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"X-API-Key": key}, timeout=15,
                      json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as response:
        assert next(response.iter_lines()).startswith("data: ")
    wait_for(lambda: fake.aborted and fake.aborted[0])  # the gateway noticed and hung up upstream


@pytest.mark.parametrize("ending", [_answer, _upstream_error, _stream_to_the_end, _stream_failing_upstream,
                                    _client_gone_mid_stream], ids=lambda f: f.__name__.strip("_"))
def test_every_way_a_call_ends_gives_its_slot_back(openai_app, fake_openai, ending):
    key = issue_key(openai_app, concurrent_requests=1)
    with serve(openai_app) as url:
        ending(url, key, fake_openai)
        wait_for(lambda: live_leases(openai_app) == 0 and held(openai_app) == {}, timeout=5)
        _answer(url, key, fake_openai)  # the one slot is free again


@contextlib.contextmanager
def streamed_answer(app, key):
    """The pipeline's answer to a streamed completion, inside its request, its chunks not read yet."""
    with app.test_request_context("/v1/chat/completions", method="POST", headers={"X-API-Key": key},
                                  json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}):
        app.preprocess_request()
        yield pipeline.complete(app.extensions["gateway"], flask.request, CHAT_COMPLETION)


def test_a_stream_gives_its_slot_back_as_it_ends_and_one_never_read_when_it_is_dropped(openai_app):
    key = issue_key(openai_app, concurrent_requests=1)
    with streamed_answer(openai_app, key) as answer:
        assert live_leases(openai_app) == 1
        list(answer.chunks)
        assert (live_leases(openai_app), held(openai_app)) == (0, {})  # at its end, not when collected
    with streamed_answer(openai_app, key) as answer:  # a server that never reads the answer
        assert live_leases(openai_app) == 1
        del answer
        gc.collect()
        assert (live_leases(openai_app), held(openai_app)) == (0, {})


def test_a_keys_own_limit_beats_its_tiers_either_way(tmp_path, fake_openai, upstreams_app):
    app = upstreams_app({"tiers": {"free": {"concurrent_requests": 2}}})
    client = app.test_client()
    by_tier, wider, narrower = (issue_key(app, "a"), issue_key(app, "b", concurrent_requests=3),
                                issue_key(app, "c", concurrent_requests=1))
    for key, allowed in ((by_tier, 2), (wider, 3), (narrower, 1)):
        streams = [open_stream(client, key) for _ in range(allowed)]
        assert [s.status_code for s in streams] == [200] * allowed
        assert chat(client, key, model="gpt-4o-mini").get_json()["error"]["code"] == "concurrency_limit_exceeded"
        for stream in streams:
            stream.get_data()
    assert live_leases(app) == 0


def test_the_tier_default_comes_from_the_tiers_setting_which_refuses_nonsense():
    settings = load_settings({"tiers": {"basic": {"concurrent_requests": 7}}}, environ={})
    assert (settings.tier("basic").concurrent_requests, settings.tier("free").concurrent_requests) == (7, 4)
    for bad in ({"tiers": {"free": {"concurrent_requests": 0}}}, {"concurrency_lease_seconds": 1}):
        with pytest.raises(ConfigError, match="concurren"):
            load_settings(bad, environ={})


def test_held_slots_are_renewed_and_a_crashed_holders_slot_comes_back_within_the_lease(app):
    storage = app.extensions["gateway"].limiter.storage
    mine, theirs = Slots(SQLiteLeases(storage), 0.6), Slots(SQLiteLeases(storage), 0.6)
    slot = mine.hold("k", mine.take("k", 1))
    time.sleep(1.0)  # past the lease: only the renewals keep it
    assert theirs.take("k", 1) is None
    slot.release()
    assert theirs.take("k", 1) is not None
    # A holder killed while holding a slot (a worker's crash): its lease runs out, nothing gives it back.
    uri = f"sqlite:///{storage.path}"
    crash = ("import os, sys\nfrom limits.storage import storage_from_string\nimport gateway.limit_storage\n"
             "from gateway.concurrency import Slots\nfrom gateway.leases import SQLiteLeases\n"
             f"slots = Slots(SQLiteLeases(storage_from_string({uri!r})), 1.5)\n"
             "slots.hold('crash', slots.take('crash', 1)); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", crash], timeout=30).returncode == 9
    assert theirs.take("crash", 1) is None
    time.sleep(1.6)
    assert theirs.take("crash", 1) is not None


def test_on_sqlite_a_slot_costs_one_statement_to_take_in_the_hits_transaction_and_one_to_give_back(app):
    limiter = app.extensions["gateway"].limiter
    statements: list[str] = []
    limiter.storage.connection().set_trace_callback(statements.append)
    with app.test_request_context():
        entry = limiter.enter(Caller(user_id="u", key_id="k1", concurrent_requests=1))
    taking = [s for s in statements if "leases" in s]
    assert len(taking) == 1 and taking[0].lstrip().startswith("INSERT INTO leases")
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"  # with the rate-limit hit
    statements.clear()
    entry.slot.release()
    assert len(statements) == 1 and statements[0].startswith("DELETE FROM leases")


def test_the_admin_api_and_the_cli_set_a_keys_own_limit(tmp_path, monkeypatch, fake_openai, upstreams_app):
    app = upstreams_app()
    client = app.test_client()
    admin = {"X-API-Key": issue_key(app, "root", permissions=("admin",))}
    created = client.post("/api/v1/admin/keys", headers=admin, json={"user_id": "bob", "concurrent_requests": 1})
    assert created.status_code == 201 and created.get_json()["concurrent_requests"] == 1
    key, key_id = created.get_json()["key"], created.get_json()["key_id"]
    stream = open_stream(client, key)
    assert chat(client, key, model="gpt-4o-mini").status_code == 429
    changed = client.patch(f"/api/v1/admin/keys/{key_id}", headers=admin, json={"concurrent_requests": 2})
    assert changed.status_code == 200 and changed.get_json()["concurrent_requests"] == 2
    assert chat(client, key, model="gpt-4o-mini").status_code == 200  # the change took effect at once
    stream.get_data()
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "gateway.db"))
    run = cli_runner()
    made = json.loads(run("keys", "create", "--user", "carol", "--concurrent-requests", "3", "--json").output)
    assert app.extensions["gateway"].store.get_key(made["key_id"]).concurrent_requests == 3
    refused = CliRunner().invoke(build_cli(build_plugin_manager(load_settings())),
                                 ["keys", "create", "--user", "dave", "--concurrent-requests", "0"])
    assert refused.exit_code == 2 and "--concurrent-requests" in refused.output
