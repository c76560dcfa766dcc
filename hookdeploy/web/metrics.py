"""GET /metrics: Prometheus text format, read from the job store at scrape time.

The store is what the receiver and the worker share, so a collector that queries it on each
scrape gives the same numbers whichever process answers. Only webhook refusals, ignored and
duplicate deliveries are counted in the answering process: nothing else records them.

What the proxy answered per app and release is counted by this process too, from the apps' access
logs (engine/traffic.py), each read on from where the last scrape stopped. Reading starts at the
logs' end when the process starts, so a restart does not count history twice: those counters then
start again from zero, which Prometheus' rate() and increase() take as an ordinary counter reset.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily)

from hookdeploy.core.config import Config
from hookdeploy.core.models import JobState, parse_time
from hookdeploy.core.reload import LiveConfig
from hookdeploy.core.store import Store
from hookdeploy.engine import traffic
from hookdeploy.web.api import authenticate

log = logging.getLogger(__name__)

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FINISHED = tuple(state.value for state in JobState if state.finished)

# Each deploy brings a new release label; only the releases an app served last are kept, so the
# series of an app that deploys daily stay bounded.
RELEASES_KEPT = 20

metrics = Blueprint("metrics", __name__)


def install_metrics(app: Flask) -> None:
    """Serve /metrics from `app` and count its webhook answers."""
    services = app.extensions["hookdeploy"]
    registry = CollectorRegistry()
    deliveries = DeliveryCounter()
    registry.register(StoreCollector(services.live, services.store, deliveries, ProxyTraffic(services.config)))
    app.extensions["hookdeploy.metrics"] = registry
    app.register_blueprint(metrics)
    app.after_request(deliveries.count_response)


@metrics.get("/metrics")
def scrape() -> Response:
    """The metrics in Prometheus text format; a read-scope token is needed unless [server] metrics_public."""
    if not current_app.extensions["hookdeploy"].config.server.metrics_public:
        authenticate()  # the API's own check: app names, SHAs and traffic are not for everyone
    return Response(generate_latest(current_app.extensions["hookdeploy.metrics"]), mimetype=CONTENT_TYPE_LATEST)


class DeliveryCounter:
    """Webhook answers that leave no row in the store (ignored, duplicate, refused), by app and result."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def count_response(self, response: Response) -> Response:
        """Flask after_request hook: count the answer to a POST /hooks/APP that queued nothing."""
        if request.endpoint != "hooks.receive" or response.status_code == 202:
            return response
        body = response.get_json(silent=True) if response.is_json else None
        result = next(iter(body)) if isinstance(body, dict) and body else "error"
        result = result if result in ("ignored", "duplicate") else "refused"
        app_name = (request.view_args or {}).get("app_name", "")
        known = app_name if app_name in current_app.extensions["hookdeploy"].config.apps else "(unknown)"
        with self._lock:
            self.counts[(known, result)] += 1
        return response

    def snapshot(self) -> list[tuple[tuple[str, str], int]]:
        """((app, result), count) pairs, sorted."""
        with self._lock:
            return sorted(self.counts.items())


class ProxyTraffic:
    """Requests the proxy answered and 5xx among them, by app and release, since this process started:
    each app's access log read on from its end at start, a little more at every scrape."""

    def __init__(self, config: Config):
        self._lock = threading.Lock()  # waitress answers scrapes on several threads
        self.readers = {app: traffic.LogReader(traffic.log_path(config, app)) for app in config.apps}
        # release -> its tally, the release seen last at the end
        self.tallies: dict[str, OrderedDict[str, traffic.Tally]] = {app: OrderedDict() for app in config.apps}
        self._unreadable: dict[str, str] = {}

    def snapshot(self, config: Config) -> list[tuple[tuple[str, str], traffic.Tally]]:
        """((app, release), tally) pairs after reading what every log gained since the last call, sorted
        (an app that a reload added is read from then on)."""
        with self._lock:
            for app in set(config.apps) - set(self.readers):
                self.readers[app] = traffic.LogReader(traffic.log_path(config, app))
                self.tallies[app] = OrderedDict()
            for app, reader in self.readers.items():
                self._count(app, reader)
            return [((app, release), traffic.Tally(tally.requests, tally.failed))
                    for app, tallies in sorted(self.tallies.items()) for release, tally in sorted(tallies.items())]

    def _count(self, app: str, reader: traffic.LogReader) -> None:
        try:
            hits = reader.read()
        except OSError as error:  # a log we may not read must not fail the scrape; said once, not every scrape
            if self._unreadable.get(app) != str(error):
                log.warning("metrics: cannot read the proxy log of %s: %s", app, error)
            self._unreadable[app] = str(error)
            return
        self._unreadable.pop(app, None)
        tallies = self.tallies[app]
        for hit in hits:
            if hit.release:  # the proxy's own answers (redirects, 404) belong to no release
                tallies.setdefault(hit.release, traffic.Tally()).add(hit)
                tallies.move_to_end(hit.release)
        while len(tallies) > RELEASES_KEPT:
            tallies.popitem(last=False)


class StoreCollector:
    """Builds every metric from the job store (the proxy's, from its access logs) when scraped."""

    def __init__(self, live: LiveConfig, store: Store, deliveries: DeliveryCounter, proxy: ProxyTraffic):
        self.live = live  # the config in force at each scrape (a reload adds or removes apps)
        self.store = store
        self.deliveries = deliveries
        self.proxy = proxy

    def describe(self):
        """Nothing up front: the collector is only ever asked at scrape time."""
        return []

    def collect(self):
        """The metric families, read from the store now."""
        store = self.store
        config = self.live.current
        apps = set(config.apps)

        jobs = CounterMetricFamily("hookdeploy_jobs", "Jobs that reached a final state, by app, kind and state",
                                   labels=("app", "kind", "state"))
        placeholders = ", ".join("?" * len(FINISHED))
        for row in store.query(f"SELECT app, kind, state, count(*) FROM jobs WHERE state IN ({placeholders}) "
                               "GROUP BY app, kind, state", FINISHED):
            jobs.add_metric(tuple(row[:3]), row[3])
        yield jobs

        queued = dict(store.query("SELECT app, count(*) FROM jobs WHERE state = 'queued' GROUP BY app"))
        running = dict(store.query("SELECT app, count(*) FROM jobs WHERE state = 'running' GROUP BY app"))
        depth = GaugeMetricFamily("hookdeploy_queue_depth", "Jobs waiting, by app", labels=("app",))
        busy = GaugeMetricFamily("hookdeploy_running_jobs", "Jobs running now, by app (0 or 1)", labels=("app",))
        for app in sorted(apps | set(queued) | set(running)):
            depth.add_metric((app,), queued.get(app, 0))
            busy.add_metric((app,), running.get(app, 0))
        yield depth
        yield busy

        live = InfoMetricFamily("hookdeploy_live_release", "The release each app serves", labels=("app",))
        for app, sha, image, job in store.query("SELECT app, sha, image, job FROM releases "
                                                "WHERE state = 'live' ORDER BY app"):
            live.add_metric((app,), {"sha": sha, "image": image, "job": str(job)})
        yield live

        last = GaugeMetricFamily("hookdeploy_last_success_timestamp_seconds",
                                 "When each app's last successful job finished (Unix time)", labels=("app",))
        for app, finished in store.query("SELECT app, max(finished_at) FROM jobs WHERE state = 'succeeded' "
                                        "GROUP BY app ORDER BY app"):
            last.add_metric((app,), parse_time(finished).timestamp())
        yield last

        counted = dict(store.query("SELECT app, count(*) FROM previews GROUP BY app"))
        previews = GaugeMetricFamily("hookdeploy_previews", "Previews of branches there are now, by app "
                                     "(their jobs and releases go by app APP.LABEL)", labels=("app",))
        for app in sorted(name for name in apps | set(counted) if config.apps.get(name) is None
                          or config.apps[name].previews is not None or name in counted):
            previews.add_metric((app,), counted.get(app, 0))
        yield previews

        yield from self._task_runs()
        yield self._step_durations()
        yield self._deliveries()
        yield from self._proxy_traffic()

    def _task_runs(self) -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        runs = CounterMetricFamily("hookdeploy_task_runs", "Scheduled task runs and slots that ended, by app, task "
                                   "and state (succeeded, failed, timed_out, skipped, missed)", labels=("app", "task", "state"))
        for app, task, state, count in self.store.query(
                "SELECT app, task, state, count(*) FROM task_runs WHERE state NOT IN ('queued', 'running') "
                "GROUP BY app, task, state ORDER BY app, task, state"):
            runs.add_metric((app, task, state), count)
        last = GaugeMetricFamily("hookdeploy_task_last_success_timestamp_seconds",
                                 "When each task's last successful run finished (Unix time)", labels=("app", "task"))
        for app, task, finished in self.store.query(
                "SELECT app, task, max(finished_at) FROM task_runs WHERE state = 'succeeded' GROUP BY app, task "
                "ORDER BY app, task"):
            last.add_metric((app, task), parse_time(finished).timestamp())
        return runs, last

    def _step_durations(self) -> HistogramMetricFamily:
        histogram = HistogramMetricFamily("hookdeploy_step_duration_seconds",
                                          "How long each pipeline step took, by app and step", labels=("app", "step"))
        store = self.store
        observed: dict[tuple[str, str], list[float]] = {}
        for app, step, duration in store.query(
                "SELECT jobs.app, coalesce(events.step, 'other'), events.duration FROM events "
                "JOIN jobs ON jobs.id = events.job WHERE events.kind = 'step' AND events.duration IS NOT NULL"):
            observed.setdefault((app, step), []).append(duration)
        for labels, durations in sorted(observed.items()):
            buckets = [(str(bound), sum(1 for took in durations if took <= bound)) for bound in BUCKETS]
            buckets.append(("+Inf", len(durations)))
            histogram.add_metric(labels, buckets, sum(durations))
        return histogram

    def _deliveries(self) -> CounterMetricFamily:
        deliveries = CounterMetricFamily("hookdeploy_webhook_deliveries",
                                         "Webhook deliveries by app and result (queued: from the store; "
                                         "ignored, duplicate, refused: since this process started)",
                                         labels=("app", "result"))
        for app, count in self.store.query("SELECT app, count(*) FROM deliveries GROUP BY app ORDER BY app"):
            deliveries.add_metric((app, "queued"), count)
        for (app, result), count in self.deliveries.snapshot():
            deliveries.add_metric((app, result), count)
        return deliveries

    def _proxy_traffic(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        since = (" since this process started (from zero at each restart; only each app's "
                 f"{RELEASES_KEPT} releases seen last)")
        requests = CounterMetricFamily("hookdeploy_proxy_requests",
                                       "Requests the proxy answered with a release, by app and release (SHA12)"
                                       + since, labels=("app", "release"))
        errors = CounterMetricFamily("hookdeploy_proxy_errors",
                                     "Requests the proxy answered with a 5xx (its own 502 and 504 for an upstream "
                                     "that did not answer included), by app and release" + since,
                                     labels=("app", "release"))
        for labels, tally in self.proxy.snapshot(self.live.current):
            requests.add_metric(labels, tally.requests)
            errors.add_metric(labels, tally.failed)
        return requests, errors
