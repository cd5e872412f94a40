"""The endpoint: a listening socket served from the launcher's own job loop.

No thread: the agent forks its ranks (again at each restart) and must have
no other thread when it does (docs/architecture.md, "fork from a launcher
that has ... no threads yet"), so the loop polls this server's sockets beside
its own and calls serve() for the ready ones. Every socket is non-blocking:
a scrape never stalls the job, and a slow or silent client is dropped at
net/http's 10 s timeouts (dcgm-exporter's ReadTimeout and WriteTimeout).
Sockets are close-on-exec and the ranks close what they inherit (rank/
process.py), so only this process holds the port: it is gone with the
launcher, whatever ends it."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakerun.dcgm import http
from fakerun.errors import UsageError

POLLIN, POLLOUT = 1, 2  # zmq.POLLIN, zmq.POLLOUT: zmq.poll takes raw descriptors with these
TIMEOUT_S = 10.0  # server.go: ReadTimeout and WriteTimeout, 10 s each
MAX_CLIENTS = 8  # Prometheus keeps one connection a target: the rest wait in the backlog
BACKLOG = 16


class PortTaken(UsageError):
    """The address cannot be listened on (taken, not ours); one line, exit 2."""


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    inbox: bytes = b""
    outbox: bytes = b""
    keep: bool = True


@dataclass
class MetricsServer:
    """`metrics()` gives the scrape's body at the moment of a request;
    `wall()` the time the Date header shows."""

    host: str
    port: int
    metrics: Callable[[], bytes]
    wall: Callable[[], float]
    listener: socket.socket = field(init=False)
    clients: dict[int, _Client] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Go's net.Listen sets SO_REUSEADDR: a restarted exporter rebinds
            # at once, past the last run's TIME_WAIT connections.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((self.host, self.port))
            self.listener.listen(BACKLOG)
        except (OSError, OverflowError, ValueError) as exc:  # taken, not ours, no such host
            self.listener.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PortTaken(f"--metrics-port {self.port} on {self.host}: {reason}") from None
        self.listener.setblocking(False)

    @property
    def bound_port(self) -> int:
        return int(self.listener.getsockname()[1])

    def poll_items(self) -> list[tuple[Any, int]]:
        items: list[tuple[Any, int]] = []
        if len(self.clients) < MAX_CLIENTS:
            items.append((self.listener.fileno(), POLLIN))
        items += [(fd, POLLOUT if c.outbox else POLLIN) for fd, c in self.clients.items()]
        return items

    def serve(self, ready: dict[Any, int], now: float) -> None:
        """Do what the ready sockets allow, and drop clients past their deadline."""
        if self.listener.fileno() in ready:
            self._accept(now)
        for fd in [fd for fd in self.clients if fd in ready]:
            client = self.clients[fd]
            if client.outbox:
                self._write(client, now)
            else:
                self._read(client, now)
        for fd in [fd for fd, c in self.clients.items() if now >= c.deadline]:
            self._drop(fd)

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        self.listener.close()

    # -- the clients ---------------------------------------------------
    def _accept(self, now: float) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the client waits in the backlog
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                continue  # ECONNABORTED and the like: that client gave up
            sock.setblocking(False)
            self.clients[sock.fileno()] = _Client(sock, now + TIMEOUT_S)

    def _read(self, client: _Client, now: float) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client.sock.fileno())
            return
        client.inbox += data
        end = client.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(client.inbox) > http.REQUEST_MAX:
                self._drop(client.sock.fileno())
            return
        head, client.inbox = client.inbox[:end], client.inbox[end + 4:]
        self._answer(client, head, now)

    def _answer(self, client: _Client, head: bytes, now: float) -> None:
        try:
            req = http.parse(head)
        except http.BadRequest:
            client.outbox, client.keep = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", False
        else:
            status, body = http.route(req.path, self.metrics() if req.path == "/metrics" else b"")
            client.outbox, client.keep = http.respond(req, status, body, self.wall())
        client.deadline = now + TIMEOUT_S
        self._write(client, now)

    def _write(self, client: _Client, now: float) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client.sock.fileno())
            return
        client.outbox = client.outbox[sent:]
        if client.outbox:
            return
        if not client.keep:
            self._drop(client.sock.fileno())
        else:
            client.deadline = now + TIMEOUT_S  # idle: net/http's IdleTimeout falls back to ReadTimeout
            if client.inbox.find(b"\r\n\r\n") >= 0:  # a pipelined request already here
                end = client.inbox.find(b"\r\n\r\n")
                head, client.inbox = client.inbox[:end], client.inbox[end + 4:]
                self._answer(client, head, now)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.sock.close()


def probe(host: str, ports: list[int]) -> None:
    """PortTaken unless every port can be listened on now (the local
    cluster's agents each take one: none starts while one would fail)."""
    for port in ports:
        MetricsServer(host, port, bytes, float).close()
