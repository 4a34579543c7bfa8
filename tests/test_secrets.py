"""Keys are stored only as hashes; no key, pepper or provider secret reaches a log line or an answer."""
from __future__ import annotations

import logging
import sqlite3

from gateway.testing import issue_key, make_app
from tests.fakes.openai_server import Scripted

PEPPER = "pepper-under-test-0123456789abcdef"
UPSTREAM_SECRET = "sk-test-upstream-secret-0123456789"


def test_plaintext_key_appears_nowhere_in_the_store_or_the_logs(tmp_path, monkeypatch, fake_openai,
                                                                capfd, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    db = tmp_path / "gateway.db"
    caplog.set_level(logging.DEBUG)
    app = make_app(tmp_path, {"key_pepper": PEPPER, "log_level": "DEBUG", "retry_attempts": 0})
    key = issue_key(app, permissions=("completions",))
    secret = key.split("_", 3)[3]
    client = app.test_client()
    fake_openai.push(Scripted(status=401, body={"error": {"message": "bad key"}}),
                     Scripted(status=500, body={"error": {"message": "boom"}}))
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    answers = [
        client.post("/v1/chat/completions", json=chat, headers={"X-API-Key": key}),
        client.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}),
        client.post("/v1/chat/completions", json=chat, headers={"X-API-Key": key[:-3] + "zzz"}),
        client.post("/v1/chat/completions", json={**chat, "model": "echo"}, headers={"X-API-Key": key}),
        client.post("/v1/chat/completions", data="{", content_type="application/json",
                    headers={"X-API-Key": key}),
    ]
    assert [a.status_code for a in answers] == [502, 502, 401, 200, 400]

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("gateway.db*"))
    row = sqlite3.connect(db).execute("SELECT key_hash FROM api_keys").fetchone()[0]
    assert len(row) == 64 and secret not in row
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records) + "".join(capfd.readouterr())
    texts = {"store": stored.decode("latin-1"), "logs": logged,
             "answers": "".join(a.get_data(as_text=True) + str(a.headers) for a in answers)}
    for where, text in texts.items():
        for needle in (key, secret, PEPPER, UPSTREAM_SECRET):
            assert needle not in text, f"{needle[:12]}… found in {where}"
    assert caplog.records, "the test must actually have captured log lines"
