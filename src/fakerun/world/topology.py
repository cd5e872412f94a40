"""The shape of a job: nnodes x nproc_per_node ranks, and the arithmetic
between a global rank, its node and its local rank (torchrun's RANK,
GROUP_RANK and LOCAL_RANK). Everything that maps one to another asks here."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.errors import UsageError

# The sizes a job may have, whatever the machine (config/limits.py holds them
# against this machine's pids, memory and open files).
# The largest real training jobs run on ~100k GPUs (16k for Llama 3 405B):
# 2^17 ranks covers them, and refuses at once what no cluster has.
MAX_WORLD = 1 << 17
# Across nodes, node 0 forwards each step's per-GPU telemetry (gpu_status,
# ~113 bytes a GPU) to the other agents as one string, which the wire caps
# at 64 KiB (protocol.MAX_STR_LEN): 576 GPUs at worst; beyond that the other
# nodes would drop those frames. 512 keeps a margin and a power of two.
MAX_MULTINODE_WORLD = 512


def peer_port(rank: int) -> int:
    """The ephemeral port (Linux's 32768-60999) of the socket `rank`'s NCCL
    had to a lost peer: its DistBackendError and its WARN both name it."""
    return 32768 + rank % 28000


def node_of(rank: int, nproc_per_node: int) -> int:
    return rank // nproc_per_node


def local_rank_of(rank: int, nproc_per_node: int) -> int:
    return rank % nproc_per_node


@dataclass(frozen=True)
class Topology:
    """nnodes x nproc_per_node workers; this agent runs node `node_rank`."""

    nnodes: int
    nproc_per_node: int
    node_rank: int = 0

    def __post_init__(self) -> None:
        if self.nproc_per_node <= 0:
            raise UsageError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        if self.nnodes < 1:
            raise UsageError(f"--nnodes must be at least 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise UsageError(
                f"--node-rank must be in [0, {self.nnodes}) for --nnodes {self.nnodes}, "
                f"got {self.node_rank}"
            )
        self._check_world()

    def _check_world(self) -> None:
        """Before any per-rank or per-node work (hosts, log dirs): a size
        beyond these would take minutes to refuse later, or never end."""
        world = self.world_size
        if self.nnodes == 1 and world > MAX_WORLD:
            raise UsageError(f"--nproc-per-node {world}: more ranks than any real job has "
                              f"(at most {MAX_WORLD})")
        if self.nnodes > 1 and world > MAX_MULTINODE_WORLD:
            raise UsageError(f"{self.nnodes} nodes x {self.nproc_per_node} ranks = {world} ranks: a job "
                              f"over several nodes may have at most {MAX_MULTINODE_WORLD} (node 0 sends "
                              "every GPU's telemetry to the other nodes in one message)")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def global_rank(self, local_rank: int, node_rank: int | None = None) -> int:
        node = self.node_rank if node_rank is None else node_rank
        return node * self.nproc_per_node + local_rank

    def node_of(self, rank: int) -> int:
        return node_of(rank, self.nproc_per_node)

    def local_rank_of(self, rank: int) -> int:
        return local_rank_of(rank, self.nproc_per_node)

    def local_ranks(self) -> range:
        return range(self.nproc_per_node)

    def node_ranks(self, node_rank: int | None = None) -> range:
        node = self.node_rank if node_rank is None else node_rank
        start = node * self.nproc_per_node
        return range(start, start + self.nproc_per_node)
