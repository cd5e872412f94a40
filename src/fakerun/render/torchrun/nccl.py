"""What NCCL prints while torch's ProcessGroupNCCL creates its communicator,
as the run's pinned NCCL prints it under the ranks' NCCL_DEBUG and
NCCL_DEBUG_SUBSYS (data/nccl.toml holds the texts, per version, with their
source lines at NVIDIA/nccl's tags).

The filter is src/debug.cc's: no NCCL_DEBUG (or a value it does not know)
prints nothing; VERSION and WARN print only the version line; INFO, ABORT and
TRACE (levels above INFO) print every INFO line whose subsystem flags meet the
mask. The prefix is ncclDebugLog's `host:pid:tid [cudaDev] NCCL INFO `, the
host cut at its first dot (getHostName(hostname, 1024, '.')).

The order is the calls': rank 0's ncclGetUniqueId runs ncclInit (bootstrap
interface, net plugin) before ncclCommInitRank (cudaDriverVersion, the version
line); the other ranks start with ncclCommInitRank. The communicator is built
on another thread (its tid), in src/init.cc initTransportsRank's order.
Identifiers agree with the rest of the run: pid is the rank's pid, cudaDev
its local rank, busId the GPU's bus id (as nvidia-smi shows it), commId one
value for every rank of the communicator. Lines of different ranks are
interleaved by a seeded shuffle, never by the scheduler.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

from fakerun import texts
from fakerun.render.lines import STDOUT, Line
from fakerun.world.draws import rng
from fakerun.world.identity import Identity
from fakerun.world.settings import Settings

# src/include/nccl_common.h ncclDebugLogLevel
LEVELS = {"VERSION": 1, "WARN": 2, "INFO": 3, "ABORT": 4, "TRACE": 5}
INFO = LEVELS["INFO"]
UNKNOWN = -1  # a value debug.cc does not know leaves ncclDebugLevel at -1: nothing prints
ALL = (1 << 64) - 1  # NCCL_ALL (~0), as the uint64_t mask holds it
RING_LIMIT = 20  # src/graph/rings.cc MAXWIDTH: dumpLine shows the first 20 ranks


@dataclass(frozen=True)
class Version:
    """One pinned NCCL's texts and debug rules (data/nccl.toml)."""

    name: str
    tag: str
    subsystems: tuple[str, ...]
    default_mask: int
    version_as_info: bool
    nvls_buff: int
    text: dict[str, list[tuple[int, str]]]


@cache
def version(name: str) -> Version:
    """The table of NCCL `name` ("2.21.5"); a version with no table of its own prints 2.21.5's."""
    data = texts.load("nccl")
    tables = data["version"]
    own = tables.get(name, tables["2.21.5"])
    base = tables.get(own.get("base", ""), {})
    merged = {**base, **own}
    lines = {**base.get("text", {}), **own.get("text", {})}
    bits = data["bits"]
    text = {key: [(_flags(bits, flags), line) for flags, line in said] for key, said in lines.items()}
    return Version(name, merged["tag"], tuple(merged["subsystems"]),
                   _flags(bits, "|".join(merged["default_mask"])), merged["version_as_info"],
                   merged["nvls_buff"], text)


def _flags(bits: dict[str, int], names: str) -> int:
    return sum(bits[name] for name in names.split("|"))


@dataclass(frozen=True)
class Debug:
    """NCCL_DEBUG and NCCL_DEBUG_SUBSYS as src/debug.cc ncclDebugInit reads them."""

    level: int  # 0: NCCL_LOG_NONE
    mask: int

    @classmethod
    def of(cls, settings: Settings, nccl: Version) -> Debug:
        return cls(_level(settings.env("NCCL_DEBUG")), _mask(settings.env("NCCL_DEBUG_SUBSYS"), nccl))

    def info(self, flags: int) -> bool:
        """An INFO(flags, ...) call prints (ncclDebugLog: level and mask)."""
        return self.level >= INFO and bool(flags & self.mask)


def _level(value: str | None) -> int:
    if value is None:
        return 0
    return LEVELS.get(value.upper(), UNKNOWN)  # strcasecmp


def _mask(value: str | None, nccl: Version) -> int:
    """A comma-separated list of subsystems, `^` to remove them from all;
    names NCCL does not know are skipped (strtok skips empty ones)."""
    if value is None:
        return nccl.default_mask
    invert = value.startswith("^")
    mask = ALL if invert else 0
    bits = texts.load("nccl")["bits"]
    for name in filter(None, value.removeprefix("^").split(",")):
        name = name.upper()
        bit = ALL if name == "ALL" else bits[name] if name in nccl.subsystems else 0
        mask = mask & ~bit if invert else mask | bit
    return mask


@dataclass(frozen=True)
class Fabric:
    """What NCCL finds and chooses on the simulated nodes.

    Channels: on an NVSwitch node (H100/H200/A100 SXM, 18 or 12 NVLinks a GPU)
    NCCL's search (src/graph/search.cc) finds 12 rings that ncclTopoPostset
    doubles to 24; Hopper nodes with eight 400G NICs reach 32 across nodes. A
    PCIe box without NVLink gets 2. p2p channels: nextPow2(coll channels);
    per peer nextPow2 of the fewest a peer allows: 2*NVLinks for an NVLink peer
    (more than the channels), 2 over PCIe or SHM, 2 per NIC over the network
    (src/graph/paths.cc ncclTopoComputeP2pChannels, ncclTopoGetNchannels).
    NVLS: Hopper has NVLink SHARP multicast; src/transport/nvls.cc
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
        nvlink = ident.gpu.nvlink == "yes"
        hopper = ident.gpu.name.startswith(("NVIDIA H100", "NVIDIA H200"))
        channels = (32 if hopper and ident.nnodes > 1 else 24) if nvlink else 2
        nvls_line = ident.nproc > 2
        nvls = 16 if nvls_line and hopper else 0
        per_peer = 2 if ident.nnodes > 1 or not nvlink else _pow2(channels)
        return cls(nvlink, hopper, channels, nvls_line, nvls, _pow2(channels), per_peer)


def _pow2(v: int) -> int:
    return 1 << (v - 1).bit_length()


Said = tuple[int, str, dict[str, Any]]  # (thread, message key, values)


class NcclInit:
    def __init__(self, ident: Identity, pids: dict[int, int], settings: Settings) -> None:
        self.ident = ident
        self.pids = pids
        self.nccl = version(ident.versions.nccl)
        self.debug = Debug.of(settings, self.nccl)
        self.fabric = Fabric.of(ident)
        r = rng(ident.seed, "nccl")
        self.comm_id = f"0x{r.getrandbits(64):016x}"
        # ncclCalloc'd structs: glibc heap addresses of a PIE python, 16-byte aligned.
        self.comm_ptr = {rank: f"0x{(0x55 << 40 | r.getrandbits(40)) & ~0xF:x}" for rank in pids}
        self.subnet = f"10.{r.randrange(1, 250)}.{r.randrange(0, 250)}"
        self.host_base = r.randrange(10, 200)
        self.tids = _thread_ids(pids, r)

    def lines(self, ranks: list[int]) -> list[Line]:
        if self.debug.level <= 0:
            return []
        streams = {rank: self._render(rank, self._said(rank)) for rank in ranks}
        return _interleave(streams, rng(self.ident.seed, "nccl-order"))

    # -- filtering and prefixes ---------------------------------------------
    def _render(self, rank: int, said: list[Said]) -> list[str]:
        out = []
        for thread, key, values in said:
            if key == "version":
                out += self._version_line(rank, thread)
                continue
            out += [self._prefix(rank, thread) + text.format(**values)
                    for flags, text in self.nccl.text.get(key, []) if self.debug.info(flags)]
        return out

    def _version_line(self, rank: int, thread: int) -> list[str]:
        """src/init.cc showVersion: 2.20/2.21 printf() it on rank 0 from VERSION
        up; 2.27 VERSION()s it on rank 0 at VERSION and WARN, and INFOs it on
        every rank above."""
        v = self.ident.versions
        text = f"NCCL version {v.nccl}+cuda{v.cuda}"
        if not self.nccl.version_as_info:
            return [text] if rank == 0 else []
        if self.debug.level >= INFO:
            return [self._prefix(rank, thread) + text] if self.debug.info(ALL) else []
        return [text] if rank == 0 and self.debug.level > 0 and self.debug.mask else []

    def _prefix(self, rank: int, thread: int) -> str:
        tid = self.pids[rank] if thread == 0 else self.tids[rank]
        host = self.ident.host(rank).split(".")[0]
        return f"{host}:{self.pids[rank]}:{tid} [{self.ident.topology.local_rank_of(rank)}] NCCL INFO "

    # -- what one rank says, in order ------------------------------------------
    def _said(self, rank: int) -> list[Said]:
        iface = {"iface": self._iface(rank)}
        process: list[Said] = [(0, "bootstrap", iface), (0, "net_plugin", {})]
        driver: Said = (0, "driver", {"driver": self.ident.versions.cuda_driver})
        # rank 0's ncclGetUniqueId runs ncclInit before ncclCommInitRank's
        # ncclCudaLibraryInit; the version follows ncclInit (ncclCommInitRankDev).
        process = [*process, driver] if rank == 0 else [driver, *process]
        process.append((0, "version", {}))
        init = [*self._network(rank), (1, "init_start", self._ids(rank)), *self._topology(rank),
                *self._connections(rank), *self._tuning(rank), (1, "init_complete", self._ids(rank))]
        return process + init

    def _ids(self, rank: int) -> dict[str, Any]:
        local = self.ident.topology.local_rank_of(rank)
        return {"comm": self.comm_ptr[rank], "rank": rank, "nranks": self.ident.world, "dev": local,
                "busid": self.ident.gpu.bus_id(local).lstrip("0") + "000", "commid": self.comm_id}

    def _iface(self, rank: int) -> str:
        return f"eth0:{self.subnet}.{self.host_base + self.ident.topology.node_of(rank)}<0>"

    def _network(self, rank: int) -> list[Said]:
        iface = {"iface": self._iface(rank)}
        if self.fabric.nvlink:  # DGX-style: a ConnectX InfiniBand port per GPU
            nics = " ".join(f"[{i}]mlx5_{n}:1/IB" for i, n in enumerate((0, 3, 4, 5, 6, 9, 10, 11)))
            devices: list[Said] = [(1, "ib_devices", {"nics": nics, **iface})]
        else:
            devices = [(1, "ib_none", {}), (1, "socket_devices", iface)]
        out = [*devices, (1, "net_version", {}), (1, "network", {"network": self._net_name()})]
        # DMA-BUF needs the open GPU kernel module, which Hopper nodes run (NVIDIA's advice for them).
        dma_buf = self.fabric.nvlink and self.fabric.hopper
        return out + ([(1, "dma_buf", {"dev": self.ident.topology.local_rank_of(rank)})] if dma_buf else [])

    def _net_name(self) -> str:
        return "IB" if self.fabric.nvlink else "Socket"

    def _topology(self, rank: int) -> list[Said]:
        ident, fabric = self.ident, self.fabric
        local = ident.topology.local_rank_of(rank)
        out: list[Said] = [(1, "affinity", {"dev": local, "mask": _affinity(local)})]
        if fabric.nvls_line:
            maybe_not = "" if fabric.nvls_channels else "not "
            out.append((1, "nvls_support", {"dev": local, "maybe_not": maybe_not}))
        out.append((1, "comm", {**self._ids(rank), "nnodes": ident.nnodes, "local_ranks": ident.nproc}))
        if fabric.nvls_channels and ident.nnodes > 1 and ident.topology.node_of(rank) == 0:
            out += [(1, "nvls_head", {"head": h, "line": "".join(f" {n * ident.nproc + h:2d}"
                                                                  for n in range(min(ident.nnodes, 20)))})
                    for h in range(ident.nproc)]
        if rank == 0:
            out += [(1, "ring", {"line": line}) for line in self._ring_lines()]
        ring = {"prev": (rank - 1) % ident.world, "next": (rank + 1) % ident.world, "rank": rank}
        out += [(1, "ring_graph", {"channel": c, **ring}) for c in range(fabric.channels)]
        out.append((1, "trees", {"line": self._trees(rank)}))
        chunk = 524288 if fabric.nvlink and ident.nnodes == 1 else 131072  # src/init.cc:564-566
        return [*out, (1, "p2p_chunk", {"size": chunk})]

    def _ring_lines(self) -> list[str]:
        """src/graph/rings.cc: "Channel %02d/%02d : " then " %3d" a rank."""
        shown = "".join(f" {r:3d}" for r in range(min(self.ident.world, RING_LIMIT)))
        n = self.fabric.channels
        return [f"Channel {c:02d}/{n:02d} : {shown}" for c in range(n)]

    def _tree(self, rank: int, channel: int) -> tuple[list[int], int]:
        """(down, up) of `rank` in channel `channel`'s tree: a chain inside
        the node; across nodes, the node's first rank joins NCCL's double
        binary tree of nodes (src/graph/trees.cc ncclGetDtree; even channels
        the first tree, odd ones the second)."""
        topo, nproc = self.ident.topology, self.ident.nproc
        local, node = topo.local_rank_of(rank), topo.node_of(rank)
        down = [rank + 1] if local + 1 < nproc else []
        up = rank - 1 if local > 0 else -1
        if local == 0 and self.ident.nnodes > 1:
            parent, children = _dtree(self.ident.nnodes, node)[channel % 2]
            up = parent * nproc if parent >= 0 else -1
            down += [child * nproc for child in children]
        return down, up

    def _trees(self, rank: int) -> str:
        out = ""
        for c in range(self.fabric.channels):
            down, up = self._tree(rank, c)
            d = [*down, -1, -1, -1][:3]
            out += f" [{c}] {d[0]}/{d[1]}/{d[2]}->{rank}->{up}"
        return out

    def _connections(self, rank: int) -> list[Said]:
        """Each new connection's line, rings first (src/init.cc: setup of
        ring.prev/next, "Connected all rings"), then the trees' peers not
        yet connected, then NVLS (src/transport/nvls.cc ncclNvlsSetup)."""
        world, channels = self.ident.world, range(self.fabric.channels)
        prev, nxt = (rank - 1) % world, (rank + 1) % world
        out = [s for c in channels for s in self._link(rank, prev, c, send=False)]
        out += [s for c in channels for s in self._link(rank, nxt, c, send=True)]
        out.append((1, "rings_connected", {}))
        for c in channels:
            down, up = self._tree(rank, c)
            for peer in [p for p in (*down, up) if p >= 0]:
                out += (self._link(rank, peer, c, send=False) if peer != prev else []) + \
                    (self._link(rank, peer, c, send=True) if peer != nxt else [])
        out.append((1, "trees_connected", {}))
        return out + self._nvls(rank)

    def _link(self, rank: int, peer: int, channel: int, send: bool) -> list[Said]:
        """One direction of one channel's connection, as the transport logs it:
        P2P and SHM on the sender only, the network on both sides."""
        topo = self.ident.topology
        if peer == rank:
            return []
        local, peer_local = topo.local_rank_of(rank), topo.local_rank_of(peer)
        values = {"channel": channel, "rank": rank, "dev": local, "peer": peer, "peer_dev": peer_local}
        if topo.node_of(peer) != topo.node_of(rank):
            netdev = local % 8 if self.fabric.nvlink else 0
            gdr = "/GDRDMA" if self.fabric.nvlink else ""
            via = f"{self._net_name()}/{netdev}{gdr}"
            return [(1, "net_send" if send else "net_receive", {**values, "via": via})]
        if not send:
            return []
        if self.fabric.nvlink:  # P2P read on Ampere NVLink (src/transport/p2p.cc p2pUseRead)
            return [(1, "p2p_send", {**values, "read": "/read" if "A100" in self.ident.gpu.name else ""})]
        return [(1, "shm_send", values)]

    def _nvls(self, rank: int) -> list[Said]:
        fabric, ident = self.fabric, self.ident
        if not fabric.nvls_channels:
            return []
        heads, head = ident.nproc, ident.topology.local_rank_of(rank)
        per_rank = fabric.channels * 2 * (self.nccl.nvls_buff + 2097152)
        out: list[Said] = [(1, "nvls_comm", {"comm": self.comm_ptr[rank], "head": head, "heads": heads,
                                             "buff": self.nccl.nvls_buff, "per_rank": per_rank,
                                             "total": per_rank * heads})]
        return out + ([(1, "nvls_tree", {})] if ident.nnodes > 1 else [])

    def _tuning(self, rank: int) -> list[Said]:
        fabric = self.fabric
        return [(1, "thresholds", {"ring_ll": 8 * self.ident.world}),
                (1, "summary", {"channels": fabric.channels, "nvls": fabric.nvls_channels,
                                "p2p": fabric.p2p, "per_peer": fabric.per_peer}),
                (1, "tuner", {})]


def _affinity(local: int) -> str:
    # Two NUMA domains of a dual-socket host: GPUs 0-3 on the first.
    return "ffff,ffffffff,00000000,0000ffff,ffffffff" if local < 4 else \
        "ffffffff,ffff0000,00000000,ffffffff,ffff0000"


def _btree(nranks: int, rank: int) -> tuple[int, list[int]]:
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


def _dtree(nranks: int, rank: int) -> tuple[tuple[int, list[int]], tuple[int, list[int]]]:
    """src/graph/trees.cc ncclGetDtree: the btree, and its mirror (even
    counts) or its shift by one (odd counts)."""
    if nranks % 2:
        up, down = _btree(nranks, (rank - 1) % nranks)
        second = (-1 if up == -1 else (up + 1) % nranks, [(d + 1) % nranks for d in down])
    else:
        up, down = _btree(nranks, nranks - 1 - rank)
        second = (-1 if up == -1 else nranks - 1 - up, [nranks - 1 - d for d in down])
    return _btree(nranks, rank), second


def _thread_ids(pids: dict[int, int], r: random.Random) -> dict[int, int]:
    """The tid of each rank's init thread: Linux hands out thread ids from the
    pid counter, so threads made after every rank started come after the last
    pid, in the order their processes got there (CUDA's own threads between)."""
    tid = max(pids.values(), default=0) + r.randrange(40, 120)
    order = sorted(pids)
    r.shuffle(order)
    out = {}
    for rank in order:
        out[rank] = tid
        tid += r.randrange(2, 6)
    return out


def _interleave(streams: dict[int, list[str]], r: random.Random) -> list[Line]:
    """Merge per-rank streams in a seeded order, keeping each rank's order,
    as concurrent processes writing to one log would."""
    cursors = {rank: 0 for rank in streams if streams[rank]}
    out = []
    while cursors:
        rank = r.choice(sorted(cursors))
        chunk = streams[rank][cursors[rank]:cursors[rank] + r.randint(1, 4)]
        out.extend(Line(text, STDOUT, rank) for text in chunk)
        cursors[rank] += len(chunk)
        if cursors[rank] >= len(streams[rank]):
            del cursors[rank]
    return out
