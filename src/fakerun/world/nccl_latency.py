"""NCCL's own latency model for an all_reduce: what its tuner charges each
algorithm before a byte moves, for this job's topology.

The figures and the formulas are ncclTopoTuneModel's, src/graph/tuning.cc at
NCCL v2.21.5-1 (the pinned NCCL): baseLat per algorithm and protocol, hwLat
per link kind (NVLink, PCI, network), a ring all_reduce taking 2 (n-1) steps of
which 2 x nNodes cross the network, a tree going up and down its intra-node
chain and its log2(nNodes) inter-node levels. The report gives each
algorithm's latency in LL, the protocol NCCL picks for the smallest messages
(the lowest of the three in every row of the table): the floor a collective
of no size pays on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fakerun.world.jobs import Identity

PROTOCOLS = ("LL", "LL128", "Simple")
# baseLat[algorithm][protocol], us.
BASE_LAT = {"tree": (6.8, 14.0, 0.0), "ring": (6.6, 14.0, 8.4)}
# hwLat[link][algorithm][protocol], us.
HW_LAT = {
    "nvlink": {"tree": (0.6, 1.25, 28.0), "ring": (0.6, 1.9, 3.4)},
    "pci": {"tree": (1.0, 1.9, 28.0), "ring": (1.0, 2.5, 5.7)},
    "net": {"tree": (5.0, 8.5, 28.0), "ring": (2.7, 4.0, 14.0)},
}
# getNetOverhead: 1 us per network post on an Intel (or any non-AMD) x86 host,
# 2 us on AMD; three times that in Simple. The hosts' CPUs are not modelled:
# the default. The net plugins (IB, socket) leave their latency at 0, so the
# graph's latencyInter adds nothing.
NET_OVERHEAD_US = 1.0


def allreduce_latency_us(ident: Identity, algorithm: str, protocol: str = "LL") -> float:
    """comm->latencies[AllReduce][algorithm][protocol] of a communicator over
    every rank of the job (a single GPU has none: NCCL tunes nothing)."""
    p = PROTOCOLS.index(protocol)
    ranks, nodes = ident.world, ident.nnodes
    intra = HW_LAT["nvlink" if ident.gpu.nvlink == "yes" else "pci"][algorithm][p]
    inter = HW_LAT["net"][algorithm][p]
    base = BASE_LAT[algorithm][p]
    if ranks <= 1:
        return 0.0
    if algorithm == "ring":
        steps, inter_steps = 2 * (ranks - 1), 2 * nodes if nodes > 1 else 0
        if nodes > 1:  # inter-node rings still launch every step's network post
            intra = max(intra, NET_OVERHEAD_US * (3 if protocol == "Simple" else 1))
        return base + (steps - inter_steps) * intra + inter_steps * inter
    return base + 2 * ((ranks // nodes - 1) * intra + _log2i(nodes) * inter)


def _log2i(n: int) -> int:
    """NCCL's log2i: the floor of log2."""
    return n.bit_length() - 1
