"""What NCCL finds and chooses on the simulated nodes: channel counts,
NVLS, the transports between GPUs and the trees across nodes."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.world.identity import Identity

NVLINK_CHANNELS = {"volta": 12}  # within an NVLink node; NVSwitch nodes: 24


@dataclass(frozen=True)
class Fabric:
    """What NCCL finds and chooses on the simulated nodes.

    Channels are a choice (no run of src/graph/search.cc behind them): 24 on
    an NVSwitch node (H100/H200/A100 SXM, 18 or 12 NVLinks a GPU: the search's
    rings, doubled by ncclTopoPostset), 12 on a DGX-1's V100s (6 NVLinks a GPU,
    a ring each, doubled), 32 across Hopper nodes with a 400G NIC a GPU, 2 on
    a PCIe box without NVLink. p2p channels: nextPow2(coll channels);
    per peer nextPow2 of the fewest a peer allows: 2*NVLinks for an NVLink peer
    (more than the channels), 2 over PCIe or SHM, 2 per NIC over the network
    (src/graph/paths.cc ncclTopoComputeP2pChannels, ncclTopoGetNchannels).
    NVLS: Hopper's NVSwitch has NVLink SHARP multicast (Gpu.nvls: not the
    PCIe H100s, whose NVML reports no multicast support); src/transport/nvls.cc
    ncclNvlsInit says nothing on a node of 2 GPUs or fewer and gives 16
    channels (NCCL_NVLS_NCHANNELS) where supported.
    """

    nvlink: bool
    hopper: bool
    channels: int
    nvls_line: bool  # ncclNvlsInit gets as far as its INFO
    nvls_channels: int
    p2p: int
    per_peer: int

    @classmethod
    def of(cls, ident: Identity) -> Fabric:
        gpu = ident.gpu
        nvlink = gpu.nvlink == "yes"
        hopper = gpu.nvls  # an NVSwitch Hopper node, with a 400G NIC a GPU
        channels = (32 if hopper and ident.nnodes > 1 else NVLINK_CHANNELS.get(gpu.architecture, 24)) \
            if nvlink else 2
        nvls_line = ident.nproc > 2
        nvls = 16 if nvls_line and gpu.nvls else 0
        # A DGX-1's hybrid cube mesh leaves some pairs of V100s without an NVLink: PCIe's 2 is the fewest.
        switched = nvlink and gpu.architecture != "volta"
        per_peer = 2 if ident.nnodes > 1 or not switched else _pow2(channels)
        return cls(nvlink, hopper, channels, nvls_line, nvls, _pow2(channels), per_peer)

    def p2p_between(self, ident: Identity, local: int, peer: int) -> bool:
        """Whether two GPUs of a node reach each other by P2P: over NVLink
        always; over PCIe where they share a switch (consecutive bus ids: the
        boxes' pairs), as src/graph/paths.cc ncclTopoCheckP2p allows on an
        Intel host (PATH_PXB), if the board allows it at all (GeForce boards
        do not: NVML reports no P2P). Other pairs go through host memory (SHM)."""
        if self.nvlink:
            return True
        a, b = (int(ident.gpu.bus_id(x), 16) for x in sorted((local, peer)))
        return ident.gpu.kind == "real" and b - a == 1 and local // 2 == peer // 2

    @property
    def network(self) -> str:
        """DGX-style NVLink nodes have a ConnectX InfiniBand port per GPU; the PCIe boxes none."""
        return "IB" if self.nvlink else "Socket"


def _pow2(v: int) -> int:
    return 1 << (v - 1).bit_length()


def affinity(local: int) -> str:
    # Two NUMA domains of a dual-socket host: GPUs 0-3 on the first.
    return "ffff,ffffffff,00000000,0000ffff,ffffffff" if local < 4 else \
        "ffffffff,ffff0000,00000000,ffffffff,ffff0000"


def btree(nranks: int, rank: int) -> tuple[int, list[int]]:
    """src/graph/trees.cc ncclGetBtree: (up, children) of `rank`."""
    bit = 1
    while bit < nranks and not bit & rank:
        bit <<= 1
    if rank == 0:
        return -1, [bit >> 1] if nranks > 1 else []
    up = (rank ^ bit) | (bit << 1)
    if up >= nranks:
        up = rank ^ bit
    lowbit = bit >> 1
    down0 = -1 if lowbit == 0 else rank - lowbit
    down1 = -1 if lowbit == 0 else rank + lowbit
    while down1 >= nranks:
        down1 = -1 if lowbit == 0 else rank + lowbit
        lowbit >>= 1
    return up, [d for d in (down0, down1) if d >= 0]


def dtree(nranks: int, rank: int) -> tuple[tuple[int, list[int]], tuple[int, list[int]]]:
    """src/graph/trees.cc ncclGetDtree: the btree, and its mirror (even
    counts) or its shift by one (odd counts)."""
    if nranks % 2:
        up, down = btree(nranks, (rank - 1) % nranks)
        second = (-1 if up == -1 else (up + 1) % nranks, [(d + 1) % nranks for d in down])
    else:
        up, down = btree(nranks, nranks - 1 - rank)
        second = (-1 if up == -1 else nranks - 1 - up, [nranks - 1 - d for d in down])
    return btree(nranks, rank), second
