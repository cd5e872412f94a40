"""What NCCL prints while torch's ProcessGroupNCCL creates its communicator,
as the run's pinned NCCL prints it under the ranks' NCCL_DEBUG and
NCCL_DEBUG_SUBSYS (nccl_text.py: the texts and src/debug.cc's filter;
nccl_fabric.py: what NCCL chooses on the simulated hardware).

The prefix is ncclDebugLog's `host:pid:tid [cudaDev] NCCL INFO `, the host
cut at its first dot (getHostName(hostname, 1024, '.')). Each thread says its
lines in the order data/nccl.toml gives per version: the main thread (tid =
pid) initialises NCCL, the communicator is built on a thread of its own, and
2.27's proxy service threads say where they run. Identifiers agree with the
rest of the run: pid is the rank's pid, cudaDev its local rank, busId the
GPU's bus id (as nvidia-smi shows it), commId one value for every rank of the
communicator. Lines of different ranks are interleaved by a seeded shuffle,
never by the scheduler.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from fakerun.render.lines import STDOUT, Line
from fakerun.render.torchrun.nccl_fabric import Fabric, affinity, dtree, rccl_affinity
from fakerun.render.torchrun.nccl_text import ALL, INFO, Debug, library
from fakerun.world.draws import rng
from fakerun.world.identity import Identity
from fakerun.world.kfd import kfd_gpus
from fakerun.world.settings import Settings
from fakerun.world.topology import peer_port

RING_LIMIT = 20  # src/graph/rings.cc MAXWIDTH: dumpLine shows the first 20 ranks
MAIN, INIT, PROXY, PROXY_UDS = range(4)  # the threads of a rank that speak
THREAD_OF = {"proxy_service": PROXY, "proxy_uds": PROXY_UDS}  # lines said off the list's thread
# The mlx5 devices on the compute fabric, one a GPU: DGX H100/H200 (mlx5_1, 2,
# 7, 8 are its storage and in-band ports) and DGX A100 (mlx5_4, 5 storage);
# a DGX-1 has four, one to each pair of V100s.
GPUS_PER_BOARD = 8
IB_PORTS = {"hopper": (0, 3, 4, 5, 6, 9, 10, 11), "ampere": (0, 1, 2, 3, 6, 7, 8, 9), "volta": (0, 1, 2, 3)}
# RCCL's device memory at init ("used N bytes"): every receiving connection
# holds the three protocols' buffers (P2P without read: src/transport/p2p.cc),
# LL 262144 + LL128 458752 + SIMPLE 4 MiB (src/init.cc:776-778 at rocm-6.2.0);
# the rest (device channels, work FIFO) is the remainder of a real RCCL run,
# 2 channels of 2 ranks: "used 20984624 bytes" = 2 x 4915200 + 11154224.
RCCL_CONN_BYTES, RCCL_BASE_BYTES = 262144 + 458752 + 4194304, 11154224
# maxLocalSizeBytes (src/enqueue.cc ncclInitKernelsForDevice: the kernels'
# scratch): 0 in ROCm 6 logs of RCCL ("localSize 0 used ... bytes").
RCCL_LOCAL_SIZE = 0

Said = tuple[str, dict[str, Any]]  # (message key in data/nccl.toml, its values)
Link = tuple[int, int, bool]  # one direction of a connection: (peer, channel, send)


class NcclInit:
    def __init__(self, ident: Identity, pids: dict[int, int], settings: Settings) -> None:
        self.ident = ident
        self.pids = pids
        self.nccl = library(ident.versions, ident.gpu.vendor)
        self.debug = Debug.of(settings, self.nccl)
        self.fabric = Fabric.of(ident)
        r = rng(ident.seed, "nccl")
        self.comm_id = f"0x{r.getrandbits(64):016x}"
        # ncclCalloc'd structs: glibc heap addresses of a PIE python, 16-byte aligned.
        self.comm_ptr = {rank: f"0x{(0x55 << 40 | r.getrandbits(40)) & ~0xF:x}" for rank in pids}
        self.subnet = f"10.{r.randrange(1, 250)}.{r.randrange(0, 250)}"
        self.host_base = r.randrange(10, 200)
        self.tids = _thread_ids(pids, r)
        self.groups: dict[str, Callable[[int], list[Said]]] = {
            "bootstrap": lambda rank: [("bootstrap", {"iface": self._iface(rank)})],
            "driver": lambda rank: [("driver", {"driver": ident.versions.cuda_driver})],
            "net_devices": self._net_devices, "net_initialized": self._keyed("net_initialized"),
            "network": self._keyed("network"), "dma_buf": self._dma_buf,
            "init_start": self._keyed("init_start"),
            "bootstrap_timings": self._bootstrap_timings,
            "init_timings": self._init_timings, "mnnvl": self._mnnvl, "affinity": self._affinity,
            "nvls_support": self._nvls_support, "comm": self._keyed("comm"), "nvls_head": self._nvls_head,
            "ring": self._rings, "ring_graph": self._ring_graph, "trees": self._trees,
            "p2p_chunk": self._p2p_chunk, "p2p_type": self._p2p_type, "proxy": self._proxy,
            "connections": self._connections, "nvls": self._nvls, "thresholds": self._thresholds,
            "summary": self._summary, "cc": lambda rank: [("cc", {})] if rank == 0 else [],
            "kernel_version": lambda rank: [("kernel_version", {"kernel": self.nccl.kernel})],
            "kfd_nodes": self._kfd_nodes, "init_complete": self._init_complete,
        }

    def lines(self, ranks: list[int]) -> list[Line]:
        if self.debug.level <= 0:
            return []
        streams = {rank: self._render(rank) for rank in ranks}
        return _interleave(streams, rng(self.ident.seed, "nccl-order"))

    def socket_closed(self, rank: int, peer: str, when: float, tz: tzinfo | None) -> list[Line]:
        """The WARN a rank's NCCL prints when its peer's socket closed (a lost
        node), from its proxy thread, before torch raises the DistBackendError."""
        site, text = self.nccl.socket_closed
        return self._warn(rank, self.tids[rank][PROXY - 1] if rank in self.pids else 0, when, tz,
                          site, text.format(peer=peer, port=peer_port(rank)))

    def port_event(self, rank: int, gpu: int, active: bool, when: float, tz: tzinfo | None) -> list[Line]:
        """The WARN a rank's NCCL prints when an HCA it opened (ncclIbInit
        opens every one, each with an "NCCL IbAsync" thread) reports its port
        down or active: the port beside local GPU `gpu`, mlx5_N port 1. That
        thread is started on the init thread, before the proxy's: its tid is
        the first after the init thread's."""
        if self.fabric.network != "IB":
            return []
        site, text = self.nccl.ib_async
        device = f"mlx5_{self._ib_ports[gpu * len(self._ib_ports) // GPUS_PER_BOARD]}"
        said = text.format(device=device, port=1, event="port active" if active else "port error")
        tid = self.tids[rank][INIT - 1] + 1 if rank in self.pids else 0
        return self._warn(rank, tid, when, tz, site, said)

    def _warn(self, rank: int, tid: int, when: float, tz: tzinfo | None, site: str, text: str) -> list[Line]:
        """A WARN line of `rank`'s thread `tid`: src/debug.cc ncclDebugLog's prefix, its
        timestamp where the version stamps WARNs, and the newline it begins with."""
        if not self.debug.warns() or rank not in self.pids:
            return []
        stamp = datetime.fromtimestamp(when, tz).strftime("[%F %T] ") if self.nccl.warn_timestamp else ""
        host = self.ident.host(rank).split(".")[0]
        line = f"{stamp}{host}:{self.pids[rank]}:{tid} [{self._local(rank)}] {site} NCCL WARN {text}"
        return [Line("", STDOUT, rank), Line(line, STDOUT, rank)]

    # -- filtering and prefixes ---------------------------------------------
    def _render(self, rank: int) -> list[str]:
        main = self.nccl.main_rank0 if rank == 0 else self.nccl.main_other
        out = []
        for thread, names in ((MAIN, main), (INIT, self.nccl.init)):
            for name in names:
                if name == "version":
                    out += self._version_line(rank, thread)
                    continue
                for key, values in self.groups.get(name, self._keyed(name))(rank):
                    prefix = self._prefix(rank, THREAD_OF.get(key, thread))
                    out += [prefix + text.format(**values)
                            for flags, text in self.nccl.text.get(key, []) if self.debug.info(flags)]
        return out

    def _version_line(self, rank: int, thread: int) -> list[str]:
        """src/init.cc showVersion: 2.20/2.21 printf() it on rank 0 from VERSION
        up; 2.27 VERSION()s it on rank 0 at VERSION and WARN, and INFOs it on
        every rank above. CUDA's (or HIP's) version: its major.minor."""
        v = self.ident.versions
        text = self.nccl.version_text.format(nccl=v.nccl, cuda=".".join(v.cuda.split(".")[:2]))
        if not self.nccl.version_as_info:
            return [text] if rank == 0 else []
        if self.debug.level >= INFO:
            return [self._prefix(rank, thread) + text] if self.debug.info(ALL) else []
        return [text] if rank == 0 and self.debug.level > 0 and self.debug.mask else []

    def _prefix(self, rank: int, thread: int) -> str:
        tid = self.pids[rank] if thread == MAIN else self.tids[rank][thread - 1]
        host = self.ident.host(rank).split(".")[0]
        return f"{host}:{self.pids[rank]}:{tid} [{self._local(rank)}] NCCL INFO "

    # -- the groups of lines ---------------------------------------------------
    def _local(self, rank: int) -> int:
        return self.ident.topology.local_rank_of(rank)

    def _ids(self, rank: int) -> dict[str, Any]:
        local = self._local(rank)
        return {"comm": self.comm_ptr[rank], "rank": rank, "nranks": self.ident.world, "dev": local,
                "busid": self._busid(rank), "commid": self.comm_id,
                "nnodes": self.ident.nnodes, "local_ranks": self.ident.nproc, "network": self.fabric.network}

    def _busid(self, rank: int) -> str:
        """comm->busId as "%lx" prints it: 0000:1d:00.0 is 1d000."""
        return self.ident.gpu.bus_id(self._local(rank)).lstrip("0") + "000"

    def _keyed(self, key: str) -> Callable[[int], list[Said]]:
        """A group of one message whose values are the rank's identifiers."""
        return lambda rank: [(key, self._ids(rank))]

    def _iface(self, rank: int, index: int = 0) -> str:
        """The host's `index`th interface and its address: one a node, the
        next interfaces on the next subnets."""
        ten, second, third = self.subnet.split(".")
        host = self.host_base + self.ident.topology.node_of(rank)
        return f"{self.fabric.ifaces[index]}:{ten}.{second}.{int(third) + index}.{host}<0>"

    def _net_devices(self, rank: int) -> list[Said]:
        iface = {"iface": self._iface(rank)}
        if self.fabric.network == "IB":
            ports = self.fabric.nics or self._ib_ports
            nics = " ".join(f"[{i}]mlx5_{n}:1/IB" for i, n in enumerate(ports))
            return [("ib_devices", {"nics": nics, **iface})]
        # net_socket.cc:58: every interface it finds, " [%d]%s:%s" each
        found = "".join(f" [{i}]{self._iface(rank, i)}" for i in range(1, len(self.fabric.ifaces)))
        return [("ib_none", {}), ("socket_devices", {"iface": self._iface(rank) + found})]

    @property
    def _ib_ports(self) -> tuple[int, ...]:
        """The board's ConnectX ports as NCCL lists them (mlx5_N)."""
        return IB_PORTS.get(self.ident.gpu.architecture, IB_PORTS["ampere"])

    def _dma_buf(self, rank: int) -> list[Said]:
        # The IB plugin has regMrDmaBuf; the driver's DMA-BUF attribute needs
        # the open GPU kernel module, which Hopper nodes run (NVIDIA's advice for them).
        return [("dma_buf", {"dev": self._local(rank)})] if self.fabric.nvlink and self.fabric.hopper else []

    def _mnnvl(self, rank: int) -> list[Said]:
        return [("mnnvl", self._ids(rank))] if self.fabric.hopper else []

    def _affinity(self, rank: int) -> list[Said]:
        local = self._local(rank)
        amd = self.ident.gpu.vendor == "amd" and rccl_affinity(self.ident, local)
        return [("affinity", {"dev": local, "mask": amd or affinity(local)})]

    def _nvls_support(self, rank: int) -> list[Said]:
        if not self.fabric.nvls_line:
            return []
        maybe_not = "" if self.fabric.nvls_channels else "not "
        return [("nvls_support", {"dev": self._local(rank), "maybe_not": maybe_not,
                                  "nvls": self.fabric.nvls_channels})]

    def _nvls_head(self, rank: int) -> list[Said]:
        ident = self.ident
        if not self.fabric.nvls_channels or ident.nnodes == 1 or ident.topology.node_of(rank) != 0:
            return []
        nodes = range(min(ident.nnodes, 20))
        return [("nvls_head", {"head": h, "line": "".join(f" {n * ident.nproc + h:2d}" for n in nodes)})
                for h in range(ident.nproc)]

    def _ring(self, channel: int) -> list[int]:
        """Channel `channel`'s ring: the ranks in order (0, 1, ... unless the
        fabric has rings of its own, on one node)."""
        if self.fabric.rings:
            return list(self.fabric.rings[channel])
        return list(range(self.ident.world))

    def _neighbours(self, rank: int, channel: int) -> tuple[int, int]:
        """(prev, next) of `rank` in the channel's ring."""
        ring = self._ring(channel)
        at = ring.index(rank)
        return ring[at - 1], ring[(at + 1) % len(ring)]

    def _rings(self, rank: int) -> list[Said]:
        """Rank 0's rings (src/graph/rings.cc ncclBuildRings: each from rank 0
        on, following next), laid out as the version's dumpLine does."""
        if rank != 0:
            return []
        n, layout, out = self.fabric.channels, self.nccl.ring_numbers, []
        for c in range(n):
            ring = self._ring(c)
            ring = ring[ring.index(0):] + ring[:ring.index(0)]
            out.append(("ring", {"line": _ring_line(f"Channel {c:02d}/{n:02d} :", ring, layout)}))
        return out

    def _ring_graph(self, rank: int) -> list[Said]:
        ids = self._ids(rank)
        return [("ring_graph", {**ids, "channel": c, "prev": prev, "next": nxt})
                for c in range(self.fabric.channels) for prev, nxt in [self._neighbours(rank, c)]]

    def _tree(self, rank: int, channel: int) -> tuple[list[int], int]:
        """(down, up) of `rank` in channel `channel`'s tree: a chain inside
        the node, along the channel's ring on one node; across nodes, the
        node's first rank joins NCCL's double binary tree of nodes
        (src/graph/trees.cc ncclGetDtree; even channels the first tree, odd
        ones the second)."""
        topo, nproc = self.ident.topology, self.ident.nproc
        local, node = topo.local_rank_of(rank), topo.node_of(rank)
        if self.ident.nnodes == 1:
            ring = self._ring(channel)
            at = ring.index(rank)
            return ring[at + 1:at + 2], ring[at - 1] if at > 0 else -1
        down = [rank + 1] if local + 1 < nproc else []
        up = rank - 1 if local > 0 else -1
        if local == 0:
            parent, children = dtree(self.ident.nnodes, node)[channel % 2]
            up = parent * nproc if parent >= 0 else -1
            down += [child * nproc for child in children]
        return down, up

    def _trees(self, rank: int) -> list[Said]:
        line = ""
        for c in range(self.fabric.channels):
            down, up = self._tree(rank, c)
            d = [*down, -1, -1, -1][:3]
            line += f" [{c}] {d[0]}/{d[1]}/{d[2]}->{rank}->{up}"
        return [("trees", {**self._ids(rank), "line": line})]

    def _p2p_chunk(self, rank: int) -> list[Said]:
        # src/init.cc computeBuffSizes: the net's chunk across nodes, NVLink's within one, else PCI's.
        nvlink_node = self.fabric.nvlink and self.ident.nnodes == 1
        return [("p2p_chunk", {"size": 524288 if nvlink_node else 131072})]

    def _p2p_type(self, rank: int) -> list[Said]:
        # src/transport.cc ncclTransportCheckP2pType: every local pair P2P-capable; one process per GPU.
        pairs = [(a, b) for a in range(self.ident.nproc) for b in range(a + 1, self.ident.nproc)]
        direct = int(bool(pairs) and all(self.fabric.p2p_between(self.ident, a, b) for a, b in pairs))
        return [("p2p_type", {"direct": direct})] if rank == 0 else []

    def _proxy(self, rank: int) -> list[Said]:
        """sched_getcpu() of the proxy threads: a core of the GPU's NUMA node."""
        r = rng(self.ident.seed, f"nccl-proxy-{rank}")
        base = 0 if self._local(rank) < 4 else 48
        cores = [base + r.randrange(48) + r.choice((0, 96)) for _ in range(2)]
        return [(key, {"dev": self._local(rank), "core": core})
                for key, core in zip(("proxy_service", "proxy_uds"), cores, strict=True)]

    def _connections(self, rank: int) -> list[Said]:
        """Each new connection's line, rings first (src/init.cc: setup of
        ring.prev/next, "Connected all rings"), then the trees' peers not
        yet connected ("Connected all trees")."""
        ids = self._ids(rank)
        rings, trees = self._ring_links(rank), self._tree_links(rank)
        return [*self._said(rank, rings), ("rings_connected", ids), *self._said(rank, trees),
                ("trees_connected", ids)]

    def _ring_links(self, rank: int) -> list[Link]:
        """(peer, channel, send): from each channel's prev, to its next."""
        neighbours = [self._neighbours(rank, c) for c in range(self.fabric.channels)]
        return [(prev, c, False) for c, (prev, _) in enumerate(neighbours)] + \
            [(nxt, c, True) for c, (_, nxt) in enumerate(neighbours)]

    def _tree_links(self, rank: int) -> list[Link]:
        """The trees' connections both ways, less those the rings made."""
        out: list[Link] = []
        for c in range(self.fabric.channels):
            prev, nxt = self._neighbours(rank, c)
            down, up = self._tree(rank, c)
            for peer in [p for p in (*down, up) if p >= 0]:
                out += [(peer, c, False)] if peer != prev else []
                out += [(peer, c, True)] if peer != nxt else []
        return out

    def _said(self, rank: int, links: list[Link]) -> list[Said]:
        """The lines of `links`, in the order the version sets them up:
        NCCL's, or RCCL's ncclTransportP2pSetup, peer by peer (receiving from
        rank - i, then sending to rank + i, for i = 1, 2, ...), each peer's
        channels in order."""
        if self.nccl.connect_order == "peer":
            world = self.ident.world
            links = sorted(links, key=lambda link: ((link[0] - rank if link[2] else rank - link[0]) % world,
                                                    link[2], link[1]))
        return [s for peer, channel, send in links for s in self._link(rank, peer, channel, send)]

    def _link(self, rank: int, peer: int, channel: int, send: bool) -> list[Said]:
        """One direction of one channel's connection, as the transport logs it:
        P2P and SHM on the sender only, the network on both sides."""
        topo = self.ident.topology
        if peer == rank:
            return []
        values = {**self._ids(rank), "channel": channel, "peer": peer, "peer_dev": self._local(peer),
                  "peer_busid": self._busid(peer)}
        if topo.node_of(peer) != topo.node_of(rank):
            # src/transport/net.cc: the GPU's own NIC, GPUDirect RDMA over IB
            ib = self.fabric.network == "IB"
            nic = self._local(rank) * len(self._ib_ports) // GPUS_PER_BOARD  # DGX-1: a port to two GPUs
            device = f"{nic}/GDRDMA" if ib else "0"
            via = f"{self.fabric.network}/{device}"
            return [("net_send" if send else "net_receive", {**values, "via": via})]
        if not send:
            return []
        if self.fabric.p2p_between(self.ident, self._local(rank), self._local(peer)):
            # P2P read on Ampere NVLink only (src/transport/p2p.cc p2pUseRead)
            read = self.fabric.nvlink and self.ident.gpu.architecture == "ampere"
            return [("p2p_send", {**values, "read": "/read" if read else ""})]
        return [("shm_send", values)]

    def _nvls(self, rank: int) -> list[Said]:
        fabric, ident = self.fabric, self.ident
        if not fabric.nvls_channels:
            return []
        heads, head = ident.nproc, self._local(rank)
        per_rank = fabric.channels * 2 * (self.nccl.nvls_buff + 2097152)
        out: list[Said] = [("nvls_comm", {"comm": self.comm_ptr[rank], "head": head, "heads": heads,
                                          "buff": self.nccl.nvls_buff, "per_rank": per_rank,
                                          "total": per_rank * heads})]
        return out + ([("nvls_tree", {})] if ident.nnodes > 1 else [])

    def _kfd_nodes(self, rank: int) -> list[Said]:
        """The host's GPUs as RCCL's topology reads them from KFD, in unique_id order."""
        gpu = self.ident.gpu
        found = kfd_gpus(self.ident.seed, self.ident.topology.node_of(rank), gpu)
        return [("kfd_nodes", {"node": g.node_id, "gpu_id": g.gpu_id, "unique_id": g.unique_id,
                               "location": g.location_id}) for g in sorted(found, key=lambda g: g.unique_id)]

    def _init_complete(self, rank: int) -> list[Said]:
        """RCCL adds the kernels' scratch and the device memory the
        communicator holds: its receiving connections' buffers and the rest."""
        receiving = sum(1 for peer, _, send in self._ring_links(rank) + self._tree_links(rank)
                        if not send and peer != rank)
        used = RCCL_BASE_BYTES + RCCL_CONN_BYTES * receiving
        return [("init_complete", {**self._ids(rank), "local_size": RCCL_LOCAL_SIZE, "used": used})]

    def _thresholds(self, rank: int) -> list[Said]:
        return [("thresholds", {"ring_ll": 8 * self.ident.world})]  # src/graph/tuning.cc: LL's 8 a rank

    def _summary(self, rank: int) -> list[Said]:
        fabric = self.fabric
        return [("summary", {"channels": fabric.channels, "nvls": fabric.nvls_channels,
                             "p2p": fabric.p2p, "per_peer": fabric.per_peer})]

    def _bootstrap_timings(self, rank: int) -> list[Said]:
        """Seconds of src/bootstrap.cc bootstrapInit: microseconds to set up and
        send, the wait for the slowest rank to reach the ring in recv."""
        r = rng(self.ident.seed, f"nccl-bootstrap-{rank}")
        create, send, ring = r.uniform(2e-5, 5e-5), r.uniform(8e-5, 1.6e-4), r.uniform(4e-5, 2e-4)
        recv = r.uniform(5e-5, 0.2)
        return [("bootstrap_timings", {"total": create + send + recv + ring + r.uniform(1e-5, 6e-5),
                                       "create": create, "send": send, "recv": recv, "ring": ring})]

    def _init_timings(self, rank: int) -> list[Said]:
        """Seconds of src/init.cc ncclCommInitRankFunc's stages; the bootstrap's as its timings said."""
        bootstrap = self._bootstrap_timings(rank)[0][1]["total"]
        r = rng(self.ident.seed, f"nccl-init-{rank}")
        stages = {"kernels": r.uniform(0.08, 0.35), "alloc": r.uniform(0.0, 0.02), "bootstrap": bootstrap,
                  "allgathers": r.uniform(0.0, 0.01), "topo": r.uniform(0.01, 0.05),
                  "graphs": r.uniform(0.0, 0.01), "connections": r.uniform(0.0, 0.03),
                  "rest": r.uniform(0.0, 0.01)}
        return [("init_timings", {**self._ids(rank), **stages, "total": sum(stages.values())})]


def _ring_line(prefix: str, ranks: range, layout: str) -> str:
    """dumpLine: "fixed" (to v2.21) puts " %3d" a rank after a space, the
    first RING_LIMIT; "fitted" (v2.27) " %*d" as wide as the last rank, in a
    128-byte buffer whose end becomes "..." when the ring does not fit."""
    if layout == "fixed":
        return prefix + " " + "".join(f" {r:3d}" for r in ranks[:RING_LIMIT])
    width, line = len(str(len(ranks) - 1)), prefix
    for r in ranks:
        if len(line) >= 127:
            break
        line += f" {r:>{width}}"
    return line[:124] + "..." if len(line) >= 128 else line


def _thread_ids(pids: dict[int, int], r: random.Random) -> dict[int, tuple[int, int, int]]:
    """The tids of each rank's init and proxy threads: Linux hands out thread
    ids from the pid counter, so threads made after every rank started come
    after the last pid, in the order their processes got there (CUDA's own
    threads between); each kind of thread once every rank has the one before."""
    tid = max(pids.values(), default=0) + r.randrange(40, 120)
    out: dict[int, list[int]] = {rank: [] for rank in pids}
    for _ in range(3):
        order = sorted(pids)
        r.shuffle(order)
        for rank in order:
            out[rank].append(tid)
            tid += r.randrange(2, 6)
    return {rank: (a, b, c) for rank, (a, b, c) in out.items()}


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
