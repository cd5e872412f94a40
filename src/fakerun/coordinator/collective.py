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
