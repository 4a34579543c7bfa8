"""The peer to beat: the Portkey gateway (npm ``@portkey-ai/gateway``, pinned in ``portkey/``).

One node process, pinned to the server core like the gateway's one worker, pointed at the
same fake upstream by one request header (``x-portkey-config``: provider openai, a key and a
``custom_host``). It runs as ``npx @portkey-ai/gateway`` (its README's way) does, ``node
build/start-server.js``, with ``--port=P`` (its only spelling) and ``--headless`` (no web UI
routes; the per-request log it builds for the UI runs either way).
Its build starts no worker threads or child processes; node's own threads (V8 platform, libuv
pool) share the pinned core, and ``/proc/PID/stat`` counts them all.

Before the rounds it gets ``WARM_UP_S`` of load, so that the rounds see V8's optimised code (the gunicorn
targets get their one warm-up request; CPython has no JIT to wait for).

Installed from ``portkey/package-lock.json`` with ``npm ci`` when absent or not the locked version.
"""
from __future__ import annotations

import json
import operator
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

DIR = Path(__file__).resolve().parent / "portkey"
PACKAGE = DIR / "node_modules" / "@portkey-ai" / "gateway"
UPSTREAM_KEY = "sk-bench"
WARM_UP_S = 2  # of load (concurrency 8) before the measurements, after the idle RSS: node's JIT warm


def locked_version() -> str:
    lock = json.loads((DIR / "package-lock.json").read_text())
    return lock["packages"]["node_modules/@portkey-ai/gateway"]["version"]


def installed_version() -> str | None:
    try:
        return json.loads((PACKAGE / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def prepare() -> str | None:
    """Install the locked Portkey if needed; the reason to skip it, or None when it can run."""
    missing = [tool for tool in ("node", "npm") if not shutil.which(tool)]
    if missing:
        return f"skipping the Portkey target: {' and '.join(missing)} not found (apt-get install nodejs npm)"
    if installed_version() != locked_version():
        # --ignore-scripts: its only install script is patch-package, and the package ships no patches.
        done = subprocess.run(["npm", "ci", "--prefix", str(DIR), "--ignore-scripts", "--no-audit", "--no-fund"],
                              capture_output=True, text=True)
        if done.returncode != 0 or installed_version() != locked_version():
            return (f"skipping the Portkey target: npm ci --prefix {DIR} failed "
                    f"(exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return None


def versions() -> dict[str, str]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    modules = DIR / "node_modules"
    return {"portkey": installed_version() or "?", "node": node,
            "hono": json.loads((modules / "hono" / "package.json").read_text())["version"],
            "hono_node_server": json.loads((modules / "@hono" / "node-server" / "package.json").read_text())["version"]}


def describe(info: dict) -> str:
    return (f"Portkey {info['portkey']} on node {info['node']} (hono {info['hono']}, @hono/node-server "
            f"{info['hono_node_server']}): one process, {info['threads']} threads (V8's and libuv's, "
            "no worker threads).")


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    found = [int(p) for p in out.split()]
    return found + [grandchild for child in found for grandchild in descendants(child)]


class Portkey:
    """``node build/start-server.js`` pinned to ``core``, forwarding to ``upstream_url`` (nginx)."""

    name = "portkey"

    def __init__(self, core: str, port: int, upstream_url: str, log: Path, wait_ready):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = {"provider": "openai", "api_key": UPSTREAM_KEY, "custom_host": f"{upstream_url}/v1"}
        # What wrk and the check send: the upstream's key as the bearer (Portkey has no client keys of
        # its own; the config's api_key is what it forwards) and the config.
        self.key = UPSTREAM_KEY
        self.extra_headers = {"x-portkey-config": json.dumps(config)}
        launched = time.perf_counter()
        self.process = subprocess.Popen(
            ["taskset", "-c", core, "node", "build/start-server.js", f"--port={port}", "--headless"],
            cwd=PACKAGE, stdout=open(log, "a"), stderr=subprocess.STDOUT)
        try:
            wait_ready(f"{self.url}/")
        except RuntimeError:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - launched

    @property
    def workers(self) -> list[int]:
        """The node process and any children (there are none in 1.15.2)."""
        return [self.process.pid] + descendants(self.process.pid)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def check(self, upstream_url: str, body: bytes) -> None:
        """Fail loudly unless a completion through Portkey is a 200 carrying the upstream's own JSON."""
        def post(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
            request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        _, direct = post(upstream_url, {})
        status, through = post(self.url, {"Authorization": f"Bearer {self.key}", **self.extra_headers})
        try:
            same = json.loads(through) == json.loads(direct)
        except ValueError:
            same = False
        if status != 200 or not same:
            raise RuntimeError(f"Portkey does not forward to the fake upstream: HTTP {status}, "
                               f"body {through[:500]!r}, expected {direct[:200]!r}...")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def targets(rounds: list[dict]) -> list[dict]:
    """This issue's targets against Portkey, over every round: CPU per request at each level no more than
    Portkey's, requests/s at concurrency 8 at least Portkey's, added p99 at concurrency 1 below Portkey's."""
    def added_p99_ms(runs: dict, name: str) -> float:
        return (runs[name]["p99_us"] - runs["direct"]["p99_us"]) / 1000

    def cpu(runs: dict, name: str) -> float:
        return runs[name]["cpu_ms_per_request"]

    def rps(runs: dict, name: str) -> float:
        return runs[name]["rps"]

    checks = [(f"CPU ms/request @{level} <= Portkey's", level, cpu, operator.le) for level in rounds[0]]
    checks += [("req/s @8 >= Portkey's", 8, rps, operator.ge),
               ("added p99 ms @1 < Portkey's", 1, added_p99_ms, operator.lt)]
    found = []
    for label, level, value, holds in checks:
        if level not in rounds[0]:
            found.append({"target": label, "measured": False})
            continue
        pairs = [(value(levels[level], "gateway"), value(levels[level], "portkey")) for levels in rounds]
        found.append({"target": label, "measured": True, "gateway": [g for g, _ in pairs],
                      "portkey": [p for _, p in pairs], "ratio": [g / p if p else None for g, p in pairs],
                      "met": [holds(g, p) for g, p in pairs]})
    return found


def render_targets(found: list[dict]) -> list[str]:
    """Markdown lines: one row per target, one figure per round (separated by ';')."""
    def figures(values, fmt="{:.2f}") -> str:
        return "; ".join("-" if v is None else fmt.format(v) for v in values)

    lines = ["Targets against Portkey (gateway / Portkey, same run; one figure per round):", "",
             "| target | gateway | Portkey | ratio | met? |", "|---|---|---|---|---|"]
    for t in found:
        if not t["measured"]:
            lines.append(f"| {t['target']} | - | - | - | not measured (level not in --levels) |")
            continue
        fmt = "{:.0f}" if t["target"].startswith("req/s") else "{:.2f}"
        met = sum(t["met"])
        verdict = "**met**" if met == len(t["met"]) else (
            "**not met**" if not met else f"**not met** (met in {met} of {len(t['met'])} rounds)")
        lines.append(f"| {t['target']} | {figures(t['gateway'], fmt)} | {figures(t['portkey'], fmt)} | "
                     f"{figures(t['ratio'])} | {verdict} |")
    return lines
