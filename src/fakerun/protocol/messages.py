"""Wire messages between ranks (DEALER) and the coordinator (ROUTER).

One msgpack map per message: {"v": 2, "kind": <kind>, <fields>...}. Each kind
is a frozen dataclass in REGISTRY. `decode` validates everything it accepts
(version, kind, exact field set, field types, size) and raises ProtocolError
otherwise, so the coordinator can count a bad frame and carry on.
No pickle, no msgpack extension types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fakerun.errors import FakerunError

VERSION = 2  # 2: the Welcome carries the run's clock (pacing's anchor)
# The largest message fakerun sends, measured over the scenario catalog and
# every style, one and two nodes, up to 2 x 32 ranks: 50 KB, an Events batch
# at --speed 0 (the hub splits batches at half this limit); then a rank's
# traceback, 1.6 KB. The limit leaves five times the largest.
MAX_MESSAGE_BYTES = 256 * 1024
# libzmq drops (and disconnects) anything above this before we see it, so a
# peer costs node 0 at most this much per frame; frames between the two
# limits reach `decode` and are counted as "oversize".
TRANSPORT_MAX_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
# unpackb's own limits (no bin, no ext types at all); the frame size is
# checked before unpacking.
MAX_STR_LEN = 64 * 1024
MAX_ARRAY_LEN = 64 * 1024
MAX_MAP_LEN = 256


class ProtocolError(FakerunError, ValueError):
    """A frame we refuse; `reason` is a short stable label used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Hello:
    """First message of every rank: who it is and the job it belongs to."""

    KIND: ClassVar[str] = "hello"
    rank: int
    local_rank: int
    node_rank: int
    pid: int
    run_id: str
    token: str
    env: dict[str, str]


@dataclass(frozen=True)
class Welcome:
    """Rendezvous complete: the world is assembled. `now`: the run's
    clock at this moment, from which a rank paces its work (and another
    node's agent its clock) against its own wall clock: no two machines'
    clocks need agree."""

    KIND: ClassVar[str] = "welcome"
    world_size: int
    now: float


@dataclass(frozen=True)
class Refused:
    KIND: ClassVar[str] = "refused"
    reason: str


@dataclass(frozen=True)
class Contribute:
    """A rank entering collective number `seq` of communicator `comm`."""

    KIND: ClassVar[str] = "contribute"
    rank: int
    comm: str
    seq: int
    op: str  # all_reduce | broadcast | barrier
    reduce_op: str  # sum | avg | max | min ("" when not a reduction)
    root: int
    dtype: str
    values: list[float]
    tag: str
    step: int
    numel: int  # elements of the simulated tensor (the payload is only `values`)
    sim_s: float  # simulated seconds this rank spent since its previous collective


@dataclass(frozen=True)
class Release:
    """The collective completed; `values` is its result. `stop` asks the
    ranks to end training (e.g. --exit-after-time), as a synced flag would."""

    KIND: ClassVar[str] = "release"
    comm: str
    seq: int
    values: list[float]
    stop: bool
    now: float  # the run's virtual clock when the collective completed


@dataclass(frozen=True)
class Telemetry:
    """What this rank's simulated GPU reports (nvidia-smi's figures)."""

    KIND: ClassVar[str] = "telemetry"
    rank: int
    step: int
    phase: str
    util: int
    temp_c: int
    power_w: int
    mem_used_mib: int


@dataclass(frozen=True)
class Abort:
    """The coordinator tells a waiting rank its collective failed."""

    KIND: ClassVar[str] = "abort"
    cause: str  # watchdog | desync | peer (another node failed or was lost) | shutdown
    comm: str
    seq: int
    op: str
    numel: int
    timeout_ms: int
    elapsed_ms: int
    detail: str


@dataclass(frozen=True)
class Output:
    """Lines a rank wrote itself (tracebacks, warnings), in program order."""

    KIND: ClassVar[str] = "output"
    rank: int
    stream: str  # stdout | stderr
    lines: list[str]


@dataclass(frozen=True)
class Goodbye:
    """A rank is about to exit with `exitcode`; it waits for Ack first."""

    KIND: ClassVar[str] = "goodbye"
    rank: int
    exitcode: int
    reason: str


@dataclass(frozen=True)
class Ack:
    KIND: ClassVar[str] = "ack"


@dataclass(frozen=True)
class AgentHello:
    """The agent of node `node_rank` (> 0) joins node 0's coordinator.
    `digest` summarises its run configuration: every node must run the same job."""

    KIND: ClassVar[str] = "agent_hello"
    node_rank: int
    nproc: int
    pid: int
    host: str
    run_id: str
    token: str
    digest: str


@dataclass(frozen=True)
class Events:
    """Coordinator to agent: domain events, each as its JSONL object's text
    (events.to_dict). An empty batch is a heartbeat."""

    KIND: ClassVar[str] = "events"
    items: list[str]


@dataclass(frozen=True)
class AgentReport:
    """Agent to coordinator: alive (a heartbeat), failed (one of its ranks
    failed: peers must not wait for it), stopping, or done."""

    KIND: ClassVar[str] = "agent_report"
    node_rank: int
    state: str
    detail: str


Message = (Hello | Welcome | Refused | Contribute | Release | Telemetry | Abort | Output | Goodbye
           | Ack | AgentHello | Events | AgentReport)
REGISTRY: dict[str, type] = {
    cls.KIND: cls for cls in (Hello, Welcome, Refused, Contribute, Release, Telemetry, Abort, Output,
                              Goodbye, Ack, AgentHello, Events, AgentReport)
}


# The routing id a peer's DEALER carries: who sent a frame, as the ROUTER sees it.
def rank_routing_id(rank: int) -> bytes:
    return f"rank-{rank}".encode()


def agent_routing_id(node_rank: int) -> bytes:
    return f"agent-{node_rank}".encode()
