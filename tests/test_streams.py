"""Long engine calls (engine/streams.py): a stop is seen within half a second even while the call says
nothing, one timeout rule, and the call is cancelled whichever way the caller leaves; a push and a pull
to a registry that never answers are stopped that fast, through a fake stream and through the engine."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest

from hookdeploy.core.errors import Aborted, StepFailed
from hookdeploy.engine import registry, streams

DIGEST = "sha256:" + "0" * 64


def silent_after(*items):
    """A call that says `items` and then nothing, until the returned event is set (its cancel)."""
    cancelled = threading.Event()

    def call():
        yield from items
        cancelled.wait(30)

    return call, cancelled


def stopped_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_a_stop_is_seen_within_half_a_second_while_the_call_says_nothing_and_cancels_it():
    call, cancelled = silent_after("Step 1/2 : RUN sleep 600\n")
    chunks, reader = streams.feed(call, "test-silent")
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(Aborted):
        streams.relay(chunks, lines.extend, stopped_after(0.2), cancelled.set, 60, "build")
    assert time.monotonic() - started < 0.2 + streams.POLL_SECONDS + 0.2
    assert cancelled.is_set() and lines == ["Step 1/2 : RUN sleep 600"]
    reader.join(2)
    assert not reader.is_alive()


def test_one_timeout_rule_from_the_start_or_for_a_transfer_from_its_last_word():
    def chatty():
        for number in range(8):
            yield f"{number}\n"
            time.sleep(0.1)

    chunks, _ = streams.feed(chatty, "test-chatty")
    cancelled = threading.Event()
    with pytest.raises(StepFailed, match=r"^build timed out after 0.35 s$"):
        streams.relay(chunks, lambda lines: None, None, cancelled.set, 0.35, "build")
    assert cancelled.is_set()

    # Six words 0.25 s apart, then silence: a rule from the start (1 s) would cut the fifth; the transfer's
    # rule hears all six. The gaps are a quarter of the limit, so a loaded machine does not end it early.
    call, cancelled = silent_after(*[{"status": "Pushing", "id": str(number)} for number in range(6)])

    def talks_then_goes_quiet():
        for item in call():
            yield item
            time.sleep(0.25)

    chunks, _ = streams.feed(talks_then_goes_quiet, "test-quiet")
    seen = []
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"^the push made no progress for 1 s$"):
        for item in streams.items(chunks, None, cancelled.set, 1.0, "push", quiet=True):
            seen.append(item)
    assert len(seen) == 6 and time.monotonic() - started > 2.0  # longer than 1 s in all: it kept talking
    assert cancelled.is_set()


def test_an_error_of_the_call_reaches_the_caller_and_a_caller_leaving_early_cancels():
    def failing():
        yield "a\nb"
        raise ConnectionResetError("reset by the engine")

    chunks, _ = streams.feed(failing, "test-failing")
    lines: list[str] = []
    with pytest.raises(ConnectionResetError):
        streams.relay(chunks, lines.extend, None, lambda: None, 60)
    assert lines == ["a"]

    call, cancelled = silent_after({"error": "denied"}, {"status": "more"})
    chunks, _ = streams.feed(call, "test-early")
    for item in streams.items(chunks, None, cancelled.set, 60, "push", quiet=True):
        break
    assert cancelled.wait(1)


class FakeConnection:
    """streams.Connection with an API whose push and pull say one line and then nothing until closed."""

    made: list["FakeConnection"] = []

    def __init__(self, client, timeout):
        self.timeout, self.closed = timeout, threading.Event()
        self.api = SimpleNamespace(push=self.transfer, pull=self.transfer)
        FakeConnection.made.append(self)

    def transfer(self, *args, **kwargs):
        yield {"status": "The push refers to repository [127.0.0.1:1/n/site]"}
        self.closed.wait(30)
        raise OSError("connection closed")

    def close(self):
        self.closed.set()


def stand_ins(url: str):
    config = SimpleNamespace(registry=SimpleNamespace(url=url, username=""), server=SimpleNamespace(name="n"))
    app = SimpleNamespace(name="site", image=f"{url}/n/site")
    return config, app


def test_a_push_and_a_pull_see_a_stop_while_no_chunk_arrives(monkeypatch):
    monkeypatch.setattr(streams, "Connection", FakeConnection)
    image = SimpleNamespace(tag=lambda *args, **kwargs: True)
    client = SimpleNamespace(images=SimpleNamespace(get=lambda name: image))
    config, app = stand_ins("127.0.0.1:1")
    for transfer in (lambda stop: registry.push(client, config, app, "n/site:0123456789ab", "0123456789ab" * 3,
                                                lambda lines: None, stop),
                     lambda stop: registry.pull(client, config, app, DIGEST, "n/site:0123456789ab",
                                                lambda lines: None, stop)):
        FakeConnection.made.clear()
        started = time.monotonic()
        with pytest.raises(Aborted):
            transfer(stopped_after(0.2))
        assert time.monotonic() - started < 0.2 + streams.POLL_SECONDS + 0.2
        connection, = FakeConnection.made
        assert connection.closed.is_set() and connection.timeout == registry.TRANSFER_TIMEOUT


@pytest.fixture
def silent_registry():
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    done.set()
    thread.join(2)
    for connection in held:
        connection.close()
    server.close()


def test_the_engine_push_and_pull_to_a_registry_that_never_answers_end_at_a_stop(docker_engine, silent_registry):
    from docker_helpers import BASE_IMAGE

    from hookdeploy.engine import containers

    config, app = stand_ins(silent_registry)
    lines: list[str] = []
    try:
        for transfer in (lambda stop: registry.push(docker_engine, config, app, BASE_IMAGE, "0123456789ab" * 3,
                                                    lines.extend, stop),
                         lambda stop: registry.pull(docker_engine, config, app, DIGEST, "n/site:0123456789ab",
                                                    lines.extend, stop)):
            started = time.monotonic()
            with pytest.raises(Aborted):
                transfer(stopped_after(0.5))
            assert time.monotonic() - started < 0.5 + streams.POLL_SECONDS + 0.3
    finally:
        containers.remove_image(docker_engine, f"{silent_registry}/n/site:0123456789ab")
