"""The wire's transport: zmq sockets, the routing ids peers go by, and the
compiled send the hot paths use.

Node 0's ROUTER binds the job's endpoints; ranks and other nodes' agents
connect DEALERs whose routing id names them (`rank-N`, `agent-K`). Links
that leave the private run directory are CurveZMQ (see keys.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import zmq

from fakerun.protocol.codec import Encoded, encode
from fakerun.protocol.keys import JobKeys, secured
from fakerun.protocol.messages import TRANSPORT_MAX_BYTES

# Plain ints: pyzmq's enum arithmetic on every call showed in profiles.
NOBLOCK = int(zmq.NOBLOCK)
MORE_NOBLOCK = int(zmq.SNDMORE) | NOBLOCK
EVENTS = int(zmq.EVENTS)
RCVMORE = int(zmq.RCVMORE)
POLLIN = int(zmq.POLLIN)
PEER_QUEUE = 100  # messages
HANDSHAKE_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
# The compiled send itself: zmq.Socket.send is a Python override adding
# routing_id/group handling (draft sockets) that ROUTER and DEALER never use,
# and it doubled the cost of each of the 2N sends that release a collective.
raw_send = zmq.backend.Socket.send


class RouterSocket:
    """The zmq edge: a ROUTER bound to the job's endpoints; those that leave
    the private run directory are CurveZMQ servers with the job's keys."""

    def __init__(self, ctx: zmq.Context, endpoints: list[str], keys: JobKeys | None = None) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_MAX_BYTES)
        # What one peer may have queued here before libzmq stops reading its
        # connection (it pushes back; nothing is dropped): 32 MiB at most,
        # against 320 MiB at libzmq's default. A rank has one collective in
        # flight and a few reports; an agent, a heartbeat a second.
        self.sock.setsockopt(zmq.RCVHWM, PEER_QUEUE)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        plain = [e for e in endpoints if not secured(e)]
        for endpoint in plain:  # bound before the Curve options: each listener keeps what was set
            self.sock.bind(endpoint)
        if len(plain) < len(endpoints):
            if keys is None:
                raise ValueError("a TCP endpoint needs the job's keys")
            keys.serve(self.sock)
            for endpoint in endpoints:
                if secured(endpoint):
                    self.sock.bind(endpoint)
        # Peers refused in the handshake never reach us as messages: libzmq
        # tells of them on a monitor, and they are counted like the rest.
        monitor = f"inproc://fakerun-router-{id(self)}"
        self.sock.monitor(monitor, HANDSHAKE_FAILED)
        self._monitor = ctx.socket(zmq.PAIR)
        self._monitor.connect(monitor)

    def refused(self) -> int:
        """Handshakes failed since last asked (at least: libzmq drops a
        monitor's events past its queue's 1000)."""
        count = 0
        with contextlib.suppress(zmq.Again):
            while True:
                _event, endpoint = self._monitor.recv_multipart(NOBLOCK)
                # Only on a link that leaves the run directory is a failed
                # handshake a peer refused: on ipc://, private to us, it is one
                # of our ranks killed before its handshake was done (libzmq
                # says NO_DETAIL, as it also may for a CurveZMQ peer that sees
                # the mechanism differ and hangs up first).
                count += secured(endpoint.decode("utf-8", "replace"))
        return count

    def drain(self, limit: int = 4096) -> Iterator[list[bytes]]:
        """Every message waiting (up to `limit`), each as its frames, one at
        a time: each is handled before the next is read, so a flood of big
        frames never piles up here.

        Read until zmq.Again: a recv that finds a message makes no system
        call, while asking EVENTS before each message polls zmq's mailbox
        every time (measured: 8 messages drained in 37 µs against 56 µs).
        The frames are read here rather than by recv_multipart, whose Python
        wrapper cost as much as the reads. A ROUTER message always has its
        peer's identity and at least one more frame, delivered together."""
        recv, more = self.sock.recv, self.sock.get
        for _ in range(limit):
            try:
                parts = [recv(NOBLOCK), recv(NOBLOCK)]
                while more(RCVMORE):
                    parts.append(recv(NOBLOCK))
            except zmq.Again:
                return
            yield parts

    def send(self, identity: bytes, msg: Any) -> bool:
        try:
            raw_send(self.sock, identity, MORE_NOBLOCK)
            raw_send(self.sock, msg.frame if isinstance(msg, Encoded) else encode(msg), NOBLOCK)
            return True
        except zmq.ZMQError:  # peer gone (ROUTER_MANDATORY) or its queue full
            return False

    def close(self) -> None:
        self.sock.disable_monitor()
        self._monitor.close(linger=0)
        self.sock.close(linger=0)
