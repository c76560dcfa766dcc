"""What the guard's access log costs the proxy: requests/s through it with each request logged as a
JSON line (as hookdeploy writes its server blocks since the guard) against the same config with
`access_log off;`, alternating rounds on one live instance so drift falls on both alike.

One throw-away instance (bench/harness.py) with the site deployed; each round rewrites the app's
server block in place (the same file, with or without its access_log lines), reloads nginx
gracefully, sends an unmeasured burst, then `hey -z SECONDSs -c CONNECTIONS` at the proxy. Prints
each round, then the medians and the ratio logged / not logged, and the log's bytes per request.

    .venv/bin/python bench/proxy_log.py [--rounds 3] [--seconds 8] [--connections 16]

Needs root, the Docker engine with hookdeploy-nginx:local (scripts/ensure-docker.sh) and hey.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Instance, run  # noqa: E402


def hey(url: str, seconds: int, connections: int) -> float:
    """hey's requests/s against `url` (a failed request ends the bench: the comparison would be void)."""
    output = run("hey", "-z", f"{seconds}s", "-c", str(connections), url).stdout
    if "Error distribution" in output or not re.search(r"^\s+\[200\]", output, re.MULTILINE):
        raise SystemExit(f"requests failed:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    options = parser.parse_args()

    instance = Instance()
    try:
        instance.start_worker()
        sha = instance.commit()
        instance.push()
        instance.wait_for_release(sha)
        conf = instance.root / "state" / "proxy" / "conf.d" / "app-site.conf"
        log = instance.root / "state" / "proxy" / "logs" / "app-site.log"
        logged = conf.read_text()
        if "access_log" not in logged:
            raise SystemExit(f"{conf} has no access_log line: is this the version with the guard?")
        unlogged = re.sub(r"access_log \S+ hookdeploy_json;", "access_log off;", logged)
        proxy = f"{instance.name}-proxy"
        url = f"http://127.0.0.1:{instance.port}/"
        print(f"proxy {proxy} at {url}: hey -z {options.seconds}s -c {options.connections}, {options.rounds} rounds")
        results: dict[str, list[float]] = {"logged": [], "not logged": []}
        per_request = []
        for round_number in range(1, options.rounds + 1):
            for variant, text in (("not logged", unlogged), ("logged", logged)):
                conf.write_text(text)
                run("docker", "exec", proxy, "sh", "-c", "nginx -t -q && nginx -s reload")
                hey(url, 1, options.connections)  # warm-up, after the reload settled
                before = log.stat().st_size if log.exists() else 0
                rate = hey(url, options.seconds, options.connections)
                if variant == "logged":
                    written = (log.stat().st_size - before) / max(1.0, rate * options.seconds)
                    per_request.append(written)
                results[variant].append(rate)
                print(f"round {round_number}  {variant:<11} {rate:8.0f} req/s")
        conf.write_text(logged)
        subprocess.run(["docker", "exec", proxy, "nginx", "-s", "reload"], capture_output=True)
        base, with_log = statistics.median(results["not logged"]), statistics.median(results["logged"])
        print(f"median: not logged {base:.0f} req/s, logged {with_log:.0f} req/s, ratio {with_log / base:.2f}x; "
              f"about {statistics.median(per_request):.0f} bytes of log per request")
    finally:
        instance.close()


if __name__ == "__main__":
    main()
