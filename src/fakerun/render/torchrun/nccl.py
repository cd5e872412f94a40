"""NCCL_DEBUG=INFO init lines: `host:pid:tid [cudaDev] NCCL INFO ...`, the
prefix of NVIDIA/nccl v2.21.5-1 src/debug.cc (ncclDebugLog: "%s:%d:%d [%d]
NCCL INFO "; v2.20.5-1's is the same). The messages are v2.21.5-1's: the
bootstrap interface (src/bootstrap.cc), the net and tuner plugin searches
(src/net.cc, src/misc/tuner.cc), NET/IB and NET/Socket (src/transport/
net_ib.cc, net_socket.cc), `ncclCommInitRank comm ... - Init START/COMPLETE`,
the comm, Trees and channel-count lines (src/init.cc), the rings
(src/graph/rings.cc), threadThresholds (src/graph/tuning.cc) and the
per-channel connections (src/transport/p2p.cc, shm.cc, net.cc). v2.20.5-1
words some of them otherwise (no `ncclCommInitRank ` before `comm`, its own
NET/Plugin lines, no TUNER/Plugin lines).

Identifiers agree with the rest of the run: pid is the rank's pid, cudaDev
its local rank, busId the GPU's bus id (as nvidia-smi shows it), commId one
value for every rank of the communicator. Lines of different ranks are
interleaved by a seeded shuffle, never by the scheduler.
"""

from __future__ import annotations

import random

from fakerun.render.lines import STDOUT, Line
from fakerun.world.draws import rng
from fakerun.world.identity import Identity
from fakerun.world.settings import Settings

RING_LIMIT = 20  # ncclTopoPrintRings shows at most 20 ranks


class NcclInit:
    def __init__(self, ident: Identity, pids: dict[int, int], settings: Settings) -> None:
        self.ident = ident
        self.pids = pids
        self.settings = settings
        r = rng(ident.seed, "nccl")
        self.comm_id = f"0x{r.getrandbits(64):016x}"
        self.comm_ptr = {rank: f"0x{0x55 << 40 | r.getrandbits(40):x}" for rank in pids}
        self.subnet = f"10.{r.randrange(1, 250)}.{r.randrange(0, 250)}"
        self.host_base = r.randrange(10, 200)
        self.nvlink = ident.gpu.nvlink == "yes"
        self.channels = 16 if self.nvlink else 4

    def lines(self, ranks: list[int]) -> list[Line]:
        if self.settings.env("NCCL_DEBUG") is None:  # NCCL prints nothing unless asked (src/debug.cc)
            return []
        streams = {rank: self._rank_lines(rank) for rank in ranks}
        return _interleave(streams, rng(self.ident.seed, "nccl-order"))

    # -- one rank ---------------------------------------------------------
    def _rank_lines(self, rank: int) -> list[str]:
        main, init = self._prefix(rank, 0), self._prefix(rank, 1)
        ident, v = self.ident, self.ident.versions
        process = [f"{main}Bootstrap : Using {self._iface(rank)}", *self._plugin(main)]
        driver = f"{main}cudaDriverVersion {v.cuda_driver}"
        if rank == 0:
            process = [*process, driver, f"NCCL version {v.nccl}+cuda{v.cuda}"]
        else:
            process = [driver, *process]
        local = ident.topology.local_rank_of(rank)
        start = (f"ncclCommInitRank comm {self.comm_ptr[rank]} rank {rank} nranks {ident.world} "
                 f"cudaDev {local} nvmlDev {local} busId {ident.gpu.bus_id(local).lstrip('0')}000 "
                 f"commId {self.comm_id}")
        body = [
            *self._network(rank), f"{start} - Init START",
            f"Setting affinity for GPU {local} to {self._affinity(local)}",
            f"NVLS multicast support is {'' if self._nvls() else 'not '}available on dev {local}",
            f"comm {self.comm_ptr[rank]} rank {rank} nRanks {ident.world} nNodes {ident.nnodes} "
            f"localRanks {ident.nproc} localRank {local} MNNVL 0",
            *(self._rings() if rank == 0 else []), self._trees(rank),
            f"P2P Chunksize set to {524288 if ident.nnodes == 1 else 131072}",
            *self._channels(rank), "Connected all rings", "Connected all trees",
            f"threadThresholds 8/8/64 | {8 * ident.world}/8/64 | 512 | 512",
            f"{self.channels} coll channels, 0 collnet channels, 0 nvls channels, "
            f"{2 * self.channels} p2p channels, {2 * self.channels} p2p channels per peer",
            "TUNER/Plugin: Plugin load returned 2 : libnccl-net.so: cannot open shared object file: "
            "No such file or directory : when loading libnccl-tuner.so",
            "TUNER/Plugin: Using internal tuner plugin.",
            f"{start} - Init COMPLETE",
        ]
        return process + [init + line for line in body]

    def _nvls(self) -> bool:
        return self.ident.gpu.name.startswith(("NVIDIA H1", "NVIDIA H2"))  # Hopper has NVLink SHARP

    def _prefix(self, rank: int, thread: int) -> str:
        pid = self.pids[rank]
        tid = pid if thread == 0 else pid + 170 + rank % 7
        return f"{self.ident.host(rank)}:{pid}:{tid} [{self.ident.topology.local_rank_of(rank)}] NCCL INFO "

    def _iface(self, rank: int) -> str:
        return f"eth0:{self.subnet}.{self.host_base + self.ident.topology.node_of(rank)}<0>"

    @staticmethod
    def _plugin(prefix: str) -> list[str]:
        return [f"{prefix}NET/Plugin: No plugin found (libnccl-net.so)",
                f"{prefix}NET/Plugin: Plugin load returned 2 : libnccl-net.so: cannot open shared object "
                "file: No such file or directory : when loading libnccl-net.so",
                f"{prefix}NET/Plugin: Using internal network plugin."]

    def _network(self, rank: int) -> list[str]:
        oob = self._iface(rank)
        if self.nvlink:
            nics = " ".join(f"[{i}]mlx5_{n}:1/IB" for i, n in enumerate((0, 3, 4, 5, 6, 9, 10, 11)))
            devices = [f"NET/IB : Using {nics} [RO]; OOB {oob}"]
            network = "IB"
        else:
            devices = ["NET/IB : No device found.", f"NET/Socket : Using [0]{oob}"]
            network = "Socket"
        return [*devices, "Using non-device net plugin version 0", f"Using network {network}"]

    @staticmethod
    def _affinity(local: int) -> str:
        # Two NUMA domains of a dual-socket host: GPUs 0-3 on the first.
        return "ffff,ffffffff,00000000,0000ffff,ffffffff" if local < 4 else \
            "ffffffff,ffff0000,00000000,ffffffff,ffff0000"

    def _rings(self) -> list[str]:
        shown = "".join(f" {r:3d}" for r in range(min(self.ident.world, RING_LIMIT)))
        return [f"Channel {c:02d}/{self.channels:02d} :{shown}" for c in range(self.channels)]

    def _trees(self, rank: int) -> str:
        world = self.ident.world
        down = rank + 1 if rank + 1 < world else -1
        up = rank - 1 if rank > 0 else -1
        return "Trees" + "".join(f" [{c}] {down}/-1/-1->{rank}->{up}" for c in range(self.channels))

    def _channels(self, rank: int) -> list[str]:
        ident = self.ident
        peer = (rank + 1) % ident.world
        local, peer_local = ident.topology.local_rank_of(rank), ident.topology.local_rank_of(peer)
        if ident.nnodes > 1 and ident.topology.node_of(peer) != ident.topology.node_of(rank):
            via = f"[send] via NET/IB/{local % 4}/GDRDMA"
        elif self.nvlink:
            via = "via P2P/CUMEM/read" if "A100" in ident.gpu.name else "via P2P/CUMEM"
        else:
            via = "via SHM/direct/direct"
        return [f"Channel {c:02d}/0 : {rank}[{local}] -> {peer}[{peer_local}] {via}"
                for c in range(self.channels)]


def _interleave(streams: dict[int, list[str]], r: random.Random) -> list[Line]:
    """Merge per-rank streams in a seeded order, keeping each rank's order,
    as concurrent processes writing to one log would."""
    cursors = {rank: 0 for rank in streams}
    out = []
    while cursors:
        rank = r.choice(sorted(cursors))
        chunk = streams[rank][cursors[rank]:cursors[rank] + r.randint(1, 4)]
        out.extend(Line(text, STDOUT, rank) for text in chunk)
        cursors[rank] += len(chunk)
        if cursors[rank] >= len(streams[rank]):
            del cursors[rank]
    return out
