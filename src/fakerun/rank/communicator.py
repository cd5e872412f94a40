"""A rank's communicator: a DEALER to the coordinator with blocking collectives.

A collective really blocks until the coordinator releases it, so a dead or
slow peer makes this rank wait exactly as NCCL would. While waiting we wake
once a second to check that the launcher (our parent, which hosts the
coordinator) is still alive; PR_SET_PDEATHSIG covers the fast path on Linux.
"""

from __future__ import annotations

import os
import time
from typing import Any

import zmq

from fakerun.errors import FakerunError
from fakerun.protocol.codec import decode, encode, encode_contribute
from fakerun.protocol.keys import JobKeys, secured
from fakerun.protocol.messages import (
    Abort,
    Ack,
    Goodbye,
    Hello,
    Output,
    ProtocolError,
    Refused,
    Release,
    Welcome,
    rank_routing_id,
)
from fakerun.protocol.transport import raw_send
from fakerun.rank.pacing import Pacer

WAKE_MS = 1000
_RELEASE = (Release,)


class CommError(FakerunError, RuntimeError):
    """The job cannot go on from this rank's point of view."""


class ParentGone(CommError):
    pass


class RendezvousRefused(CommError):
    pass


class CollectiveAborted(CommError):
    def __init__(self, abort: Abort) -> None:
        super().__init__(abort.detail or abort.cause)
        self.abort = abort


class Communicator:
    def __init__(self, ctx: zmq.Context, endpoint: str, rank: int, parent_pid: int, token: str) -> None:
        self.rank = rank
        self.parent_pid = parent_pid
        self.stop_requested = False
        self.now = 0.0  # the run's virtual clock, as of the last release
        self.pacer: Pacer | None = None  # set by the script: sleeps before each collective
        self.welcomed = (0.0, 0.0)
        self._seqs: dict[str, int] = {}  # per communicator: the last collective's number
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, rank_routing_id(rank))
        # The coordinator binds a few ms after we are forked: retry fast.
        self.sock.setsockopt(zmq.RECONNECT_IVL, 5)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.RCVTIMEO, WAKE_MS)
        if secured(endpoint):  # another node's coordinator
            JobKeys.derive(token).dial(self.sock)
        self.sock.connect(endpoint)

    # -- rendezvous -----------------------------------------------------
    def hello(self, hello: Hello, timeout_s: float) -> Welcome:
        self._send(hello)
        reply = self._wait((Welcome, Refused), timeout_s)
        if isinstance(reply, Refused):
            raise RendezvousRefused(f"coordinator refused rank {self.rank}: {reply.reason}")
        if reply is None:
            raise CommError(f"rendezvous timed out after {timeout_s:.0f}s")
        self.now = reply.now
        self.welcomed = (time.monotonic(), reply.now)  # where pacing maps the run's clock onto ours
        return reply

    # -- collectives ----------------------------------------------------
    def all_reduce(self, values: list[float], op: str = "sum", *, tag: str = "", step: int = 0,
                   numel: int = 0, sim_s: float = 0.0, comm: str = "world") -> list[float]:
        """`numel` is the size of the tensor being simulated (only `values`
        travel); `sim_s` the simulated time this rank worked before it."""
        return self._collective(comm, "all_reduce", op, 0, values, tag, step, numel or len(values), sim_s)

    def broadcast(self, values: list[float], root: int = 0, *, tag: str = "", numel: int = 0,
                  comm: str = "world") -> list[float]:
        return self._collective(comm, "broadcast", "", root, values, tag, 0, numel or len(values), 0.0)

    def barrier(self, *, tag: str = "", sim_s: float = 0.0, comm: str = "world") -> None:
        self._collective(comm, "barrier", "", 0, [], tag, 0, 0, sim_s)

    def _collective(self, comm: str, op: str, reduce_op: str, root: int, values: list[float],
                    tag: str, step: int, numel: int, sim_s: float) -> list[float]:
        if self.pacer is not None:
            self.pacer.wait(self.now + sim_s, op, numel, step)
        seq = self._seqs[comm] = self._seqs.get(comm, 0) + 1
        raw_send(self.sock, encode_contribute(self.rank, comm, seq, op, reduce_op, root, "float32",
                                              values, tag, step, numel, sim_s))
        reply = self._wait(_RELEASE, None)
        self.stop_requested = self.stop_requested or reply.stop
        self.now = reply.now
        return reply.values

    def send(self, msg: Any) -> None:
        """A one-way report (e.g. telemetry); ordered with our collectives."""
        self._send(msg)

    # -- output and exit ------------------------------------------------
    def output(self, stream: str, lines: list[str]) -> None:
        self._send(Output(self.rank, stream, lines))

    def goodbye(self, exitcode: int, reason: str = "", timeout_s: float = 2.0) -> bool:
        """Announce our exit and wait for the ack: ipc:// may drop the last
        frames of a socket that closes straight away (libzmq #4660)."""
        try:
            self._send(Goodbye(self.rank, exitcode, reason))
            return self._wait((Ack,), timeout_s) is not None
        except CommError:
            return False

    def close(self) -> None:
        self.sock.close(linger=0)

    # -- plumbing -------------------------------------------------------
    def _send(self, msg: Any) -> None:
        self.sock.send(encode(msg))

    def _wait(self, kinds: tuple[type, ...], timeout_s: float | None) -> Any:
        """Block until a message of `kinds` arrives; Abort always wins. One
        blocking recv per message (RCVTIMEO wakes us to check the parent).
        Every collective waits here, just woken: the loop stays flat."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            try:
                msg = decode(self.sock.recv())
            except zmq.Again:
                if os.getppid() != self.parent_pid:
                    raise ParentGone("launcher exited") from None
                continue
            except ProtocolError as exc:
                raise CommError(f"bad message from coordinator: {exc}") from None
            if isinstance(msg, kinds):
                return msg
            if isinstance(msg, Abort):
                raise CollectiveAborted(msg)
        return None
