"""The dev console: one plain access line per request on stderr, and no EMF lines unless on Lambda or asked."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.config import load_settings
from gateway.logs import ACCESS_LOGGER, access_line
from gateway.testing import issue_key, make_app, serve
from tests.fakes.servers import free_port

LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) (?P<ms>\d+\.\d) ms "
                  r"key=(?P<key>\S+) cid=(?P<cid>\S+)$")


def access_lines(capsys) -> list[dict]:
    """The access lines printed on stderr so far, parsed (every stderr line must be one)."""
    lines = capsys.readouterr().err.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    return [match.groupdict() for match in parsed]


def test_one_plain_line_per_request_with_key_id_and_correlation_id(tmp_path, capsys):
    app = make_app(tmp_path)
    key = issue_key(app, permissions=("completions",))
    key_id = key.split("_")[2]
    with serve(app) as url:
        capsys.readouterr()
        chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(f"{url}/v1/chat/completions", json=chat, headers={"X-API-Key": key, "X-Correlation-ID": "c-1"})
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**chat, "stream": True},
                          headers={"Authorization": f"Bearer {key}"}) as stream:
            assert stream.read().endswith(b"data: [DONE]\n\n")
        httpx.get(f"{url}/api/v1/admin/keys", headers={"X-API-Key": key})
        httpx.get(f"{url}/v1/models", headers={"X-API-Key": key[:-4] + "abcd"})
        httpx.get(f"{url}/health")
    lines = access_lines(capsys)
    assert [(line["method"], line["path"], line["status"], line["key"]) for line in lines] == [
        ("POST", "/v1/chat/completions", "200", key_id), ("POST", "/v1/chat/completions", "200", key_id),
        ("GET", "/api/v1/admin/keys", "403", key_id), ("GET", "/v1/models", "401", "-"),
        ("GET", "/health", "200", "-")]
    assert lines[0]["cid"] == "c-1" and all(len(line["cid"]) == 32 for line in lines[1:])
    assert all(float(line["ms"]) > 0 for line in lines)
    assert key.split("_", 3)[3] not in capsys.readouterr().err  # the secret may hold "_"


def test_a_secret_or_line_break_in_the_path_stays_out_of_the_line():
    line = access_line("GET", "/v1/gw_test_0123abcd_s3cretS3cretS3cret\nFAKE 200", 404, 1.0, None, "c")
    assert line == "GET /v1/gw_test_0123abcd_…%0AFAKE%20200 404 1.0 ms key=- cid=c"
    assert "sk-abcdef" not in access_line("GET", "/x/sk-abcdefabcdefabcdef", 404, 1.0, None, "c")


def test_log_level_warning_silences_the_access_line(tmp_path, capsys):
    app = make_app(tmp_path, {"log_level": "WARNING"})
    try:
        with serve(app) as url:
            capsys.readouterr()
            assert httpx.get(f"{url}/health").status_code == 200
        assert capsys.readouterr().err == ""
    finally:
        logging.getLogger("gateway").setLevel(logging.INFO)
    assert logging.getLogger(ACCESS_LOGGER).propagate is False  # printed once, not again as JSON


def test_emf_lines_by_default_only_on_lambda(monkeypatch):
    assert load_settings().metrics_emf is False
    assert load_settings({"metrics_emf": True}).metrics_emf is True
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ai-gateway-dev")
    assert load_settings().metrics_emf is True
    monkeypatch.setenv("GATEWAY_METRICS_EMF", "false")
    assert load_settings().metrics_emf is False


def test_no_emf_line_on_the_dev_console(tmp_path, capsys):
    app = make_app(tmp_path)
    key = issue_key(app)
    response = app.test_client().post("/v1/chat/completions", headers={"X-API-Key": key},
                                      json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert capsys.readouterr().out == ""


def test_the_reloading_dev_server_prints_access_lines_too(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "GATEWAY_SQLITE_PATH": str(tmp_path / "gateway.db")}
    gateway = Path(sys.executable).parent / "gateway"
    with open(log, "wb") as out:  # its own session: the reloader's child goes with it
        server = subprocess.Popen([str(gateway), "serve", "--reload", "--port", str(port)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        time.sleep(0.2)  # the line is written once the answer has been sent
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    lines = [LINE.match(line) for line in log.read_text().splitlines()]
    assert [(m["method"], m["path"], m["status"], m["key"]) for m in lines if m] == [("GET", "/health", "200", "-")]
