"""Notifications: [[notify]] validation, and delivery to a real local HTTP server with retries."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hookdeploy.core import config
from hookdeploy.engine import notify
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.models import JobState
from hookdeploy.core.store import Store

from conftest import toml_document
from docker_helpers import site_files

SHA = "a" * 40
OLD_SHA = "b" * 40


class Receiver:
    """A real HTTP server on a free port answering 500 to the first `failures` POSTs, then 204."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(500 if len(receiver.bodies) <= receiver.failures else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *arguments):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/SECRET-TOKEN"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def load(write_config, state_dir, notify_tables: str, env: dict | None = None) -> config.Config:
    """A config with app `site` (an env value from the environment) and the given [[notify]] tables."""
    text = toml_document({"site": {"repo": "/srv/git/site.git", "env": env or {}}}, server={"state_dir": str(state_dir)})
    return config.load(write_config(text + "\n" + notify_tables))


def finished_job(store: Store, state: JobState, error: str | None = None, sha: str = SHA):
    """A job of `site` taken through enqueue, claim and finish, as the worker does."""
    queued = store.enqueue("site", sha)
    assert store.claim("test-worker").id == queued.id
    return store.finish(queued.id, state, error)


def events(store: Store, job_id: int) -> list[tuple[str, str]]:
    return [(event.kind, event.message) for event in store.events(job_id) if "notif" in event.message]


@pytest.mark.slow
def test_a_receiver_failing_twice_gets_three_deliveries_and_the_success_is_a_job_event(
        write_config, state_dir, store, receiver_factory, monkeypatch):
    monkeypatch.setenv("SITE_TOKEN", "hunter2-secret")
    receiver = receiver_factory(failures=2)
    loaded = load(write_config, state_dir, f'[[notify]]\nurl = "{receiver.url}"\n',
                  env={"TOKEN": {"from_env": "SITE_TOKEN"}, "MODE": "plain-secret-value"})
    previous = finished_job(store, JobState.SUCCEEDED, sha=OLD_SHA)
    store.record_live("site", OLD_SHA, "hookdeploy/site:bbbbbbbbbbbb", "hookdeploy-site-bbbbbbbbbbbb-1", previous.id)
    store.log(previous.id, "unrelated")
    job = finished_job(store, JobState.SUCCEEDED)
    store.record_live("site", SHA, "hookdeploy/site:aaaaaaaaaaaa", "hookdeploy-site-aaaaaaaaaaaa-2", job.id)

    thread = notify.send(loaded, store, job)
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert len(receiver.bodies) == 3
    assert receiver.bodies[0] == receiver.bodies[2]
    body = receiver.bodies[-1]
    assert body["event"] == "succeeded" and body["app"] == "site" and body["instance"] == "hookdeploy"
    assert body["job"] == job.to_json()
    assert body["live"]["sha"] == SHA and body["live"]["job"] == job.id
    assert receiver.headers[-1]["Content-Type"] == "application/json"
    assert "hunter2-secret" not in json.dumps(body) and "plain-secret-value" not in json.dumps(body)
    assert events(store, job.id) == [("log", "notification sent to notify[0] (json, http://127.0.0.1) after 3 tries")]
    assert "SECRET-TOKEN" not in " ".join(event.message for event in store.events(job.id))  # a URL may hold a token


def test_a_failed_job_is_notified_with_state_failed_and_slack_gets_text(write_config, state_dir, store,
                                                                        receiver_factory):
    json_receiver, slack_receiver, success_only = receiver_factory(), receiver_factory(), receiver_factory()
    loaded = load(write_config, state_dir,
                  f'[[notify]]\nurl = "{json_receiver.url}"\nevents = ["failed", "rolled_back"]\n'
                  f'[[notify]]\nurl = "{slack_receiver.url}"\nformat = "slack"\n'
                  f'[[notify]]\nurl = "{success_only.url}"\nevents = ["succeeded"]\n')
    job = finished_job(store, JobState.FAILED, "build failed: exit status 2")

    notify.send(loaded, store, job).join(timeout=30)

    assert [body["event"] for body in json_receiver.bodies] == ["failed"]
    assert json_receiver.bodies[0]["job"]["state"] == "failed"
    assert json_receiver.bodies[0]["job"]["error"] == "build failed: exit status 2"
    assert json_receiver.bodies[0]["live"] is None
    assert slack_receiver.bodies == [{"text": f"[hookdeploy] site @ aaaaaaa failed (job {job.id}, manual deploy): "
                                              "build failed: exit status 2; nothing is live"}]
    assert success_only.bodies == []
    assert [kind for kind, _ in events(store, job.id)] == ["log", "log"]


@pytest.mark.slow
def test_an_unreachable_receiver_is_a_job_error_event_after_three_tries(write_config, state_dir, store,
                                                                        receiver_factory):
    receiver = receiver_factory(failures=99)
    loaded = load(write_config, state_dir, f'[[notify]]\nurl = "{receiver.url}"\n')
    job = finished_job(store, JobState.ROLLED_BACK, "verification through the proxy failed")

    notify.send(loaded, store, job).join(timeout=30)

    assert len(receiver.bodies) == 3
    assert events(store, job.id) == [
        ("error", "notification to notify[0] (json, http://127.0.0.1) failed after 3 tries: HTTP 500")]
    assert store.job(job.id).state is JobState.ROLLED_BACK


def test_nothing_is_sent_without_a_target_for_the_state(write_config, state_dir, store):
    loaded = load(write_config, state_dir, '[[notify]]\nurl = "http://127.0.0.1:9/"\nevents = ["failed"]\n')
    assert notify.send(loaded, store, finished_job(store, JobState.SUCCEEDED)) is None


def test_a_refused_connection_ends_quickly_in_a_failure():
    sent, tries, problem = notify.deliver("http://127.0.0.1:9/", b"{}", tries=2, backoff=(0.01,), timeout=1)
    assert (sent, tries) == (False, 2) and "refused" in problem.lower()


def test_notify_defaults_and_every_problem_named_by_its_key(write_config, state_dir):
    loaded = load(write_config, state_dir, '[[notify]]\nurl = "https://hooks.example/x"\n')
    assert loaded.notify == (config.NotifyConfig(url="https://hooks.example/x"),)
    assert loaded.notify[0].events == ("succeeded", "failed", "rolled_back", "interrupted", "task_failed")
    assert loaded.notify[0].format == "json"
    assert load(write_config, state_dir, "").notify == ()

    with pytest.raises(ConfigError) as raised:
        load(write_config, state_dir, '[[notify]]\nurl = "ftp://x"\nevents = ["failed", "exploded"]\n'
                                      'format = "xml"\nsecret = "x"\n'
                                      '[[notify]]\nevents = "failed"\n'
                                      '[[notify]]\nurl = 3\n')
    assert raised.value.problems == [
        "notify[0].secret: unknown key",
        "notify[0].url: must be an http:// or https:// URL, not 'ftp://x'",
        "notify[0].events: 'exploded' is not one of succeeded, failed, rolled_back, interrupted, task_failed",
        "notify[0].format: must be one of json, slack",
        "notify[1].events: must be a list, not 'failed'",
        "notify[1].url: required (an http:// or https:// URL)",
        "notify[2].url: must be a string, not 3",
    ]


# -- through the real worker ------------------------------------------------------------------------------


@pytest.mark.docker
def test_real_deploys_are_notified_by_the_worker_and_counted_by_metrics(instance, receiver_factory):
    """The worker's one call after finish, end to end; and /metrics labels every step the real worker logs."""
    from prometheus_client.parser import text_string_to_metric_families

    from hookdeploy.web.app import create_app

    receiver = receiver_factory(failures=1)
    path = instance.configure({"site": {"health": {"deadline": 2.5}}})
    path.write_text(path.read_text() + f'\n[[notify]]\nurl = "{receiver.url}"\n')

    first = instance.deploy("site", site_files("one"))
    second = instance.deploy("site", site_files("two"))
    sick = instance.deploy("site", site_files("sick", health="sick\n"))
    assert [job.state for job in (first, second, sick)] == [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED]

    deadline = time.monotonic() + 20
    while len(receiver.bodies) < 4 and time.monotonic() < deadline:  # the first job's first try is refused
        time.sleep(0.05)
    assert [(body["job"]["id"], body["event"]) for body in receiver.bodies] == [
        (first.id, "succeeded"), (first.id, "succeeded"), (second.id, "succeeded"), (sick.id, "failed")]
    assert receiver.bodies[-1]["live"]["sha"] == second.sha
    assert "notification sent to notify[0] (json, http://127.0.0.1) after 2 tries" in instance.events(first.id)

    public = dataclasses.replace(instance.config, server=dataclasses.replace(instance.config.server, metrics_public=True))
    text = create_app(public, instance.store).test_client().get("/metrics").get_data(as_text=True)
    steps = {sample.labels["step"] for family in text_string_to_metric_families(text)
             if family.name == "hookdeploy_step_duration_seconds" for sample in family.samples}
    assert steps == {"checkout", "build", "proxy", "candidate", "health", "switch", "verify", "drain", "prune"}
