"""One in-flight collective of one communicator, and how it reduces.

Pure data and arithmetic: the coordinator owns the sockets and the clock.
Reductions run over contributions in rank order, so the same inputs give
bit-identical floats whatever order the ranks arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from fakerun.events import NCCL_OP_TYPE
from fakerun.protocol.messages import Contribute

_tuple_new = tuple.__new__

class Fingerprint(NamedTuple):
    """What a rank claims to be running; every rank's must match (a tuple:
    built and compared for every contribution)."""

    seq: int
    op: str
    reduce_op: str
    root: int
    dtype: str
    count: int
    numel: int
    tag: str
    step: int

    @classmethod
    def of(cls, msg: Contribute) -> Fingerprint:
        # tuple.__new__ directly: a NamedTuple's own __new__ is a Python
        # function, one call more per contribution.
        return _tuple_new(cls, (msg.seq, msg.op, msg.reduce_op, msg.root, msg.dtype, len(msg.values),
                                msg.numel, msg.tag, msg.step))

    def describe(self) -> str:
        return (
            f"CollectiveFingerPrint(SequenceNumber={self.seq}, "
            f"OpType={NCCL_OP_TYPE.get(self.op, self.op.upper())}, "
            f"TensorShape=[{self.numel or self.count}], TensorDtypes={self.dtype.capitalize()}, "
            "TensorDeviceTypes=cuda)"
        )


@dataclass
class PendingCollective:
    comm: str
    fingerprint: Fingerprint
    first_rank: int
    started: float
    tag: str
    step: int
    contributions: dict[int, list[float]] = field(default_factory=dict)
    sim_s: dict[int, float] = field(default_factory=dict)

    def waiting(self) -> list[int]:
        return sorted(self.contributions)

    def missing(self, world: range) -> list[int]:
        return [r for r in world if r not in self.contributions]

    def result(self) -> list[float]:
        fp = self.fingerprint
        if fp.op == "barrier":
            return []
        if fp.op == "broadcast":
            return list(self.contributions[fp.root])
        return reduce_values([self.contributions[r] for r in sorted(self.contributions)], fp.reduce_op)


def reduce_values(rows: list[list[float]], op: str) -> list[float]:
    columns = list(zip(*rows, strict=True))
    if op == "sum":
        return [_ordered_sum(c) for c in columns]
    if op == "avg":
        return [_ordered_sum(c) / len(c) for c in columns]
    if op == "max":
        return [max(c) for c in columns]
    if op == "min":
        return [min(c) for c in columns]
    raise ValueError(f"unknown reduce op {op!r}")


def _ordered_sum(column: tuple[float, ...]) -> float:
    total = 0.0
    for value in column:
        total += value
    return total


@dataclass(frozen=True)
class Watchdog:
    """ProcessGroupNCCL's collective timeout, kept on the run's clock.

    The timeout is simulated seconds: at --speed N the wall waits 1/N of it
    (at 1, NCCL's real wait). At --speed 0 simulated time only moves with the
    ranks' work, so a wall timer would stall the run for the whole timeout
    while the printed clock stands still; there, a collective that only the
    scenario's stalled rank is missing can never complete, and its timeout
    is reached at once in simulated time (the printed stamps still show it
    passing: Coordinator._timeout advances the clock by it).
    """

    timeout_s: float
    speed: float = 1.0  # simulated seconds per wall second; 0: unpaced
    # (rank, step): the scenario's rank that enters no collective from that step on
    stall: tuple[int, int] | None = None

    @property
    def wall_s(self) -> float:
        return self.timeout_s / self.speed if self.speed else self.timeout_s

    def expired(self, pending: PendingCollective, world: range, now: float) -> bool:
        return now - pending.started >= self.wall_s or self.hopeless(pending, world)

    def hopeless(self, pending: PendingCollective, world: range) -> bool:
        if self.speed or self.stall is None:
            return False
        rank, step = self.stall
        # counted, not listed: asked on every pass of the launcher's loop
        have = pending.contributions
        return pending.step >= step and rank not in have and len(have) == len(world) - 1

    def elapsed_ms(self, pending: PendingCollective, now: float, report_wall: bool) -> int:
        """What the watchdog says the collective ran for: the wall's wait on
        the run's clock, or (unpaced, or under --start-time, so the line repeats
        byte for byte) the timeout and a fixed overshoot, as the watchdog
        notices a little after the deadline."""
        if report_wall and self.speed:
            return round((now - pending.started) * self.speed * 1000)
        return round(self.timeout_s * 1000) + 61
