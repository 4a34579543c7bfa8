"""Running the app as Lambda does: Zappa's generated settings, the stage's environment, API Gateway events.

Shared by tests/deploy/test_zappa_handler.py and bench/coldstart.py. Each run is a
fresh process (``lambda_driver.py``) that imports Zappa's real handler and feeds it
events, so import cost and first-request work are paid exactly as on a cold start.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("lambda_driver.py")
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def proxy_event(method: str, path: str, body: dict | None = None, headers: dict | None = None,
                authorizer: dict | None = None, stage: str = "dev") -> dict:
    """A REST API (v1) proxy integration event, as API Gateway sends it to the function."""
    headers = {"Host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", "User-Agent": "pytest",
               "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443",
               **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/{stage}{path}", "stage": stage,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "123456789012",
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "pytest"},
            **({"authorizer": authorizer} if authorizer else {})},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


def stage_setting(stage: str, name: str):
    """One of the stage's settings in zappa_settings.json, following ``extends`` as Zappa does."""
    settings = json.loads((ROOT / "zappa_settings.json").read_text())
    while name not in settings[stage]:
        stage = settings[stage]["extends"]
    return settings[stage][name]


def stage_environment(stage: str) -> dict[str, str]:
    """The stage's ``aws_environment_variables`` from zappa_settings.json."""
    return dict(stage_setting(stage, "aws_environment_variables"))


def function_environment(stage: str) -> dict[str, str]:
    """What the function's process sees on Lambda: the stage's variables, the runtime's own, and
    ``_HANDLER``, the handler Zappa configures (``lambda_handler``)."""
    return {**stage_environment(stage), **LAMBDA_RUNTIME, "_HANDLER": stage_setting(stage, "lambda_handler")}


#: What the Lambda runtime sets in every function's environment (the gateway reads the name to
#: know it is on Lambda: request-log writes then finish inside the request).
LAMBDA_RUNTIME = {"AWS_LAMBDA_FUNCTION_NAME": "ai-gateway-dev", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
                  "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11", "AWS_REGION": "us-east-1"}


def local_environment(stage: str, sqlite_path: Path) -> dict[str, str]:
    """The stage's Lambda environment (with the variables the Lambda runtime adds), on a SQLite
    file and without the SSM path, secret and DynamoDB response cache (they need AWS);
    rate-limit counters follow the store to SQLite."""
    environment = function_environment(stage)
    for remote in ("GATEWAY_SSM_PATH", "GATEWAY_SECRET_ID", "GATEWAY_RESPONSE_CACHE"):
        environment.pop(remote, None)
    return {**environment, "GATEWAY_STORE": "sqlite", "GATEWAY_SQLITE_PATH": str(sqlite_path)}



#: The zappa CLI asks pypi.org for a newer version on every command; send that to a closed local port.
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def base_environment(home: Path) -> dict[str, str]:
    """What every child process gets: PATH, a scratch HOME, fake AWS credentials, no network beyond 127.0.0.1."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **FAKE_AWS, **NO_NETWORK}


def generate_settings(stage: str, directory: Path) -> Path:
    """``zappa save-python-settings-file STAGE`` into ``directory``; returns the file."""
    target = directory / "zappa_settings.py"
    subprocess.run([str(Path(sys.executable).with_name("zappa")), "save-python-settings-file", stage,
                    "-o", str(target)], cwd=ROOT, env=base_environment(directory), check=True,
                   capture_output=True, timeout=120)
    return target


def create_key_for(environment: dict[str, str], user: str, tier: str = "free") -> str:
    """A key in the store that a process with ``environment`` will use (same settings, same pepper)."""
    from types import SimpleNamespace

    from gateway.config import Settings, read_sources
    from gateway.store import open_store
    from plugins.apikey import ApiKeySettings, create_key

    sources = read_sources({}, environ=environment)
    settings, declared = sources.load(Settings), {ApiKeySettings: sources.load(ApiKeySettings)}
    gateway = SimpleNamespace(settings=settings, store=open_store(settings), plugin_settings=declared)
    return create_key(gateway, user, tier)[0]


def run_events(settings_dir: Path, events: list[dict], environment: dict[str, str],
               timeout: float = 120, code_paths: list[Path] | None = None) -> tuple[dict, str]:
    """Feed ``events`` to a fresh handler process; returns (driver output, its stdout + stderr).

    By default the process runs this checkout in the development virtualenv. With
    ``code_paths`` (an unzipped ``zappa package`` and the runtime's own libraries, as
    Lambda lays them out) it sees only those and the standard library (``python -S``), and
    writes no bytecode there, as on Lambda's read-only ``/var/task``.
    """
    events_file, answers_file = settings_dir / "events.json", settings_dir / "answers.json"
    events_file.write_text(json.dumps(events))
    isolation = ["-S"] if code_paths else []
    if code_paths:  # /var/task is read-only: no bytecode is written next to the package's sources
        environment = {**environment, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, *isolation, str(DRIVER), str(settings_dir), str(events_file),
                           str(answers_file)],
                          capture_output=True, text=True, timeout=timeout, cwd=settings_dir,
                          env={**base_environment(settings_dir), **environment,
                               "PYTHONPATH": os.pathsep.join(map(str, code_paths or [ROOT]))})
    if done.returncode != 0:
        raise RuntimeError(f"lambda driver failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(answers_file.read_text()), done.stdout + done.stderr
