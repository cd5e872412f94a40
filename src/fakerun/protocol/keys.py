"""The job's CurveZMQ keys, derived from its token, and the gate that admits
only the peers that hold them.

Every TCP link of a job (another node's agent or rank to node 0's
coordinator) is CurveZMQ (RFC 26): encrypted, and authenticated both ways.
A peer without the token cannot finish the handshake, so it never reaches
the ROUTER: it cannot read the hello's token, claim an identity such as
`agent-1` before the real peer, inject a frame, or make node 0 buffer its
messages. A node that dials a port someone else squats gets no valid
WELCOME from them (that needs the server's secret key), so it sends nothing
but the handshake's own boxes. `ipc://` links stay unencrypted: their
socket lives in the user's private 0700 run directory, which no other user
can enter.

Keys are derived, not exchanged: every process of a job already holds the
token, and each key is HMAC-SHA256(token, label) with a label of its own,
so knowing one key (the server's public key is public in CurveZMQ's model)
tells nothing of the token or of the others.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks (RFC 27)
ZAP_DOMAIN = b"fakerun"
SERVER_LABEL = b"fakerun curve server key v1"
CLIENT_LABEL = b"fakerun curve client key v1"


def secured(endpoint: str) -> bool:
    """Whether a link to `endpoint` must be CurveZMQ: every one that leaves
    the private run directory."""
    return not endpoint.startswith("ipc://")


def _secret(token: str, label: bytes) -> bytes:
    """A Curve25519 secret key (Z85): any 32 bytes are one, clamped by libsodium."""
    return z85.encode(hmac.new(token.encode(), label, hashlib.sha256).digest())


@dataclass(frozen=True)
class JobKeys:
    """Both key pairs of a job, Z85-encoded as libzmq takes them."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def derive(cls, token: str) -> JobKeys:
        server, client = _secret(token, SERVER_LABEL), _secret(token, CLIENT_LABEL)
        return cls(zmq.curve_public(server), server, zmq.curve_public(client), client)

    def serve(self, sock: zmq.Socket) -> None:
        """Make the endpoints `sock` binds from now on CurveZMQ servers (libzmq
        copies a socket's options into each listener as it binds)."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.server_secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    def dial(self, sock: zmq.Socket) -> None:
        """Make `sock`'s connections CurveZMQ clients of the job's coordinator."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.client_secret)


class Gate:
    """The context's ZAP handler: a CurveZMQ peer gets in only with the
    job's client key. Without a handler libzmq admits any client that knows
    the server's public key, and CurveZMQ treats that key as public.

    A thread of its own: libzmq holds each handshake until ZAP answers, and
    the launcher's loop may be busy rendering. It sleeps in zmq_poll between
    handshakes, which costs nothing."""

    def __init__(self, ctx: zmq.Context, keys: JobKeys) -> None:
        self._allowed = z85.decode(keys.client_public)
        self._zap = ctx.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        # The thread's stop signal: a pair of inproc sockets, as zmq sockets
        # are not to be closed from another thread than the one using them.
        pipe = f"inproc://fakerun-gate-{id(self)}"
        self._stop_rx = ctx.socket(zmq.PAIR)
        self._stop_rx.bind(pipe)
        self._stop_tx = ctx.socket(zmq.PAIR)
        self._stop_tx.connect(pipe)
        self.refused = 0
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        poller.register(self._stop_rx, zmq.POLLIN)
        try:
            while self._stop_rx not in dict(poller.poll()):
                self._zap.send_multipart(self._answer(self._zap.recv_multipart()))
        finally:
            self._zap.close(linger=0)
            self._stop_rx.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """RFC 27: version, request id, domain, address, identity, mechanism,
        credentials -> version, request id, status, text, user id, metadata."""
        version, request_id = (request + [b"", b""])[:2]
        ok = (len(request) == 7 and request[5] == b"CURVE"
              and hmac.compare_digest(request[6], self._allowed))
        if not ok:
            self.refused += 1
        return [version, request_id, b"200" if ok else b"400",
                b"OK" if ok else b"not a peer of this job", b"", b""]

    def close(self) -> None:
        self._stop_tx.send(b"")
        self._thread.join(timeout=5)
        self._stop_tx.close(linger=0)
