"""Cold start as Lambda pays it: a fresh process imports Zappa's handler and the app, and serves one request.

    .venv/bin/python bench/coldstart.py [--runs 9] [--package dist/ai-gateway-dev.zip] [--write bench/RESULTS.md]

Two apps under the same handler and the same generated ``zappa_settings.py``:
the gateway (dev stage's Lambda environment, SQLite instead of DynamoDB) serving its
first chat completion with the echo model, and a hello-world Flask app serving its
first GET. Runs alternate between the two so machine load hits both alike. For each
app the median CPU seconds from process start to the first answer is reported (the
ratio, target at most 1.3, is on these: CPU time is what a Lambda vCPU pays and,
unlike wall time, barely moves when other processes share this machine's cores),
with the wall-clock medians beside them.

By default both run from this checkout in the development virtualenv. With
``--package`` (``make package`` builds it) both run from that unzipped Zappa package
and the runtime's own boto3 stack, nothing else on ``sys.path``: what Lambda runs.
The development virtualenv holds about 150 distributions against the package's 58,
and the gateway scans installed distributions for plugin entry points, so the
packaged figure is the one that stands for Lambda.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.lambda_harness import (  # noqa: E402
    LAMBDA_RUNTIME,
    create_key_for,
    generate_settings,
    local_environment,
    proxy_event,
    run_events,
)

HELLO_APP = '''from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return {"hello": "world"}
'''
TARGET = 1.3


def prepare(work: Path) -> dict[str, tuple[Path, list[dict], dict[str, str]]]:
    """Settings directory, events and environment for each app."""
    gateway_dir, hello_dir = work / "gateway", work / "hello"
    gateway_dir.mkdir()
    hello_dir.mkdir()
    settings = generate_settings("dev", gateway_dir).read_text()
    (hello_dir / "zappa_settings.py").write_text(settings.replace("APP_MODULE='gateway.wsgi'",
                                                                  "APP_MODULE='hello_app'"))
    (hello_dir / "hello_app.py").write_text(HELLO_APP)
    environment = local_environment("dev", gateway_dir / "gateway.db")
    key = create_key_for(environment, "bench", "enterprise")
    chat = {"model": "echo", "messages": [{"role": "user", "content": "cold start"}]}
    return {
        "gateway": (gateway_dir, [proxy_event("POST", "/v1/chat/completions", chat, {"X-API-Key": key})],
                    environment),
        "hello-world": (hello_dir, [proxy_event("GET", "/")], dict(LAMBDA_RUNTIME)),
    }


#: What the Lambda Python runtime provides besides the standard library (the package leaves them out).
RUNTIME_LIBRARIES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "six.py", "urllib3")


def lambda_layout(package: Path, work: Path) -> list[Path]:
    """Unzip ``package`` and link the runtime's libraries beside it; returns the ``sys.path`` to run with.

    Files keep the dates their zip entries carry (Zappa writes none, so 1980-01-01), and
    the runs write no bytecode (``/var/task`` is read-only on Lambda): a ``.pyc`` in the
    package that records another source date is recompiled on every cold start, here as there.
    """
    task, runtime = work / "task", work / "runtime"
    with zipfile.ZipFile(package) as archive:
        for entry in archive.infolist():  # with the entry's own date, as Lambda unpacks it
            stamp = time.mktime((*entry.date_time, 0, 0, -1))
            os.utime(archive.extract(entry, task), (stamp, stamp))
    runtime.mkdir()
    site_packages = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for name in RUNTIME_LIBRARIES:
        if not (task / name).exists():
            os.symlink(site_packages / name, runtime / name)
    return [task, runtime]


def measure(runs: int, package: Path | None = None) -> dict[str, dict[str, list[float]]]:
    """CPU and wall seconds to the first answer of ``runs`` fresh processes per app."""
    seconds: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in ("gateway", "hello-world")}
    with tempfile.TemporaryDirectory() as scratch:
        apps = prepare(Path(scratch))
        code_paths = lambda_layout(package, Path(scratch)) if package else None
        for _ in range(runs):
            for name, (directory, events, environment) in apps.items():
                output, _ = run_events(directory, events, environment, code_paths=code_paths)
                status = output["answers"][0]["statusCode"]
                if status != 200:
                    raise SystemExit(f"{name}: first answer was {status}: {output['answers'][0]['body']}")
                seconds[name]["cpu"].append(output["cpu_seconds_to_first_answer"])
                seconds[name]["wall"].append(output["seconds_to_first_answer"])
    return seconds


def report(seconds: dict[str, dict[str, list[float]]], label: str, package: Path | None = None) -> str:
    """A Markdown section with the medians, spreads and the ratio."""

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f}"

    ratio = statistics.median(seconds["gateway"]["cpu"]) / statistics.median(seconds["hello-world"]["cpu"])
    rows = "\n".join(f"| {name} | {ms(v['cpu'])} | {min(v['cpu']) * 1000:.0f}–{max(v['cpu']) * 1000:.0f} | "
                     f"{ms(v['wall'])} |" for name, v in seconds.items())
    runs = len(seconds["gateway"]["cpu"])
    source = f"from the package `{package.name}`" if package else f"interpreter `{sys.prefix}`"
    return (f"## {label} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
            f"Python {platform.python_version()} on {platform.machine()}, {runs} runs each, "
            f"{source}; milliseconds from process start to the handler's first answer:\n\n"
            "| app | CPU median | CPU min–max | wall median |\n|---|---|---|---|\n" + rows + "\n\n"
            f"Ratio gateway / hello-world (CPU medians): **{ratio:.2f}** (target at most {TARGET}).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    parser.add_argument("--label", default="Cold start", help="the section title in the report")
    parser.add_argument("--package", type=Path, help="run both apps from this `zappa package` zip, as Lambda does")
    args = parser.parse_args()
    seconds = measure(args.runs, args.package)
    text = report(seconds, args.label, args.package)
    print(text)
    print(json.dumps(seconds))
    if args.write:
        with args.write.open("a") as file:
            file.write("\n" + text)


if __name__ == "__main__":
    main()
