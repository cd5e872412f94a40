"""What NCCL finds and chooses on the simulated nodes: channel counts,
NVLS, the transports between GPUs and the trees across nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from fakerun import texts
from fakerun.world.catalog import Gpu
from fakerun.world.identity import Identity

MAXCHANNELS = 128  # RCCL's (src/include/device.h), all of it usable on gfx94 (graph/connect.cc:624)
P2P_CHANNELS_MAX = 64  # 4 * CHANNEL_LIMIT: graph/paths.cc:911's cap on p2p channels
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
    # Each channel's ring over the node's GPUs (local ranks), where they are
    # not simply 0, 1, ... n-1 (RCCL's rings on an xGMI mesh).
    rings: tuple[tuple[int, ...], ...] = field(default=())
    nics: tuple[int, ...] = field(default=())  # the mlx5 ports, where not DGX's
    ifaces: tuple[str, ...] = field(default=("eth0",))  # the host's IP interfaces NCCL's sockets use

    @classmethod
    def of(cls, ident: Identity) -> Fabric:
        if ident.gpu.vendor == "amd":
            return _xgmi(ident)
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
        return self.nvlink or pcie_pair(ident.gpu, local, peer)

    @property
    def network(self) -> str:
        """DGX-style NVLink nodes have a ConnectX InfiniBand port per GPU; the
        PCIe boxes none, nor the Slingshot nodes of MI250X (no nics)."""
        return "IB" if self.nvlink and (self.nics or not self.rings) else "Socket"


def _xgmi(ident: Identity) -> Fabric:
    """What RCCL 2.20.5 chooses on a node of AMD GPUs (data/nccl.toml rccl_gpu).

    All the node's GPUs: RCCL's model of the node gives the rings. Fewer: its
    own search, whose rings we take as one each way per link of a GPU on the
    xGMI mesh, 2(k-1) for k GPUs (with the multipliers, the 32 and 24 channels
    init.cc's comments give for 2 and 4 MI300X), laid out 0..k-1 and back
    alternately (which orders its search picks is not modelled).
    ncclTopoPostset doubles the search's channels and takes the multiplier's
    count if more (graph/connect.cc:627-696). p2p channels: the coll channels'
    next power of two, at most 64 (graph/paths.cc:911).
    """
    n, gpu = ident.nproc, _rccl_gpu(ident)
    if gpu["gpus"] == n:
        base = tuple(tuple(int(r) for r in ring.split()) for ring in gpu["rings"])
    else:
        base = (tuple(range(n)), (0, *range(n - 1, 0, -1)))
    search = len(base) if gpu["gpus"] == n else 2 * max(1, n - 1)
    most = gpu["max_channels"]
    nc = gpu["multiplier"].get(str(n), gpu["multiplier_default"])
    doubled = 2 * search if search <= most // 2 else search
    channels = min(most, max(doubled, min(most // search, nc) * search))
    rings = tuple(base[c % len(base)] for c in range(channels))
    return Fabric(nvlink=True, hopper=False, channels=channels, nvls_line=False, nvls_channels=0,
                  p2p=min(_pow2(channels), P2P_CHANNELS_MAX), per_peer=gpu["per_peer"], rings=rings,
                  nics=tuple(range(gpu["mlx5"])), ifaces=tuple(gpu["ifaces"]))


def _rccl_gpu(ident: Identity) -> dict:
    return texts.load("nccl")["rccl_gpu"][ident.gpu.name]


def rccl_affinity(ident: Identity, local: int) -> str | None:
    """The CPUs of the GPU's NUMA domain and their SMT siblings, as
    ncclCpusetToStr prints a cpu_set_t (32-bit words, highest first, the
    first without its leading zeros); None where the table gives no host."""
    gpu = _rccl_gpu(ident)
    if "numa" not in gpu:
        return None
    numa = gpu["numa"][local % len(gpu["numa"])]  # more ranks than GPUs share them in turn (Gpu.bus_id)
    first, size, half = numa * gpu["cores"], gpu["cores"], gpu["threads"] // 2
    mask = sum(1 << c for base in (first, first + half) for c in range(base, base + size))
    words = [(mask >> (32 * i)) & 0xFFFFFFFF for i in range(gpu["threads"] // 32)][::-1]
    while words and words[0] == 0:
        words.pop(0)
    return ",".join([f"{words[0]:x}", *(f"{w:08x}" for w in words[1:])])


def pcie_pair(gpu: Gpu, local: int, peer: int) -> bool:
    """Two GPUs under one PCIe switch (consecutive bus ids, a box's pair) that allow P2P."""
    a, b = (int(gpu.bus_id(x), 16) for x in sorted((local, peer)))
    return gpu.kind == "real" and b - a == 1 and local // 2 == peer // 2


def _pow2(v: int) -> int:
    return 1 << (v - 1).bit_length()


def affinity(local: int) -> str:
    # Two NUMA domains of a dual-socket host of 96 cores and their SMT
    # siblings: GPUs 0-3 on the first (CPUs 0-47,96-143), 4-7 on the second
    # (48-95,144-191). ncclCpusetToStr prints 32-bit words, highest first,
    # from the highest non-zero byte: the second's lowest word (CPUs 0-31) is
    # "00000000", not left out.
    return "ffff,ffffffff,00000000,0000ffff,ffffffff" if local < 4 else \
        "ffffffff,ffff0000,00000000,ffffffff,ffff0000,00000000"


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
