"""`hookdeploy serve`: the Flask application on waitress, with the worker in a thread.

SIGTERM or SIGINT stops it cleanly: no new connections are accepted, requests in flight are
answered (so no committed delivery loses its 202), the worker is told to stop and joined.
SIGHUP reads deploy.toml again (core/reload.py): requests and the worker's next job use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import queue
import resource
import signal
import threading
import time
from typing import Iterator

import waitress
import waitress.channel
import waitress.server
import waitress.task

from hookdeploy.core import logsetup
from hookdeploy.core.config import Config
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.reload import LiveConfig
from hookdeploy.web.app import create_app
from hookdeploy.core.store import Store

log = logging.getLogger(__name__)

# waitress looks for idle connections this often; more seldom than channel_timeout would let them outstay it
CLEANUP_INTERVAL_SECONDS = 30
MAX_HEADER_BYTES = 64 * 1024
FILES_BESIDES_CONNECTIONS = 256  # the store, log files, pipes, the worker's builds: room kept under the limit
DRAIN_SECONDS = 10.0


class _JsonErrorTask(waitress.task.ErrorTask):
    """Waitress's own refusals (a body over max_body refused before it is read, an unparsable
    request, headers too large) as the same one-line JSON every other error is."""

    def execute(self):
        error = self.request.error
        message = (f"body is over max_body ({self.channel.adj.max_request_body_size - 1} bytes)"
                   if error.code == 413 else f"{error.reason.lower()}: {error.body}")
        body = (json.dumps({"error": message}) + "\n").encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                      ("X-Content-Type-Options", "nosniff")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(waitress.channel.HTTPChannel):
    error_task_class = _JsonErrorTask


def adjustments(config: Config) -> dict:
    """Waitress settings from [server]."""
    settings = {
        "listen": config.server.listen,
        "threads": config.server.threads,
        "connection_limit": config.server.connection_limit,
        "channel_timeout": config.server.channel_timeout,
        "cleanup_interval": min(CLEANUP_INTERVAL_SECONDS, config.server.channel_timeout),
        # waitress refuses Content-Length >= this before reading the body
        "max_request_body_size": config.server.max_body + 1,
        "max_request_header_size": MAX_HEADER_BYTES,
        "clear_untrusted_proxy_headers": True,
        "asyncore_use_poll": True,  # select() cannot watch descriptors above 1023
        "ident": "hookdeploy",
    }
    if config.server.trusted_proxy:
        # Requests from this peer have their scheme, Host and client address taken from these headers,
        # so the dashboard sees the https origin the browser used; from any other peer they are dropped.
        settings["trusted_proxy"] = config.server.trusted_proxy
        settings["trusted_proxy_headers"] = set(config.server.trusted_proxy_headers)
    return settings


def serve(config: Config | LiveConfig, store: Store, with_worker: bool = True) -> int:
    """Serve until SIGTERM/SIGINT (or the worker dies), reloading the config on SIGHUP; return the exit status."""
    with background_logging():
        return _serve(config if isinstance(config, LiveConfig) else LiveConfig(config), store, with_worker)


@contextlib.contextmanager
def background_logging() -> Iterator[None]:
    """Let one thread write the log: a request thread only queues its access line.

    A write to stderr releases the GIL, and getting it back under load costs a request thread
    milliseconds; measured on the receiver bench, direct logging cut throughput to a third."""
    logsetup.configure()
    root = logging.getLogger()
    handlers = root.handlers[:]
    lines: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(lines, *handlers, respect_handler_level=True)
    root.handlers = [logging.handlers.QueueHandler(lines)]
    listener.start()
    try:
        yield
    finally:
        listener.stop()  # writes what is queued
        root.handlers = handlers


def allow_connections(limit: int) -> int:
    """Raise the open-file limit so `limit` connections fit (systemd starts a service with 1024);
    return how many fit when the hard limit is lower, so that waitress stops accepting before
    accept() fails with "too many open files" (which it would retry in a busy loop)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limit + FILES_BESIDES_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limit
    if hard != resource.RLIM_INFINITY and hard < wanted:
        fitting = max(1, hard - FILES_BESIDES_CONNECTIONS)
        log.warning("the open-file limit (%d) leaves room for %d connections, not server.connection_limit = %d: "
                    "raise it (systemd: LimitNOFILE=%d)", hard, fitting, limit, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return fitting
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return limit


def _serve(live: LiveConfig, store: Store, with_worker: bool) -> int:
    dispatchers: dict = {}
    config = live.current  # [server] as started: a reload keeps it (core/reload.py)
    settings = adjustments(config)
    settings["connection_limit"] = allow_connections(settings["connection_limit"])
    http = waitress.create_server(create_app(live, store), map=dispatchers, **settings)
    for dispatcher in list(dispatchers.values()):
        if isinstance(dispatcher, waitress.server.BaseWSGIServer):
            dispatcher.channel_class = _Channel

    # Under a burst waitress warns once per queued request; the access log already shows the load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    stop = threading.Event()
    failed = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    live.on_hangup()

    worker_thread = None
    worker_stop = threading.Event()
    if with_worker:
        from hookdeploy.engine.worker import Worker

        worker = Worker(live, store)

        def run_worker() -> None:
            try:
                worker.run(worker_stop)
            except HookdeployError as error:  # the store or the engine refused: said in one line
                log.error("the worker stopped: %s; shutting down so a supervisor restarts us", error)
                failed.set()
                stop.set()
            except BaseException:
                log.exception("the worker stopped unexpectedly; shutting down so a supervisor restarts us")
                failed.set()
                stop.set()

        worker_thread = threading.Thread(target=run_worker, name="worker", daemon=True)
        worker_thread.start()

    # Read the listening addresses before the loop thread starts adding connections to the map.
    addresses = " ".join(f"http://{address}" for address in _addresses(dispatchers))
    http_thread = threading.Thread(target=http.run, name="http", daemon=True)
    http_thread.start()
    log.info("serving on %s (%d threads, worker %s)", addresses,
             config.server.threads, "in this process" if with_worker else "off")
    while not stop.wait(0.5):
        pass

    log.info("stopping: no new connections; finishing requests in flight")
    worker_stop.set()
    _drain(http, dispatchers)
    if worker_thread is not None:
        worker_thread.join()
    log.info("stopped")
    return 1 if failed.is_set() else 0


def _drain(http, dispatchers: dict) -> None:
    """Stop accepting, let each connection finish the request it is in, close it, then stop."""
    servers = [d for d in list(dispatchers.values()) if isinstance(d, waitress.server.BaseWSGIServer)]
    for server in servers:
        server.accepting = False  # readable() is False from now on: accept() is no longer called
    tasks = http.task_dispatcher
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        channels = [d for d in list(dispatchers.values()) if isinstance(d, waitress.channel.HTTPChannel)]
        if not channels and not tasks.active_count and not tasks.queue:
            break
        for channel in channels:
            # Under the lock the loop thread takes to start a request: an idle keep-alive connection
            # reads nothing more and closes once its last answer is flushed; a busy one is marked
            # on a later pass, after its answer.
            with channel.requests_lock:
                if not channel.requests:
                    channel.close_when_flushed = True
        servers[0].pull_trigger()  # the loop thread re-checks which channels can write or close
        time.sleep(0.02)
    else:
        log.warning("requests still in flight after %.0f s; closing anyway", DRAIN_SECONDS)
    for dispatcher in list(dispatchers.values()):
        try:
            if isinstance(dispatcher, waitress.channel.HTTPChannel):
                dispatcher.handle_close()
            else:
                dispatcher.close()
        except OSError:
            pass  # already closed by its peer
    tasks.shutdown(timeout=1)


def _addresses(dispatchers: dict) -> list[str]:
    found = []
    for dispatcher in list(dispatchers.values()):
        if isinstance(dispatcher, waitress.server.BaseWSGIServer):
            host, port = dispatcher.getsockname()[:2]
            found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return found
