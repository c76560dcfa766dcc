"""The registry dies in the middle of a push: the job fails before the switch, the live release keeps
serving, and the registry is usable again once it is back.

To be in the middle of the push for certain, hookdeploy (that is, the engine) talks to the registry
through `Relay`, a small TCP relay on 127.0.0.1 that forwards every connection both ways, limits each
connection's upstream throughput, and holds a connection still once it has carried HOLD_AFTER bytes
upstream (only the big layer's upload is that large): the test then kills the registry (SIGKILL, as
a crash would) and drops every relayed connection. The engine retries a failed layer upload on its
own (dockerd's max-upload-attempts: 5 tries, 5 + 10 + 15 + 20 s apart), so the job takes about 50 s
to fail after the kill; the registry must stay down until then, or a retry would finish the push.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

from docker_helpers import site_files
from hookdeploy.core.models import JobState
from test_registry import registry_table

RATE = 2_000_000  # bytes a second, upstream, per relayed connection
HOLD_AFTER = 1_000_000  # bytes of one connection's upstream after which the relay holds it
BIG = base64.b64encode(os.urandom(6_000_000)).decode()  # 8 MB of text, about 6 MB gzipped


class Relay:
    """127.0.0.1:PORT → 127.0.0.1:UPSTREAM, every connection both ways. Once `arm()`ed, the connections
    it opens from then on are throttled upstream, and the first of them to carry `hold_after` bytes
    upstream sets `midway` and is held until `drop()`."""

    def __init__(self, upstream: int, rate: int = RATE, hold_after: int = HOLD_AFTER):
        self.upstream, self.rate, self.hold_after = upstream, rate, hold_after
        self.midway = threading.Event()
        self.most = 0  # the most bytes one connection carried upstream
        self.refused = 0  # connections closed at once because the registry did not answer
        self._armed = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arm(self) -> None:
        self._armed = True

    def _spawn(self, target, *arguments) -> None:
        thread = threading.Thread(target=target, args=arguments, daemon=True, name="relay")
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                with self._lock:
                    self.refused += 1
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            self._spawn(self._pipe, client, server, self._armed)
            self._spawn(self._pipe, server, client, False)

    def _pipe(self, source: socket.socket, target: socket.socket, watched: bool) -> None:
        """Copy source to target until either end closes; `watched`: upstream of an armed connection."""
        started, carried = time.monotonic(), 0
        try:
            while data := source.recv(65536):
                if watched and carried >= self.hold_after and not self.midway.is_set():
                    self.midway.set()  # one connection only: the later ones (retries, v3) pass
                    self._released.wait()
                target.sendall(data)
                if watched:
                    carried += len(data)
                    with self._lock:
                        self.most = max(self.most, carried)
                    ahead = carried / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        for each in (source, target):
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        """Close every relayed connection (the listener stays: later connections are relayed again)."""
        self._released.set()
        with self._lock:
            dropped, self._sockets = self._sockets, set()
        for each in dropped:
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            each.close()

    def close(self) -> None:
        self._listener.close()
        self.drop()
        for thread in self._threads:
            thread.join(5)


def test_a_registry_killed_mid_push_fails_the_job_and_the_live_release_keeps_serving(instance, registry,
                                                                                     monkeypatch):
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    relay = Relay(registry.port)
    worker: threading.Thread | None = None
    try:
        table = registry_table(registry)
        assert f'url = "{registry.url}"' in table
        instance.configure({"site": {"push": True}}, extra=table.replace(registry.url, relay.url))
        repository = f"{instance.name}/site"
        first = instance.deploy("site", site_files("v1"))
        assert first.state is JobState.SUCCEEDED, instance.events(first.id)

        relay.arm()
        job = instance.enqueue("site", instance.commit("site", site_files("v2", extra={"site/big.txt": BIG})))
        finished: list = []
        worker = threading.Thread(target=lambda: finished.append(instance.worker_process()), daemon=True)
        worker.start()
        assert relay.midway.wait(60), (relay.most, instance.events(job.id))
        assert HOLD_AFTER <= relay.most < 2 * HOLD_AFTER < len(BIG) // 3  # well inside the big layer
        assert f"pushing {relay.url}/{repository}:{job.sha[:12]}" in instance.events(job.id)
        registry.kill()
        relay.drop()
        killed = time.monotonic()

        worker.join(150)
        assert not worker.is_alive() and finished and finished[0].returncode == 0, finished
        failed = instance.store.job(job.id)
        log = "\n".join(instance.events(job.id))
        print(f"job {job.id} failed {time.monotonic() - killed:.1f} s after the kill "
              f"({relay.refused} connections refused meanwhile): {failed.error}")
        assert failed.state is JobState.FAILED, log
        assert failed.error.startswith(f"push to {relay.url} failed: "), failed.error
        assert registry.password not in log + finished[0].stdout + finished[0].stderr
        assert "v1" in instance.get().body
        assert instance.container_names() == instance.expected_containers("site")
        assert instance.store.live_release("site").sha == first.sha

        registry.start()
        third = instance.deploy("site", site_files("v3"))
        assert third.state is JobState.SUCCEEDED, instance.events(third.id)
        assert registry.tags(repository) == sorted([first.sha[:12], third.sha[:12]])  # v2 never got a tag
        assert third.digest == registry.manifest_digest(repository, third.sha[:12])
        assert "v3" in instance.get().body
    finally:
        relay.close()
        if worker is not None:
            worker.join(150)
        registry.remove_local_tags(instance.client)
        for tag in [tag for image in instance.client.images.list() for tag in image.tags
                    if tag.startswith(f"{relay.url}/")]:  # what the engine tagged under the relay's name
            try:
                instance.client.images.remove(tag)
            except Exception:  # noqa: BLE001 - cleanup goes on whatever one tag does
                pass
