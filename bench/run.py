"""The benchmark: the gateway against the thinnest pass-through (``floor.py``) and against the
Portkey gateway (the peer to beat, ``portkey_peer.py``), same run, same machine.

Layout on a 2-core machine: the server under test (granian, one worker; Portkey: one node
process) is pinned to core 0; nginx (the fake upstream) and wrk (the load) to core 1. Each
concurrency level is measured direct to nginx, through the floor, through the gateway and
through Portkey, so overhead = server - direct is a like-for-like difference; the levels
run ``--rounds`` times against the same servers, which shows the spread and whether
resident memory stays flat. Then a streamed answer from a paced local upstream
(``stream_upstream.py``) is timed direct and through a gateway (time to first byte,
total), and the cold start through Zappa's handler (``coldstart.py``, from the Zappa
package that ``make bench`` builds first, as Lambda unpacks it) is measured.
Results go to ``bench/results/latest.json`` and Markdown tables on stdout.

Then the gateway in front of an upstream that takes a second per answer and streams for 90 s
(``paced.py``), at 64 and 256 concurrent.

Usage: ``python bench/run.py [--duration 10] [--levels 1,8,64] [--rounds 2]`` (``make bench``).
Needs nginx and wrk (Debian packages of those names) and taskset; node and npm for Portkey (skipped,
with a message, without them), which it installs into ``bench/portkey`` with ``npm ci`` when missing.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench import paced, portkey_peer  # noqa: E402
from gateway.plugins import ENTRY_POINT_GROUP  # noqa: E402
from gateway.serving import granian_argv  # noqa: E402

PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = "0", "1"
CHAT_BODY = BENCH / "chat.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 60.0, headers: dict | None = None) -> float:
    """Seconds until ``url`` first answers 200."""
    started = time.perf_counter()
    while True:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """The worker processes of a server's main process."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        total += int(match.group(1)) if match else 0
    return total / 1024


class Upstream:
    """nginx answering a fixed OpenAI body, on the load core."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        prefix = workdir / "nginx"
        prefix.mkdir()
        body = json.dumps(json.loads((BENCH / "upstream.json").read_text())).replace("'", "\\'")
        conf = (BENCH / "nginx.conf.template").read_text().replace("@PREFIX@", str(prefix)) \
            .replace("@PORT@", str(self.port)).replace("@BODY@", body)
        (prefix / "nginx.conf").write_text(conf)
        self.process = subprocess.Popen(["taskset", "-c", LOAD_CORE, "nginx", "-p", str(prefix),
                                         "-c", str(prefix / "nginx.conf")])
        wait_ready(f"http://127.0.0.1:{self.port}/health")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        self.process.wait(timeout=10)


class Server:
    """A WSGI app served as ``gateway serve`` serves the gateway (granian, one worker), pinned to the
    server core."""

    def __init__(self, name: str, app: str, env: dict[str, str], workers: int = 1):
        self.name = name
        self.port = free_port()
        launched = time.perf_counter()
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *granian_argv("127.0.0.1", self.port, workers, app=app)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(env["BENCH_LOG"], "a"))
        wait_ready(f"http://127.0.0.1:{self.port}/health")
        self.startup_s = time.perf_counter() - launched
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = children(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


class StreamUpstream:
    """``stream_upstream.py``: a paced OpenAI SSE stream per request, on the load core."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, PYTHON, str(BENCH / "stream_upstream.py"), str(self.port)],
            stderr=open(workdir / "stream_upstream.log", "a"))
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(f"{self.url}/health")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def warm_up(url: str, key: str) -> None:
    """One completion, waited for: the first request loads what loads lazily (the SDK)."""
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=CHAT_BODY.read_bytes(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def stream_once(port: int, key: str, body: bytes) -> tuple[float, float, bool]:
    """(seconds to the first body byte, seconds to the end, ended with [DONE] after a 200)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    first = response.read1(65536)
    first_byte = time.perf_counter() - started
    rest = first + response.read()
    total = time.perf_counter() - started
    conn.close()
    return first_byte, total, response.status == 200 and rest.rstrip().endswith(b"data: [DONE]")


def measure_stream(port: int, key: str, count: int) -> dict:
    """Median and p90 time to first byte and total time of ``count`` streamed answers, one at a time."""
    body = json.dumps({**json.loads(CHAT_BODY.read_text()), "stream": True}).encode()
    stream_once(port, key, body)  # warm up
    runs = [stream_once(port, key, body) for _ in range(count)]

    def ms(values: list[float], percent: int) -> float:
        return statistics.quantiles(values, n=100)[percent - 1] * 1000

    ttfb, total = [r[0] for r in runs], [r[1] for r in runs]
    return {"requests": count, "errors": sum(not r[2] for r in runs),
            "ttfb_p50_ms": ms(ttfb, 50), "ttfb_p90_ms": ms(ttfb, 90),
            "total_p50_ms": ms(total, 50), "total_p90_ms": ms(total, 90)}


def cold_start(runs: int, package: Path | None) -> dict:
    """``coldstart.py``'s medians (CPU and wall ms to the first answer through Zappa's handler),
    from the Zappa package when there is one (``make package``), else from this checkout."""
    command = [PYTHON, str(BENCH / "coldstart.py"), "--runs", str(runs)]
    if package is not None:
        command += ["--package", str(package)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seconds = json.loads(out.strip().splitlines()[-1])
    return {app: {kind: statistics.median(values) * 1000 for kind, values in measured.items()}
            for app, measured in seconds.items()} | {"runs": runs, "source": package.name if package else "checkout"}


def run_wrk(url: str, connections: int, duration: int, key: str, headers: dict[str, str] | None = None) -> dict:
    threads = min(connections, 2)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t", str(threads), "-c", str(connections),
         "-d", f"{duration}s", "--latency", "-s", str(BENCH / "chat.lua"), f"{url}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "BENCH_KEY": key, "BENCH_BODY": str(CHAT_BODY),
             "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())}).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line.split(" ", 1)[1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure(server, url: str, connections: int, duration: int, key: str, headers: dict | None = None) -> dict:
    """wrk against ``url``; with a server (a ``Server`` or ``portkey_peer.Portkey``), its processes'
    CPU time per request and resident memory."""
    pids = server.workers if server else []
    before = cpu_seconds(pids) if pids else 0.0
    result = run_wrk(url, connections, duration, key, headers)
    if server:
        result["cpu_ms_per_request"] = (cpu_seconds(pids) - before) * 1000 / max(1, result["requests"])
        result["rss_mib_loaded"] = rss_mib(pids)
    return result


def import_time_s(module: str, env: dict[str, str]) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([PYTHON, "-c", code], env=env, cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
    return min(runs)


def gateway_environment(workdir: Path, upstream: Upstream) -> tuple[dict[str, str], str]:
    """Settings for the gateway under test (its built-in plugins only: installed plugin packages,
    such as the examples ``make install`` adds, are disabled), and a key created for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    installed = sorted(entry_point.name for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP))
    env.update({
        "GATEWAY_DISABLE_PLUGINS": ",".join(installed),
        "GATEWAY_SQLITE_PATH": str(workdir / "gateway.db"),
        "GATEWAY_TIER_LIMITS": json.dumps({"enterprise": 100_000_000}),
        "GATEWAY_LOG_LEVEL": "WARNING",  # also turns off the dev console's access line
        "GATEWAY_METRICS_EMF": "true",  # as on Lambda: the metrics are part of the work measured
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "BENCH_LOG": str(workdir / "servers.log"),
    })
    subprocess.run([PYTHON, "-m", "gateway.cli", "init"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    created = subprocess.run([PYTHON, "-m", "gateway.cli", "keys", "create", "--user", "bench",
                              "--tier", "enterprise", "--json"], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True)
    return env, json.loads(created.stdout)["key"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--levels", default="1,8,64", help="wrk connection counts")
    parser.add_argument("--rounds", type=int, default=2, help="times every level is measured")
    parser.add_argument("--streams", type=int, default=100, help="streamed answers timed per target (0: skip)")
    parser.add_argument("--coldstart-runs", type=int, default=15, help="fresh processes per app (0: skip)")
    parser.add_argument("--package", type=Path, default=ROOT / "dist" / "ai-gateway-dev.zip",
                        help="the Zappa package the cold start runs from (make package); absent: this checkout")
    parser.add_argument("--no-portkey", action="store_true", help="leave out the Portkey target")
    parser.add_argument("--paced-levels", default="64,256",
                        help="concurrency levels against the paced (1 s) upstream ('': skip)")
    parser.add_argument("--paced-stream-seconds", type=float, default=90,
                        help="length of the paced streams, that many at once per level (0: skip)")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench needs {tool} (apt-get install nginx wrk util-linux)")
    levels = [int(level) for level in args.levels.split(",")]
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # this process times the streams: keep it off the server's core
    portkey_skipped = "the Portkey target left out (--no-portkey)" if args.no_portkey else portkey_peer.prepare()
    if portkey_skipped:
        print(portkey_skipped, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        upstream = Upstream(workdir)
        env, key = gateway_environment(workdir, upstream)
        floor_env = {**env, "FLOOR_UPSTREAM": f"{upstream.url}/v1/chat/completions", "BENCH_KEY": key}
        report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                        "python": platform.python_version(), "duration_s": args.duration,
                        "load_average": os.getloadavg()[0],
                        "import_s": {"floor": import_time_s("bench.floor", floor_env),
                                     "gateway": import_time_s("gateway.wsgi", env)},
                        "rounds": [], "servers": {}}
        if portkey_skipped:
            report["portkey_skipped"] = portkey_skipped
        servers: dict = {}
        try:
            servers["floor"] = Server("floor", "bench.floor:app", floor_env)
            servers["gateway"] = Server("gateway", "gateway.wsgi:app", env)
            clients = {name: (key, None) for name in servers}  # what wrk sends each: key, further headers
            for server in servers.values():
                warm_up(server.url, key)
            if not portkey_skipped:
                portkey = servers["portkey"] = portkey_peer.Portkey(
                    SERVER_CORE, free_port(), upstream.url, workdir / "portkey.log", wait_ready)
                portkey.check(upstream.url, CHAT_BODY.read_bytes())  # also its warm-up
                clients["portkey"] = (portkey.key, portkey.extra_headers)
                report["portkey"] = {**portkey_peer.versions(), "threads": portkey.threads()}
            for name, server in servers.items():
                report["servers"][name] = {"startup_s": server.startup_s,
                                           "rss_mib_idle": rss_mib(server.workers), "rss_mib_after": []}
            if "portkey" in servers:  # V8 optimises hot code after some thousand calls: measure it warm
                run_wrk(portkey.url, 8, portkey_peer.WARM_UP_S, *clients["portkey"])
            for _ in range(args.rounds):
                report["rounds"].append({level: {
                    "direct": measure(None, upstream.url, level, args.duration, key),
                    **{name: measure(server, server.url, level, args.duration, *clients[name])
                       for name, server in servers.items()}} for level in levels})
                for name, server in servers.items():
                    report["servers"][name]["rss_mib_after"].append(rss_mib(server.workers))
            stop_all(servers)
            if "portkey" in report:
                report["targets_vs_portkey"] = portkey_peer.targets(report["rounds"])
            if args.streams:
                report["streaming"] = stream_report(workdir, env, key, args.streams)
            if args.paced_levels:
                report["paced"] = paced.measure(sys.modules[__name__], workdir, env, key,
                                                [int(level) for level in args.paced_levels.split(",")],
                                                args.duration, stream_seconds=args.paced_stream_seconds,
                                                floor_env=floor_env, with_portkey=not portkey_skipped)
        finally:
            stop_all(servers)
            upstream.stop()
    if args.coldstart_runs:
        report["coldstart_ms"] = cold_start(args.coldstart_runs, args.package if args.package.exists() else None)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))


def stop_all(servers: dict) -> None:
    """Stop the servers still in ``servers`` (all of them, also after a failure), emptying it."""
    while servers:
        servers.popitem()[1].stop()


def stream_report(workdir: Path, env: dict[str, str], key: str, count: int) -> dict:
    """Streamed answers direct from the paced upstream and through a gateway in front of it."""
    streamer = StreamUpstream(workdir)
    try:
        gateway = Server("gateway", "gateway.wsgi:app", {**env, "OPENAI_BASE_URL": f"{streamer.url}/v1"})
        try:
            return {"direct": measure_stream(streamer.port, key, count),
                    "gateway": measure_stream(gateway.port, key, count)}
        finally:
            gateway.stop()
    finally:
        streamer.stop()


def render(report: dict) -> str:
    """The report as Markdown: per level and round, ratios to the floor and to Portkey, the targets against
    Portkey, streaming, cold start."""
    lines = [f"Run {report['date']} on {report['machine']}, Python {report['python']}, "
             f"{report['duration_s']} s per measurement, load average {report['load_average']:.2f} at the start."
             + (f" {portkey_peer.describe(report['portkey'])}" if "portkey" in report else ""),
             "", "| round | conc. | target | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms "
             "| CPU ms/req | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for number, levels in enumerate(report["rounds"], 1):
        for level, runs in levels.items():
            direct = runs["direct"]
            for target, r in runs.items():
                added50 = (r["p50_us"] - direct["p50_us"]) / 1000
                added99 = (r["p99_us"] - direct["p99_us"]) / 1000
                cpu = f"{r['cpu_ms_per_request']:.2f}" if "cpu_ms_per_request" in r else "-"
                lines.append(f"| {number} | {level} | {target} | {r['rps']:.0f} | {r['p50_us'] / 1000:.2f} | "
                             f"{r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
                             f"{added50:.2f} | {added99:.2f} | {cpu} | {r['socket_errors'] + r['non2xx']} |")
    if "portkey_skipped" in report:
        lines += ["", report["portkey_skipped"][0].upper() + report["portkey_skipped"][1:]]
    servers = report["servers"]
    names = ["floor", "gateway", *(["portkey"] if "portkey" in servers else [])]
    peers = [name for name in names if name != "gateway"]  # what the gateway is divided by
    lines += ["", f"| | {' | '.join(names)} | {' | '.join(f'gateway / {peer}' for peer in peers)} |",
              "|---|" + "---|" * (len(names) + len(peers))]

    def row(label, values: dict, fmt="{:.2f}"):
        cells = [fmt.format(values[name]) if values.get(name) is not None else "-" for name in names]
        ratios = [f"{values['gateway'] / values[peer]:.2f}" if values.get(peer) else "-" for peer in peers]
        lines.append(f"| {label} | {' | '.join(cells + ratios)} |")

    for number, levels in enumerate(report["rounds"], 1):
        for level, runs in levels.items():
            direct = runs["direct"]
            row(f"CPU ms/req @{level} (round {number})", {n: runs[n]["cpu_ms_per_request"] for n in names})
            row(f"req/s @{level} (round {number})", {n: runs[n]["rps"] for n in names}, "{:.0f}")
            row(f"added p50 ms @{level} (round {number})",
                {n: (runs[n]["p50_us"] - direct["p50_us"]) / 1000 for n in names})
            row(f"added p99 ms @{level} (round {number})",
                {n: (runs[n]["p99_us"] - direct["p99_us"]) / 1000 for n in names})
    row("start-up to first 200 (s)", {n: servers[n]["startup_s"] for n in names})
    row("import (s)", report["import_s"], "{:.3f}")
    row("RSS idle (MiB)", {n: servers[n]["rss_mib_idle"] for n in names}, "{:.1f}")
    for number in range(len(report["rounds"])):
        row(f"RSS after round {number + 1} (MiB)", {n: servers[n]["rss_mib_after"][number] for n in names}, "{:.1f}")
    if "portkey" in servers:
        lines += ["", *portkey_peer.render_targets(report["targets_vs_portkey"])]
    if "streaming" in report:
        lines += ["", f"Streamed answers, one at a time ({report['streaming']['direct']['requests']} each; the "
                  "upstream paces 20 chunks 5 ms apart):", "",
                  "| target | first byte p50 ms | p90 ms | total p50 ms | p90 ms | errors |",
                  "|---|---|---|---|---|---|"]
        for target, r in report["streaming"].items():
            lines.append(f"| {target} | {r['ttfb_p50_ms']:.2f} | {r['ttfb_p90_ms']:.2f} | {r['total_p50_ms']:.2f} | "
                         f"{r['total_p90_ms']:.2f} | {r['errors']} |")
    if "paced" in report:
        fast_cpu = {target: {level: statistics.mean(r[level][target]["cpu_ms_per_request"] for r in report["rounds"])
                             for level in report["rounds"][0]} for target in report["paced"]["answers"]}
        lines += ["", *paced.render(report["paced"], fast_cpu)]
    if "coldstart_ms" in report:
        cold = report["coldstart_ms"]
        lines += ["", f"Cold start through Zappa's handler (`coldstart.py`, from {cold.get('source', 'checkout')}, "
                  f"{cold['runs']} fresh processes each, median ms to the first answer):", "",
                  "| app | CPU | wall |", "|---|---|---|"]
        lines += [f"| {app} | {cold[app]['cpu']:.0f} | {cold[app]['wall']:.0f} |" for app in ("gateway", "hello-world")]
        ratio = cold["gateway"]["cpu"] / cold["hello-world"]["cpu"]
        lines.append(f"\nRatio gateway / hello-world (CPU): **{ratio:.2f}** (target at most 1.3)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
