"""Faults as they happen, for the tests: an endpoint that dies in the middle of a write; a Redis connection
reset while a popped message is on the wire; a consumer killed in the middle of its restore sweep.

`FlakyEndpoint` is a TCP proxy on loopback in front of a real server (moto's S3). Told to, it dies when the
n-th HTTP request with a given method starts: it stops listening and resets every open connection, so the
request in flight is cut mid-body, and later ones are refused, as with a crashed or partitioned endpoint. It
comes back on the same port when `revive()` is called or after `down_s`. With `latency_s` set, it holds each
request that many seconds before passing it on: a slow endpoint (a far region, a loaded gateway).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# A consumer's restore sweep, stopped where it holds kombu's lock: the lock taken by kombu's own Mutex, with the
# expiry genfleet's transport options give every consumer.
_SWEEPING = """
import sys
from kombu.transport.redis import Mutex
from genfleet.shared.queue import publisher
from genfleet.shared.settings import Settings
app = publisher(Settings(), sys.argv[1])
with app.connection_for_write() as conn:
    channel = conn.default_channel
    with channel.conn_or_acquire() as client, Mutex(client, channel.unacked_mutex_key, channel.unacked_mutex_expire):
        print("holding", flush=True)
        sys.stdin.read()  # held until the test kills this process (its stdin stays open till then)
"""


def die_holding_restore_lock(redis_url: str, env: dict[str, str]) -> None:
    """SIGKILLs a consumer while it holds kombu's restore lock, as an OOM kill in the middle of a sweep does: the
    lock stays in Redis until it expires."""
    proc = subprocess.Popen([sys.executable, "-c", _SWEEPING, redis_url], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


class FlakyEndpoint:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._die_at: tuple[bytes, int] | None = None
        self._down_s: float | None = None
        self.requests: dict[bytes, int] = {}
        self.deaths = 0
        self.latency_s = 0.0
        self.revive()

    def die_at(self, method: str, n: int, down_s: float | None = None) -> None:
        """Die when the n-th `method` request (counted from now) starts; come back after `down_s` if given."""
        with self._lock:
            self.requests = {}
            self._die_at, self._down_s = (method.encode(), n), down_s

    def kill(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            self.deaths += 1
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept(); close() alone does not
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            try:  # RST rather than FIN: the peer sees "connection reset", as when a host dies
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass

    def revive(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    @property
    def up(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while (data := src.recv(65536)) and self._relay(data, src, dst, from_client):
                pass
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def _relay(self, data: bytes, src: socket.socket, dst: socket.socket, from_client: bool) -> bool:
        """Passes one chunk on; False ends the connection."""
        if from_client and self._should_die(data):
            self._die()
            return False
        if from_client and self.latency_s and _starts_request(data):
            time.sleep(self.latency_s)
        dst.sendall(data)
        return True

    def _should_die(self, data: bytes) -> bool:
        """Counts request starts."""
        if not _starts_request(data):
            return False
        method = data.split(b" ", 1)[0]
        with self._lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            hit = self._die_at is not None and self._die_at[0] == method and self.requests[method] >= self._die_at[1]
            if hit:
                self._die_at = None
            return hit

    def _die(self) -> None:
        down_s = self._down_s
        self.kill()
        if down_s is not None:
            threading.Timer(down_s, self.revive).start()

    def wait_revived(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.up and time.monotonic() < deadline:
            time.sleep(0.05)


def _starts_request(data: bytes) -> bool:
    """A method at the start of a chunk (botocore sends a request's headers in one write)."""
    method = data.split(b" ", 1)[0]
    return method.isalpha() and method.isupper()


class BrokenPop(FlakyEndpoint):
    """A TCP proxy in front of Redis that, once armed, resets the connection that is about to receive the first
    BRPOP reply carrying a message: the pop has happened on the server, the consumer never gets the message
    (as when a failover or a network reset cuts the reply). Later connections pass untouched."""

    def __init__(self, target_port: int) -> None:
        self.armed = threading.Event()
        self.lost = 0  # replies cut
        self._popping: dict[socket.socket, bool] = {}  # per client connection: its last command was a BRPOP
        super().__init__(target_port)

    def _relay(self, data: bytes, src: socket.socket, dst: socket.socket, from_client: bool) -> bool:
        client = src if from_client else dst
        if from_client:
            self._popping[client] = b"\r\nBRPOP\r\n" in data.upper()
        elif self.armed.is_set() and self._popping.get(client) and data.startswith(b"*2\r\n"):
            self.armed.clear()
            self.lost += 1
            # RST, so the client reads "connection reset by peer". SHUT_RD wakes the thread blocked in recv() on
            # the other direction; the last close() then resets (close() alone would wait for that thread).
            for c in (src, dst):
                with contextlib.suppress(OSError):
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.shutdown(socket.SHUT_RD)
            return False
        dst.sendall(data)
        return True
