"""Slow clients, as a test or bench throws them at a server: many connections that each send the start
of a request head and then one more byte now and then, never finishing it (the "slowloris" attack).
A connection counts as closed once the server hangs up on it. Over TLS they resume one TLS 1.2
session, as an attacker would: a resumed handshake costs neither side a key exchange, so 2,000 of
them open in a few seconds even on a busy 2-core machine.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import resource
import selectors
import socket
import ssl
import threading
import time

OPENERS = 8  # threads opening connections
# Never finished: the header value goes on one byte at a time and the head never gets its blank line.
REQUEST_START = b"POST /hooks/site HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: "


def allow_open_files(count: int) -> None:
    """Raise this process's open-file limit to at least `count` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def attacker_context() -> ssl.SSLContext:
    """TLS as a slow client does it: no certificate checked, TLS 1.2 so that its session can be resumed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


class SlowClients:
    """`count` slow connections to 127.0.0.1:port from `source` (over TLS with `tls`, else plain TCP),
    each sending a byte every `interval` seconds from one background thread."""

    def __init__(self, port: int, count: int, *, source: str = "127.0.0.2", tls: bool = False,
                 interval: float = 1.0, connect_timeout: float = 2.0):
        self.port, self.count, self.source = port, count, source
        self.context = attacker_context() if tls else None
        self.session: ssl.SSLSession | None = None  # the first connection's, resumed by the others
        self.interval, self.connect_timeout = interval, connect_timeout
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.open_sockets: set[socket.socket] = set()
        self.opened = self.refused = self.closed = 0
        self.opening_seconds = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._dribble, name="slow-clients", daemon=True)

    def open(self) -> "SlowClients":
        """Open the connections (each sends REQUEST_START), then dribble. One the server does not take
        within connect_timeout counts as refused."""
        allow_open_files(self.count + 512)
        started = time.monotonic()
        self.thread.start()
        # A handshake mostly waits on the server: several at a time overlap the waits.
        first = self._connect() if self.count else None
        if first is not None and self.context is not None:
            self.session = first.session
        with concurrent.futures.ThreadPoolExecutor(OPENERS) as pool:
            others = pool.map(self._connect, range(self.count - 1))
            for connection in itertools.chain([first] if self.count else [], others):
                if connection is None:
                    self.refused += 1
                    continue
                with self.lock:
                    self.open_sockets.add(connection)
                    self.selector.register(connection, selectors.EVENT_READ)
                    self.opened += 1
        self.opening_seconds = time.monotonic() - started
        return self

    def _connect(self, _number: int = 0) -> socket.socket | None:
        try:
            plain = socket.create_connection(("127.0.0.1", self.port), timeout=self.connect_timeout,
                                             source_address=(self.source, 0))
        except OSError:
            return None
        try:
            connection = (self.context.wrap_socket(plain, server_hostname="localhost", session=self.session)
                          if self.context is not None else plain)
            connection.sendall(REQUEST_START)
        except OSError:
            plain.close()
            return None
        connection.setblocking(False)
        return connection

    @property
    def open_now(self) -> int:
        """Connections opened and not yet hung up on by the server."""
        with self.lock:
            return len(self.open_sockets)

    def wait_until_all_closed(self, timeout: float) -> bool:
        """True once the server has hung up on every connection opened, False after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.open_now and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.open_now

    def _dribble(self) -> None:
        next_byte = time.monotonic() + self.interval
        while not self.stopping.is_set():
            with self.lock:
                registered = bool(self.open_sockets)
            events = self.selector.select(timeout=0.05) if registered else []
            if not registered:
                time.sleep(0.05)
            with self.lock:
                for key, _ in events:
                    self._check_hung_up(key.fileobj)
                if time.monotonic() >= next_byte:
                    next_byte = time.monotonic() + self.interval
                    for connection in list(self.open_sockets):
                        try:
                            connection.send(b"a")
                        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                            pass  # its buffer is full: still open, and still slow
                        except OSError:
                            self._forget(connection)

    def _check_hung_up(self, connection: socket.socket) -> None:
        if connection not in self.open_sockets:
            return
        try:
            if connection.recv(4096):
                return  # the server said something (an error page) but kept the connection
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return  # a TLS record not yet whole
        except OSError:
            pass  # reset, or a TLS alert: hung up all the same
        self._forget(connection)

    def _forget(self, connection: socket.socket) -> None:
        self.open_sockets.discard(connection)
        self.selector.unregister(connection)
        connection.close()
        self.closed += 1

    def close(self) -> None:
        """Stop dribbling and close every connection still open."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        with self.lock:
            for connection in list(self.open_sockets):
                self._forget(connection)
        self.selector.close()

    def __enter__(self) -> "SlowClients":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
