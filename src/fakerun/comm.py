"""A rank's communicator: a DEALER to the coordinator with blocking collectives.

A collective really blocks until the coordinator releases it, so a dead or
slow peer makes this rank wait exactly as NCCL would. While waiting we wake
once a second to check that the launcher (our parent, which hosts the
coordinator) is still alive; PR_SET_PDEATHSIG covers the fast path on Linux.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import zmq

from .coordinator import rank_identity
from .protocol import (
    Abort,
    Ack,
    Contribute,
    Goodbye,
    Hello,
    Output,
    ProtocolError,
    Refused,
    Release,
    Welcome,
    decode,
    encode,
)

WAKE_MS = 1000


class CommError(RuntimeError):
    """The job cannot go on from this rank's point of view."""


class ParentGone(CommError):
    pass


class RendezvousRefused(CommError):
    pass


class CollectiveAborted(CommError):
    def __init__(self, abort: Abort) -> None:
        super().__init__(abort.detail or abort.cause)
        self.abort = abort


@dataclass
class _Seq:
    value: int = 0

    def next(self) -> int:
        self.value += 1
        return self.value


class Communicator:
    def __init__(self, ctx: zmq.Context, endpoint: str, rank: int, parent_pid: int) -> None:
        self.rank = rank
        self.parent_pid = parent_pid
        self.stop_requested = False
        self._seqs: dict[str, _Seq] = {}
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, rank_identity(rank))
        # The coordinator binds a few ms after we are forked: retry fast.
        self.sock.setsockopt(zmq.RECONNECT_IVL, 5)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.connect(endpoint)

    # -- rendezvous -----------------------------------------------------
    def hello(self, hello: Hello, timeout_s: float) -> Welcome:
        self._send(hello)
        reply = self._wait((Welcome, Refused), timeout_s)
        if isinstance(reply, Refused):
            raise RendezvousRefused(f"coordinator refused rank {self.rank}: {reply.reason}")
        if reply is None:
            raise CommError(f"rendezvous timed out after {timeout_s:.0f}s")
        return reply

    # -- collectives ----------------------------------------------------
    def all_reduce(self, values: list[float], op: str = "sum", *, tag: str = "", step: int = 0,
                   numel: int = 0, sim_s: float = 0.0, comm: str = "world") -> list[float]:
        """`numel` is the size of the tensor being simulated (only `values`
        travel); `sim_s` the simulated time this rank worked before it."""
        return self._collective(comm, Contribute(self.rank, comm, 0, "all_reduce", op, 0, "float32",
                                                 values, tag, step, numel or len(values), sim_s))

    def broadcast(self, values: list[float], root: int = 0, *, tag: str = "", numel: int = 0,
                  comm: str = "world") -> list[float]:
        return self._collective(comm, Contribute(self.rank, comm, 0, "broadcast", "", root, "float32",
                                                 values, tag, 0, numel or len(values), 0.0))

    def barrier(self, *, tag: str = "", sim_s: float = 0.0, comm: str = "world") -> None:
        self._collective(comm, Contribute(self.rank, comm, 0, "barrier", "", 0, "float32", [], tag, 0,
                                          0, sim_s))

    def _collective(self, comm: str, msg: Contribute) -> list[float]:
        seq = self._seqs.setdefault(comm, _Seq()).next()
        self._send(dataclasses.replace(msg, seq=seq))
        reply = self._wait((Release,), None)
        self.stop_requested = self.stop_requested or reply.stop
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
        """Block until a message of `kinds` arrives; Abort always wins."""
        waited_ms = 0
        limit_ms = None if timeout_s is None else int(timeout_s * 1000)
        while limit_ms is None or waited_ms < limit_ms:
            slice_ms = WAKE_MS if limit_ms is None else min(WAKE_MS, limit_ms - waited_ms)
            if self.sock.poll(slice_ms, zmq.POLLIN):
                msg = self._recv()
                if isinstance(msg, Abort):
                    raise CollectiveAborted(msg)
                if isinstance(msg, kinds):
                    return msg
            else:
                waited_ms += slice_ms
            if os.getppid() != self.parent_pid:
                raise ParentGone("launcher exited")
        return None

    def _recv(self) -> Any:
        try:
            return decode(self.sock.recv())
        except ProtocolError as exc:
            raise CommError(f"bad message from coordinator: {exc}") from None
