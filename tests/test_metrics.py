"""GET /metrics: real jobs, events, releases and webhook deliveries in a real store, and what the proxy
answered from real access-log files, scraped through the Flask app and read back with
prometheus_client's own parser."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookdeploy.core import tokens
from hookdeploy.engine import deploy, traffic
from hookdeploy.web import metrics
from hookdeploy.web.app import create_app
from hookdeploy.core.models import JobState, parse_time
from hookdeploy.core.store import Store

from webhook_helpers import API_SECRET, SECRETS, WebApp, delivery, fixture, signed_headers

RELEASE_A, RELEASE_B, RELEASE_C = "a" * 12, "b" * 12, "c" * 12


def run(store: Store, app: str, sha: str, state: JobState, steps: dict[str, tuple[str, float]],
        error: str | None = None):
    """A job taken through enqueue, claim and finish with timed step events ({message: (step, took)}), as the
    worker records them."""
    job = store.enqueue(app, sha, coalesce=False)
    assert store.claim("test-worker").id == job.id
    for message, (step, took) in steps.items():
        store.log(job.id, message, kind="step", duration=took, step=step)
    store.log(job.id, "a build output line")
    return store.finish(job.id, state, error)


def labels(**pairs: str) -> tuple:
    """A sample's labels as scrape() keys them."""
    return tuple(sorted(pairs.items()))


def scrape(client) -> dict[str, dict[tuple, float]]:
    """GET /metrics with a read token (recorded in the app's store), parsed: {sample name: {sorted label items: value}}."""
    token = tokens.issue(API_SECRET, client.application.extensions["hookdeploy"].store, "read")
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.mimetype == "text/plain"
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def proxy_log(web_app: WebApp, app: str, *answers: tuple[int, str]) -> None:
    """Append (status, release) lines to the app's access log as the proxy writes them."""
    path = traffic.log_path(web_app.config, app)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as file:
        file.write(b"".join(json.dumps({"time": 1700000000.5, "status": status, "release": release,
                                        "upstream": "10.0.0.2:80" if release else "",
                                        "upstream_status": str(status) if release else ""}).encode() + b"\n"
                            for status, release in answers))


def proxy_counts(samples: dict[str, dict[tuple, float]]) -> dict[str, dict[tuple[str, str], float]]:
    """The proxy counters as {"requests"/"errors": {(app, release): value}}."""
    return {kind: {(dict(labels)["app"], dict(labels)["release"]): value
                   for labels, value in samples.get(f"hookdeploy_proxy_{kind}_total", {}).items()}
            for kind in ("requests", "errors")}


def test_metrics_after_real_jobs_and_webhook_deliveries(web_app):
    client, store, shas = web_app.client, web_app.store, web_app.shas

    live = run(store, "site", shas[0], JobState.SUCCEEDED,
               {f"checked out {shas[0][:12]}": ("checkout", 0.3), "built hookdeploy/site:x": ("build", 4.0),
                "proxy ready": ("proxy", 0.05), "started candidate c at 10.0.0.2:80": ("candidate", 0.2),
                "health check passed in 0.4 s": ("health", 0.4), "switched proxy": ("switch", 0.02),
                "verified through the proxy in 0.1 s": ("verify", 0.1), "pruned images": ("prune", 0.01)})
    store.record_live("site", shas[0], "hookdeploy/site:" + shas[0][:12], "hookdeploy-site-c-1", live.id)
    run(store, "site", shas[1], JobState.FAILED, {f"checked out {shas[1][:12]}": ("checkout", 0.7)}, "build failed")
    running = store.enqueue("tea", shas[0])
    assert store.claim("test-worker").id == running.id
    store.enqueue("lab", shas[0], coalesce=False)
    store.enqueue("lab", shas[1], coalesce=False)

    body, headers = delivery("site", shas[2], delivery="delivery-1")
    queued = client.post("/hooks/site", data=body, headers=headers)
    assert queued.status_code == 202
    assert client.post("/hooks/site", data=body, headers=headers).get_json() == {"duplicate": queued.get_json()["job"]}
    ping = json.dumps(fixture("github-ping.json")).encode()
    ping_headers = signed_headers("github", SECRETS["SITE_SECRET"], ping, event="ping")
    assert "ignored" in client.post("/hooks/site", data=ping, headers=ping_headers).get_json()
    assert client.post("/hooks/site", data=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"}).status_code == 401
    assert client.post("/hooks/nope", data=body, headers=headers).status_code == 401

    samples = scrape(client)

    assert samples["hookdeploy_jobs_total"] == {
        (("app", "site"), ("kind", "deploy"), ("state", "succeeded")): 1.0,
        (("app", "site"), ("kind", "deploy"), ("state", "failed")): 1.0,
    }
    assert samples["hookdeploy_queue_depth"] == {(("app", app),): count for app, count in
                                                 {"site": 1.0, "lab": 2.0, "tea": 0.0, "pinned": 0.0, "plain": 0.0}.items()}
    assert samples["hookdeploy_running_jobs"][(("app", "tea"),)] == 1.0
    assert samples["hookdeploy_live_release_info"] == {
        (("app", "site"), ("image", "hookdeploy/site:" + shas[0][:12]), ("job", str(live.id)), ("sha", shas[0])): 1.0}
    assert samples["hookdeploy_last_success_timestamp_seconds"] == {
        (("app", "site"),): parse_time(live.finished_at).timestamp()}

    checkout = labels(app="site", step="checkout")
    assert samples["hookdeploy_step_duration_seconds_count"][checkout] == 2.0
    assert samples["hookdeploy_step_duration_seconds_sum"][checkout] == pytest.approx(1.0)
    buckets = samples["hookdeploy_step_duration_seconds_bucket"]
    assert buckets[labels(app="site", step="checkout", le="0.25")] == 0.0
    assert buckets[labels(app="site", step="checkout", le="0.5")] == 1.0
    assert buckets[labels(app="site", step="checkout", le="1.0")] == 2.0
    assert buckets[labels(app="site", step="checkout", le="+Inf")] == 2.0
    assert buckets[labels(app="site", step="build", le="2.5")] == 0.0
    assert buckets[labels(app="site", step="build", le="5.0")] == 1.0
    steps = {dict(labels)["step"] for labels in samples["hookdeploy_step_duration_seconds_count"]}
    assert steps == {"checkout", "build", "proxy", "candidate", "health", "switch", "verify", "prune"}

    assert samples["hookdeploy_webhook_deliveries_total"] == {
        (("app", "site"), ("result", "queued")): 1.0,
        (("app", "site"), ("result", "duplicate")): 1.0,
        (("app", "site"), ("result", "ignored")): 1.0,
        (("app", "site"), ("result", "refused")): 1.0,
        (("app", "(unknown)"), ("result", "refused")): 1.0,
    }


def test_an_empty_store_scrapes_with_zero_queues(web_app):
    samples = scrape(web_app.client)
    assert samples["hookdeploy_queue_depth"][(("app", "site"),)] == 0.0
    assert "hookdeploy_jobs_total" not in samples and "hookdeploy_live_release_info" not in samples


def test_every_step_a_deploy_names_has_a_label():
    """Step labels are the events' step column, from deploy.STEPS: each `self.step(job, NAME)` in deploy.py has one."""
    tree = ast.parse(Path(deploy.__file__).read_text())
    names = [node.args[1].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "step"
             and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)]
    assert len(names) >= 8
    assert [name for name in names if name not in deploy.STEPS] == []


def test_proxy_answers_counted_per_app_and_release_from_the_logs_end_on(web_app):
    proxy_log(web_app, "site", (200, RELEASE_A), (500, RELEASE_A))  # before the process started: not counted
    client = create_app(web_app.config, web_app.store).test_client()

    proxy_log(web_app, "site", (200, RELEASE_A), (500, RELEASE_A), (502, RELEASE_A), (404, ""), (308, ""),
              (200, RELEASE_B), (503, RELEASE_B), (499, RELEASE_B))
    proxy_log(web_app, "lab", (200, RELEASE_C))
    first = proxy_counts(scrape(client))
    assert first == {
        "requests": {("site", RELEASE_A): 3.0, ("site", RELEASE_B): 3.0, ("lab", RELEASE_C): 1.0},
        "errors": {("site", RELEASE_A): 2.0, ("site", RELEASE_B): 1.0, ("lab", RELEASE_C): 0.0},
    }
    assert proxy_counts(scrape(client)) == first  # nothing new logged, nothing more counted

    proxy_log(web_app, "site", (200, RELEASE_A), (504, RELEASE_A), (404, ""))
    proxy_log(web_app, "lab", (502, RELEASE_C), (200, RELEASE_A))
    assert proxy_counts(scrape(client)) == {
        "requests": {("site", RELEASE_A): 5.0, ("site", RELEASE_B): 3.0, ("lab", RELEASE_C): 2.0,
                     ("lab", RELEASE_A): 1.0},
        "errors": {("site", RELEASE_A): 3.0, ("site", RELEASE_B): 1.0, ("lab", RELEASE_C): 1.0,
                   ("lab", RELEASE_A): 0.0},
    }


def test_the_help_text_says_the_proxy_counters_start_with_the_process(web_app):
    token = tokens.issue(API_SECRET, web_app.store, "read")
    text = web_app.client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert "# TYPE hookdeploy_proxy_requests_total counter" in text
    assert "# TYPE hookdeploy_proxy_errors_total counter" in text
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP hookdeploy_proxy_requests_total"))
    assert "since this process started" in help_line and "from zero at each restart" in help_line


def test_apps_without_a_log_export_no_proxy_series(web_app):
    samples = scrape(web_app.client)
    assert proxy_counts(samples) == {"requests": {}, "errors": {}}
    assert samples["hookdeploy_queue_depth"][(("app", "site"),)] == 0.0


def test_an_unreadable_log_fails_neither_the_scrape_nor_the_other_apps(web_app, caplog):
    traffic.log_path(web_app.config, "site").mkdir(parents=True)  # a folder where the log should be
    proxy_log(web_app, "lab", (500, RELEASE_C))
    assert proxy_counts(scrape(web_app.client))["errors"] == {("lab", RELEASE_C): 1.0}
    assert proxy_counts(scrape(web_app.client))["errors"] == {("lab", RELEASE_C): 1.0}
    warnings = [record.getMessage() for record in caplog.records if "proxy log of site" in record.getMessage()]
    assert len(warnings) == 1  # said once, not at every scrape


def test_a_partial_line_is_counted_once_the_proxy_finished_writing_it(web_app):
    path = traffic.log_path(web_app.config, "site")
    path.parent.mkdir(parents=True)
    line = json.dumps({"time": 1.0, "status": 500, "release": RELEASE_A}).encode() + b"\n"
    path.write_bytes(line[:10])
    assert proxy_counts(scrape(web_app.client))["errors"] == {}
    with open(path, "ab") as file:
        file.write(line[10:])
    assert proxy_counts(scrape(web_app.client))["errors"] == {("site", RELEASE_A): 1.0}


def test_only_the_releases_seen_last_are_kept(web_app):
    releases = [f"{number:012x}" for number in range(25)]
    proxy_log(web_app, "site", *[(200, release) for release in releases], (500, releases[3]))
    requests = proxy_counts(scrape(web_app.client))["requests"]
    assert metrics.RELEASES_KEPT == 20
    assert set(requests) == {("site", release) for release in [releases[3]] + releases[6:]}
    assert requests[("site", releases[3])] == 2.0

    proxy_log(web_app, "site", (200, releases[0]))
    requests = proxy_counts(scrape(web_app.client))["requests"]
    assert len(requests) == 20 and ("site", releases[6]) not in requests
    assert requests[("site", releases[0])] == 1.0  # seen again: counted anew, from zero


def test_concurrent_scrapes_count_each_line_once(web_app):
    """waitress answers scrapes on several threads: each log line is counted by exactly one of them."""
    proxy_log(web_app, "site", (200, RELEASE_A))
    scrape(web_app.client)
    failures = []

    def scraper() -> None:
        client = web_app.client.application.test_client()
        try:
            for _ in range(20):
                proxy_log(web_app, "site", *[(500, RELEASE_A)] * 5)
                scrape(client)
        except Exception as error:  # an assertion in a thread would otherwise go unseen
            failures.append(error)

    threads = [threading.Thread(target=scraper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert proxy_counts(scrape(web_app.client)) == {"requests": {("site", RELEASE_A): 801.0},
                                                    "errors": {("site", RELEASE_A): 800.0}}
