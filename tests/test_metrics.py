"""GET /metrics: real jobs, events, releases and webhook deliveries in a real store, scraped through
the Flask app and read back with prometheus_client's own parser."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookdeploy.engine import deploy
from hookdeploy.web import metrics
from hookdeploy.core.models import JobState, parse_time
from hookdeploy.core.store import Store

from webhook_helpers import SECRETS, delivery, fixture, signed_headers


def run(store: Store, app: str, sha: str, state: JobState, steps: dict[str, float], error: str | None = None):
    """A job taken through enqueue, claim and finish with timed step events, as the worker records them."""
    job = store.enqueue(app, sha, coalesce=False)
    assert store.claim("test-worker").id == job.id
    for message, took in steps.items():
        store.log(job.id, message, kind="step", duration=took)
    store.log(job.id, "a build output line")
    return store.finish(job.id, state, error)


def labels(**pairs: str) -> tuple:
    """A sample's labels as scrape() keys them."""
    return tuple(sorted(pairs.items()))


def scrape(client) -> dict[str, dict[tuple, float]]:
    """GET /metrics parsed: {sample name: {sorted label items: value}}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_after_real_jobs_and_webhook_deliveries(web_app):
    client, store, shas = web_app.client, web_app.store, web_app.shas

    live = run(store, "site", shas[0], JobState.SUCCEEDED,
               {f"checked out {shas[0][:12]}": 0.3, "built hookdeploy/site:x": 4.0, "proxy ready": 0.05,
                "started candidate c at 10.0.0.2:80": 0.2, "health check passed in 0.4 s": 0.4,
                "switched proxy": 0.02, "verified through the proxy in 0.1 s": 0.1, "pruned images": 0.01})
    store.record_live("site", shas[0], "hookdeploy/site:" + shas[0][:12], "hookdeploy-site-c-1", live.id)
    run(store, "site", shas[1], JobState.FAILED, {f"checked out {shas[1][:12]}": 0.7}, "build failed")
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
    assert client.post("/hooks/nope", data=body, headers=headers).status_code == 404

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
    """Step labels come from event messages, so each `self.step(job, NAME)` in deploy.py must map to one."""
    tree = ast.parse(Path(deploy.__file__).read_text())
    names = [node.args[1].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "step"
             and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)]
    assert len(names) >= 8
    assert [name for name in names if metrics.step_of(name) == "other"] == []
