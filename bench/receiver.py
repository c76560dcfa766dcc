"""Receiver throughput: signed GitHub push deliveries against `hookdeploy serve --no-worker`
and against adnanh/webhook, on loopback, under the same load.

Both servers get the same load from wrk: CONNECTIONS keep-alive connections posting the same
signed github-push.json fixture, each request with its own X-GitHub-Delivery id (a Lua script
numbers them), so hookdeploy commits every one of them as a new job. adnanh/webhook checks the
same HMAC-SHA256 signature (a payload-hmac-sha256 trigger rule) and runs /bin/true. After the
run the bench counts hookdeploy's committed deliveries: every 2xx must be one of them.

Usage: .venv/bin/python bench/receiver.py [--duration S] [--connections N] [--threads N ...]
Needs: wrk and webhook on PATH (apt-get install wrk webhook). Prints req/s, p50, p99 and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "webhooks" / "github-push.json"
HOOKDEPLOY = Path(sys.executable).parent / "hookdeploy"
SECRET = "bench webhook secret"
GOAL_RATIO, GOAL_P99_MS = 1.0, 50.0

LUA = """
wrk.method = "POST"
local file = io.open(%(body)s, "rb"); wrk.body = file:read("*a"); file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = %(signature)s
local threads, counter = {}, 0
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = %(prefix)s .. "-" .. tid .. "-" .. counter
  return wrk.format()
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "p50_ms": %%f, "p99_ms": %%f, "non2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"bench: {what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on port {port} within {timeout} s")


def post(url: str, body: bytes, signature: str) -> int:
    """POST one delivery; return the status."""
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def load(url: str, body_file: Path, signature: str, work: Path, duration: float, connections: int,
         wrk_threads: int) -> dict:
    """Run wrk against `url` with distinct delivery ids; its summary as a dict."""
    script = work / f"load-{uuid.uuid4().hex[:8]}.lua"
    # JSON string literals of ASCII text are Lua string literals too.
    script.write_text(LUA % {"body": json.dumps(str(body_file)), "signature": json.dumps(signature),
                             "prefix": json.dumps(uuid.uuid4().hex[:12])})
    seconds = max(1, round(duration))  # wrk takes whole seconds
    completed = subprocess.run(["wrk", f"-t{wrk_threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                                url], capture_output=True, text=True, timeout=seconds + 60)
    if completed.returncode != 0:
        sys.exit(f"bench: wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout.strip()}")
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["rps"] = result["requests"] / result["seconds"]
            return result
    sys.exit(f"bench: wrk printed no result:\n{completed.stdout}\n{completed.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each run (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--threads", type=int, action="append",
                        help="hookdeploy's server.threads; repeat to compare (default: 8, the default, and 64)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    options = parser.parse_args()
    options.threads = options.threads or [8, 64]
    for tool in ("wrk", "webhook"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not on PATH (apt-get install -y {tool})")

    with tempfile.TemporaryDirectory(prefix="hookdeploy-bench-") as temporary:
        work = Path(temporary)
        body = FIXTURE.read_bytes()
        body_file = work / "github-push.json"
        body_file.write_bytes(body)
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

        hooks = work / "hooks.json"
        hooks.write_text(json.dumps([{
            "id": "site", "execute-command": "/bin/true",
            "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": SECRET,
                                       "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}]))
        env = {**os.environ, "BENCH_WEBHOOK_SECRET": SECRET, "HOOKDEPLOY_SECRET": uuid.uuid4().hex}
        env.pop("HOOKDEPLOY_CONFIG", None)

        targets = []  # (name, command, port, url, accepted status, database or None)
        for threads in options.threads:
            port, state = free_port(), work / f"state-{threads}"
            config = work / f"deploy-{threads}.toml"
            config.write_text(f'[server]\nstate_dir = "{state}"\nlisten = "127.0.0.1:{port}"\nthreads = {threads}\n\n'
                              f'[apps.site]\nrepo = "{work / "site.git"}"\n\n[apps.site.webhook]\n'
                              'provider = "github"\nsecret_env = "BENCH_WEBHOOK_SECRET"\n')
            targets.append((f"hookdeploy t={threads}", [str(HOOKDEPLOY), "--config", str(config), "serve", "--no-worker"],
                            port, f"http://127.0.0.1:{port}/hooks/site", 202, state / "hookdeploy.db"))
        port = free_port()
        targets.append(("adnanh/webhook", ["webhook", "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)],
                        port, f"http://127.0.0.1:{port}/hooks/site", 200, None))

        results, committed = {}, {}
        for name, command, port, url, accepted, database in targets:
            with open(work / f"{name.replace('/', '-').replace(' ', '-')}.log", "wb") as log:
                server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                try:
                    wait_for_port(port, server, name)
                    # Both must verify the signature, or the comparison is unfair.
                    if post(url, body, signature) != accepted or post(url, body, "sha256=" + "0" * 64) < 400:
                        sys.exit(f"bench: {name} does not accept the signed delivery and refuse a forged one")
                    if options.warmup > 0:
                        load(url, body_file, signature, work, options.warmup, options.connections, options.wrk_threads)
                    results[name] = load(url, body_file, signature, work, options.duration, options.connections,
                                         options.wrk_threads)
                finally:
                    server.terminate()
                    server.wait(30)
            if database is not None:
                with sqlite3.connect(database) as db:
                    committed[name] = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]

    theirs = results.pop("adnanh/webhook")
    print(f"receiver bench: {options.connections} connections, {options.duration} s each after {options.warmup} s "
          f"warm-up, wrk -t{options.wrk_threads}, {os.cpu_count()} CPUs shared by client and server")
    print(f"{'server':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}{'ratio':>8}{'committed':>11}")
    for name, result in [*results.items(), ("adnanh/webhook", theirs)]:
        ratio = result["rps"] / theirs["rps"]
        print(f"{name:<18}{result['rps']:>9.0f}{result['p50_ms']:>9.1f}{result['p99_ms']:>9.1f}{result['non2xx']:>9}"
              f"{result['socket_errors']:>9}{ratio:>7.2f}x{committed.get(name, '-'):>11}")
    best_name = max(results, key=lambda name: results[name]["rps"])
    best = results[best_name]
    met = best["rps"] / theirs["rps"] >= GOAL_RATIO and best["p99_ms"] < GOAL_P99_MS
    print(f"goal (>= {GOAL_RATIO:.1f}x webhook's req/s, p99 < {GOAL_P99_MS:.0f} ms): "
          f"{'met' if met else 'NOT met'} (best: {best_name}, {best['rps'] / theirs['rps']:.2f}x, "
          f"p99 {best['p99_ms']:.1f} ms); 'committed' counts every delivery hookdeploy stored, "
          "warm-up and checks included")
    for name, result in results.items():
        if result["non2xx"] or committed[name] < result["requests"]:
            sys.exit(f"bench: {name} answered with an error or acknowledged more deliveries than it committed")

if __name__ == "__main__":
    main()
