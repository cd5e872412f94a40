"""NCCL's init lines as the pinned NCCL prints them, per version and
NCCL_DEBUG / NCCL_DEBUG_SUBSYS. Every expected text below is NVIDIA/nccl's at
the version's tag (file:line at that tag, as cited by each test)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from fakerun.render.torchrun.nccl import NcclInit
from fakerun.render.torchrun.nccl_fabric import dtree
from fakerun.world import catalog, identity
from fakerun.world.settings import Flags, resolve

H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"
H100_PCIE, V100 = "NVIDIA H100 PCIe", "Tesla V100-SXM2-32GB"
PREFIX = re.compile(r"^(?P<host>[\w-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL INFO (?P<text>.*)$")


def software(nccl: str) -> catalog.Versions:
    return next(v for v in catalog.versions() if v.nccl == nccl)


def ident(gpu: str = H100, nproc: int = 2, nnodes: int = 1, nccl: str = "2.21.5", seed: int = 3):
    return identity.build(seed, nnodes, nproc, gpu=gpu, versions=software(nccl))


def printed(run, env: dict[str, str]) -> list[tuple[int, str]]:
    """(rank, line) of what every rank of `run` prints under the environment `env`."""
    settings = resolve(Flags(), env, drop_in=True)
    pids = {rank: 4000 + 3 * rank for rank in range(run.world)}
    return [(line.rank, line.text) for line in NcclInit(run, pids, settings).lines(sorted(pids))]


def messages(lines: list[tuple[int, str]], rank: int) -> list[str]:
    """One rank's lines, each an INFO line's message or a bare line as it is."""
    return [(m.group("text") if (m := PREFIX.match(text)) else text) for r, text in lines if r == rank]


# -- NCCL_DEBUG -----------------------------------------------------------------
@pytest.mark.parametrize("nccl", ["2.20.5", "2.21.5"])
@pytest.mark.parametrize("env", [{}, {"NCCL_DEBUG": "LOUD"}])
def test_no_nccl_debug_or_one_nccl_does_not_know_prints_nothing(nccl: str, env: dict[str, str]):
    # src/debug.cc ncclDebugInit: NCCL_LOG_NONE without it; an unknown value
    # leaves the level at -1, below every level (and showVersion's >= VERSION).
    assert printed(ident(nccl=nccl), env) == []


@pytest.mark.parametrize("nccl,cuda", [("2.20.5", "12.1"), ("2.21.5", "12.4")])
@pytest.mark.parametrize("level", ["VERSION", "WARN", "warn", "Version"])
def test_version_and_warn_print_only_rank_0s_version_line(nccl: str, cuda: str, level: str):
    # src/init.cc showVersion (v2.20.5-1 :472, v2.21.5-1 :473): printf of
    # VERSION_STRING when ncclDebugLevel >= NCCL_LOG_VERSION, called for
    # myrank == 0 only; debug.cc compares with strcasecmp.
    assert printed(ident(nproc=4, nccl=nccl), {"NCCL_DEBUG": level}) == [(0, f"NCCL version {nccl}+cuda{cuda}")]


@pytest.mark.parametrize("level", ["ABORT", "TRACE"])
def test_levels_above_info_print_what_info_prints(level: str):
    # src/include/nccl_common.h: NCCL_LOG_ABORT=4, NCCL_LOG_TRACE=5 > INFO=3;
    # ncclDebugLog prints when level <= ncclDebugLevel (TRACE() itself is
    # compiled out of release builds).
    run = ident(nproc=4)
    assert printed(run, {"NCCL_DEBUG": level}) == printed(run, {"NCCL_DEBUG": "INFO"})


def test_info_prefix_is_host_pid_tid_and_cuda_device():
    # src/debug.cc ncclDebugLog: "%s:%d:%d [%d] NCCL INFO " (hostname, pid, tid, cudaDev).
    run = ident(nproc=4)
    lines = printed(run, {"NCCL_DEBUG": "INFO"})
    tids: dict[int, set[int]] = {}
    for rank, text in lines:
        if text.startswith("NCCL version"):
            continue
        m = PREFIX.match(text)
        assert m, text
        assert (m["host"], int(m["pid"]), int(m["dev"])) == (run.host(rank), 4000 + 3 * rank, rank)
        tids.setdefault(rank, set()).add(int(m["tid"]))
    # the process's main thread (tid = pid) and its own init thread, none shared
    threads = [tid for rank in tids for tid in tids[rank] if tid != 4000 + 3 * rank]
    assert all(len(t) == 2 for t in tids.values()) and len(set(threads)) == len(threads) == 4


# -- the lines, exactly, per version --------------------------------------------------
RANK1_221 = [
    # rank 1 starts with ncclCommInitRank: src/init.cc ncclCudaLibraryInit, then ncclInit
    "cudaDriverVersion 12040",  # src/misc/cudawrap.cc:185
    "Bootstrap : Using eth0:{ip}<0>",  # src/bootstrap.cc:56
    "NET/Plugin: No plugin found (libnccl-net.so)",  # src/net.cc:349
    "NET/Plugin: Plugin load returned 2 : libnccl-net.so: cannot open shared object file: "
    "No such file or directory : when loading libnccl-net.so",  # src/net.cc:373
    "NET/Plugin: Using internal network plugin.",  # src/net.cc:422
    "NET/IB : No device found.",  # src/transport/net_ib.cc:511
    "NET/Socket : Using [0]eth0:{ip}<0>",  # src/transport/net_socket.cc:62
    "Using non-device net plugin version 0",  # src/net.cc:518
    "Using network Socket",  # src/init.cc:322
    "ncclCommInitRank comm {comm} rank 1 nranks 2 cudaDev 1 nvmlDev 1 busId 25000 commId {id} - Init START",
    "Setting affinity for GPU 1 to ffff,ffffffff,00000000,0000ffff,ffffffff",  # src/graph/topo.cc:936
    # no NVLS line: src/transport/nvls.cc:241 returns first on 2 GPUs or fewer
    "comm {comm} rank 1 nRanks 2 nNodes 1 localRanks 2 localRank 1 MNNVL 0",  # src/init.cc:1160
    "Trees [0] -1/-1/-1->1->0 [1] -1/-1/-1->1->0",  # src/init.cc:1224
    "P2P Chunksize set to 131072",  # src/init.cc:566 (PCI)
    "Channel 00 : 1[1] -> 0[0] via SHM/direct/direct",  # src/transport/shm.cc:95
    "Channel 01 : 1[1] -> 0[0] via SHM/direct/direct",
    "Connected all rings",  # src/init.cc:1264
    "Connected all trees",  # src/init.cc:1274
    "threadThresholds 8/8/64 | 16/8/64 | 512 | 512",  # src/graph/tuning.cc:398
    "2 coll channels, 2 collnet channels, 0 nvls channels, 2 p2p channels, 2 p2p channels per peer",  # :1297
    "TUNER/Plugin: No plugin found (libnccl-tuner.so)",  # src/misc/tuner.cc:27
    "TUNER/Plugin: No plugin found (libnccl-net.so)",
    "TUNER/Plugin: Plugin load returned 2 : libnccl-net.so: cannot open shared object file: "
    "No such file or directory : when loading libnccl-tuner.so",  # src/misc/tuner.cc:49
    "TUNER/Plugin: Using internal tuner plugin.",  # src/misc/tuner.cc:154
    "ncclCommInitRank comm {comm} rank 1 nranks 2 cudaDev 1 nvmlDev 1 busId 25000 commId {id} - Init COMPLETE",
]


def fill(templates: list[str], lines: list[str], **more: str) -> list[str]:
    """The templates with the run's interface, comm pointer and commId (and `more`)."""
    ip = re.search(r"eth0:([\d.]+)<0>", "\n".join(lines))[1]
    comm = re.search(r"comm (0x[0-9a-f]+) rank", "\n".join(lines))[1]
    commid = re.search(r"commId (0x[0-9a-f]+)", "\n".join(lines))[1]
    return [t.format(ip=ip, comm=comm, id=commid, **more) for t in templates]


def test_221_info_on_a_pcie_pair_prints_exactly_its_lines():
    lines = messages(printed(ident(gpu=L40S), {"NCCL_DEBUG": "INFO"}), 1)
    assert lines == fill(RANK1_221, lines)


def test_220_differs_from_221_exactly_where_the_versions_do():
    """Same run, NCCL 2.20.5 (v2.20.5-1) against 2.21.5 (v2.21.5-1): the
    plugin search, the Init START/COMPLETE wording, the collnet count and the
    tuner; every other line the same."""
    lines = messages(printed(ident(gpu=L40S, nccl="2.20.5"), {"NCCL_DEBUG": "INFO"}), 1)
    expected = fill(RANK1_221, lines)
    expected = [x.replace("12040", "12020") for x in expected]
    expected[2:5] = ["NET/Plugin : dlerror=libnccl-net.so: cannot open shared object file: No such file or "
                     "directory No plugin found (libnccl-net.so), using internal implementation"]  # src/net.cc:357
    expected = [x.replace("ncclCommInitRank comm", "comm") for x in expected]  # src/init.cc:1499, :1523
    expected = [x.replace("2 collnet", "0 collnet") for x in expected]  # src/init.cc:1256 (collNetChannels)
    expected = [x for x in expected if not x.startswith("TUNER/")]  # src/misc/tuner.cc: silent by default
    assert lines == expected


def test_rank_0_initialises_nccl_before_its_driver_line_then_prints_the_version():
    # torch's rank 0 calls ncclGetUniqueId (ncclInit: bootstrap, net plugin)
    # before ncclCommInitRank (ncclCudaLibraryInit, then showVersion).
    lines = messages(printed(ident(gpu=L40S), {"NCCL_DEBUG": "INFO"}), 0)
    assert lines[:6] == fill(RANK1_221[1:5], lines) + ["cudaDriverVersion 12040", "NCCL version 2.21.5+cuda12.4"]


# -- NCCL_DEBUG_SUBSYS ---------------------------------------------------------------
def flags_of(run, subsys: str) -> list[str]:
    return messages(printed(run, {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": subsys}), 1)


def test_subsys_init_drops_the_env_and_tuning_lines():
    # The default mask is NCCL_INIT|NCCL_ENV (src/debug.cc); a given list
    # starts from none. The plugin summary lines are INFO(NCCL_ENV|NCCL_TUNING)
    # (src/net.cc:373, src/misc/tuner.cc), every other line has NCCL_INIT.
    run = ident(gpu=L40S)
    lines = flags_of(run, "INIT")
    full = fill(RANK1_221, lines)
    assert lines == [x for x in full if "Plugin load returned" not in x and not x.startswith("TUNER/")]
    assert flags_of(run, "init") == lines  # strcasecmp


def test_subsys_negation_keeps_only_lines_with_another_flag():
    # "^INIT": all but INIT (src/debug.cc: invert starts from ~0). Lines
    # flagged INIT|NET or INIT|SHM keep their other flag.
    run = ident(gpu=L40S)
    lines = flags_of(run, "^INIT")
    assert [x for x in lines if not x.startswith(("NET/", "TUNER/", "Channel", "Ring"))] == []
    assert sum(x.startswith("Ring ") for x in lines) == 2
    assert "Connected all rings" not in lines


def test_subsys_graph_shows_the_ring_lines_and_all_shows_everything():
    # src/init.cc:1221 INFO(NCCL_GRAPH, "Ring %02d : %d -> %d -> %d"), one per channel.
    run = ident(gpu=L40S)
    assert flags_of(run, "GRAPH") == ["Ring 00 : 0 -> 1 -> 0", "Ring 01 : 0 -> 1 -> 0"]
    every = flags_of(run, "ALL")
    assert len(every) == len(RANK1_221) + 2 and flags_of(run, "INIT,ENV,GRAPH") == every
    assert flags_of(run, "NOSUCH") == []  # an unknown name adds nothing to the empty mask


def test_subsys_names_are_the_versions():
    # BOOTSTRAP is a subsystem from v2.21.5-1's debug.cc on; v2.20.5-1 skips the name.
    assert flags_of(ident(gpu=L40S, nccl="2.20.5"), "BOOTSTRAP") == []


# -- hardware ----------------------------------------------------------------------------
def test_an_h100_node_of_eight_has_nvls_and_24_channels():
    lines = printed(ident(nproc=8), {"NCCL_DEBUG": "INFO"})
    rank0 = messages(lines, 0)
    # src/graph/rings.cc dumpLine: "Channel %02d/%02d : " then " %3d" per rank.
    assert "Channel 00/24 :    0   1   2   3   4   5   6   7" in rank0
    assert "Channel 23/24 :    0   1   2   3   4   5   6   7" in rank0
    assert "NVLS multicast support is available on dev 0" in rank0  # src/transport/nvls.cc:258
    # src/transport/nvls.cc:316, nvlsPerRankSize = nChannels*2*(buffSize+memSize)
    assert any(x.startswith("NVLS comm 0x") and x.endswith(
        "headRank 0 nHeads 8 buffSize 1048576 memSize 2097152 nvlsPerRankSize 150994944 "
        "nvlsTotalSize 1207959552") for x in rank0)
    assert "24 coll channels, 24 collnet channels, 16 nvls channels, 32 p2p channels, 32 p2p channels per peer" \
        in rank0
    assert "Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM" in rank0  # src/transport/p2p.cc:371
    # src/init.cc:322 then :345 (dmaBufSupported, :275): IB has regMrDmaBuf
    network = rank0.index("Using network IB")
    assert rank0[network + 1:network + 3] == ["DMA-BUF is available on GPU device 0",
                                             next(x for x in rank0 if x.endswith("Init START"))]
    # the trees' new connection after the rings: rank 1 to its parent 0
    rank1 = messages(lines, 1)
    assert rank1.index("Channel 00/0 : 1[1] -> 0[0] via P2P/CUMEM") > rank1.index("Connected all rings")


def test_nvls_needs_hopper_and_more_than_two_gpus():
    assert not any("NVLS" in x for x in messages(printed(ident(nproc=2), {"NCCL_DEBUG": "INFO"}), 0))
    a100 = messages(printed(ident(gpu=A100, nproc=4), {"NCCL_DEBUG": "INFO"}), 0)
    assert "NVLS multicast support is not available on dev 0" in a100
    assert "Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read" in a100  # Ampere NVLink reads


def test_a_pcie_hopper_has_no_nvls_and_p2p_only_under_a_switch():
    """NVLS is NVSwitch multicast: not on H100 PCIe boards. Their box pairs
    GPUs under a PCIe switch (bus ids 1b/1c, 3d/3e): P2P within a pair
    (ncclTopoCheckP2p at PATH_PXB), host memory between pairs."""
    lines = printed(ident(gpu=H100_PCIE, nproc=4), {"NCCL_DEBUG": "INFO"})
    rank0, rank1 = messages(lines, 0), messages(lines, 1)
    assert "NVLS multicast support is not available on dev 0" in rank0
    assert "2 coll channels, 2 collnet channels, 0 nvls channels, 2 p2p channels, 2 p2p channels per peer" in rank0
    assert "Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM" in rank0  # no /read: PCIe, not Ampere NVLink
    assert "Channel 00 : 1[1] -> 2[2] via SHM/direct/direct" in rank1
    assert not any(x.startswith(("MNNVL", "DMA-BUF")) for x in rank0)


def test_a_dgx1_rings_twelve_channels_and_shares_a_nic_between_two_v100s():
    lines = printed(ident(gpu=V100, nproc=8), {"NCCL_DEBUG": "INFO"})
    rank0 = messages(lines, 0)
    # per peer: the hybrid cube mesh leaves some pairs without NVLink, on PCIe's 2
    assert "12 coll channels, 12 collnet channels, 0 nvls channels, 16 p2p channels, 2 p2p channels per peer" \
        in rank0
    assert "Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM" in rank0  # Volta NVLink: no P2P read
    assert [x for x in rank0 if x.startswith("NET/IB")] == fill(
        ["NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB [2]mlx5_2:1/IB [3]mlx5_3:1/IB [RO]; OOB eth0:{ip}<0>"], rank0)
    across = printed(ident(gpu=V100, nproc=8, nnodes=2), {"NCCL_DEBUG": "INFO"})
    assert "Channel 00/0 : 15[7] -> 0[0] [send] via NET/IB/3/GDRDMA" in messages(across, 15)


def test_comm_pointers_are_16_byte_aligned_heap_addresses():
    lines = printed(ident(nproc=8), {"NCCL_DEBUG": "INFO"})
    pointers = {int(m[1], 16) for _, t in lines if (m := re.search(r"comm (0x[0-9a-f]+) rank", t))}
    assert len(pointers) == 8 and all(p % 16 == 0 and p >> 40 == 0x55 for p in pointers)


def test_nodes_connect_over_ib_both_ways_in_nccls_double_binary_tree():
    run = ident(nproc=4, nnodes=2)
    lines = messages(printed(run, {"NCCL_DEBUG": "INFO"}), 4)
    # src/transport/net.cc:195 and :235: both sides log, the receiver its peer first.
    assert "Channel 00/0 : 3[3] -> 4[0] [receive] via NET/IB/0/GDRDMA" in lines
    assert "Channel 00/0 : 4[0] -> 0[0] [send] via NET/IB/0/GDRDMA" in lines
    assert "Channel 00/0 : 7[3] -> 0[0] [send] via NET/IB/3/GDRDMA" in messages(
        printed(run, {"NCCL_DEBUG": "INFO"}), 7)
    trees = next(x for x in lines if x.startswith("Trees"))
    # tree 0: node 1's head under node 0's; tree 1 (the mirror): node 1's head is the root
    assert trees.startswith("Trees [0] 5/-1/-1->4->0 [1] 5/0/-1->4->-1")
    assert "32 coll channels, 32 collnet channels, 16 nvls channels, 32 p2p channels, 2 p2p channels per peer" \
        in lines
    assert "Connected NVLS tree" in lines  # src/init.cc:1286, nNodes > 1


@pytest.mark.parametrize("nranks,expected", [
    # src/graph/trees.cc ncclGetDtree, worked by hand from ncclGetBtree
    (2, [((-1, [1]), (1, [])), ((0, []), (-1, [0]))]),
    (3, [((-1, [2]), (1, [2])), ((2, []), (-1, [0])), ((0, [1]), (0, []))]),
])
def test_double_binary_tree_is_ncclgetdtrees(nranks: int, expected):
    assert [dtree(nranks, r) for r in range(nranks)] == [
        ((u0, d0), (u1, d1)) for (u0, d0), (u1, d1) in expected]


def test_hostnames_are_cut_at_the_first_dot():
    # src/debug.cc: getHostName(hostname, 1024, '.')
    run = dataclasses.replace(ident(), hosts=("gpu-7.cluster.example",))
    assert all(t.startswith("gpu-7:") for _, t in printed(run, {"NCCL_DEBUG": "INFO"})
               if not t.startswith("NCCL version"))


# -- 2.27.5's version line ----------------------------------------------------------------
def test_227_prints_the_version_bare_on_rank_0_at_warn_and_as_info_on_every_rank_at_info():
    # v2.27.5-1 src/init.cc:1781 calls showVersion when `ncclDebugLevel >
    # NCCL_LOG_WARN || (ncclDebugLevel != NCCL_LOG_NONE && myrank == 0)`;
    # showVersion (:539) VERSION()s at VERSION or WARN (no host prefix,
    # src/debug.cc:351) and INFO(NCCL_ALL)s otherwise.
    run = ident(nproc=2, nccl="2.27.5")
    assert printed(run, {"NCCL_DEBUG": "WARN"}) == [(0, "NCCL version 2.27.5+cuda12.8")]
    info = sorted((r, t) for r, t in printed(run, {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "GRAPH"})
                  if "NCCL version" in t)
    assert [(r, PREFIX.match(t)["text"]) for r, t in info] == [(0, "NCCL version 2.27.5+cuda12.8"),
                                                                  (1, "NCCL version 2.27.5+cuda12.8")]


RANK1_227 = [
    # v2.27.5-1: ncclCommInitRankConfig's ncclCudaLibraryInit, ncclInit (the bootstrap network only), showVersion
    "cudaDriverVersion 12080",  # src/misc/cudawrap.cc:260
    "Bootstrap: Using eth0:{ip}<0>",  # src/bootstrap.cc:123 (NCCL_BOOTSTRAP, in the default mask)
    "NCCL version 2.27.5+cuda12.8",  # src/init.cc:543, INFO(NCCL_ALL) above WARN
    # the init thread: commAlloc's ncclNetInit (src/plugin/net.cc)
    "NET/Plugin: Could not find: libnccl-net.so. ",  # src/plugin/plugin_open.cc:104, the net's fallback ""
    "NET/IB : No device found.",  # src/transport/net_ib.cc:742
    "NET/Socket : Using [0]eth0:{ip}<0>",  # src/transport/net_socket.cc:67
    "Initialized NET plugin Socket",  # src/plugin/net.cc:146
    "Assigned NET plugin Socket to comm",  # src/plugin/net.cc:174
    "Using network Socket",  # src/init.cc:346
    "ncclCommInitRankConfig comm {comm} rank 1 nranks 2 cudaDev 1 nvmlDev 1 busId 25000 commId {id} - Init START",
    "RAS client listening socket at ::1<28028>",  # src/ras/client_support.cc:162
    "Bootstrap timings total {t}",  # src/bootstrap.cc:767 (figures below)
    "Setting affinity for GPU 1 to ffff,ffffffff,00000000,0000ffff,ffffffff",  # src/graph/topo.cc:1602
    "comm {comm} rank 1 nRanks 2 nNodes 1 localRanks 2 localRank 1 MNNVL 0",  # src/init.cc:998
    "Trees [0] -1/-1/-1->1->0 [1] -1/-1/-1->1->0",  # src/init.cc:1054
    "P2P Chunksize set to 131072",  # src/init.cc:651
    "PROFILER/Plugin: Could not find: libnccl-profiler.so. ",  # src/plugin/plugin_open.cc:104
    "[Proxy Service] Device 1 CPU core {core}",  # src/proxy.cc:1578
    "[Proxy Service UDS] Device 1 CPU core {core}",  # src/proxy.cc:1769
    # no connections: NCCL_RUNTIME_CONNECT (src/init.cc:52, :1148) connects at the first collective
    "threadThresholds 8/8/64 | 16/8/64 | 512 | 512",  # src/graph/tuning.cc:541
    "2 coll channels, 2 collnet channels, 0 nvls channels, 2 p2p channels, 2 p2p channels per peer",  # :1232
    "TUNER/Plugin: Could not find: libnccl-tuner.so. Using internal tuner plugin.",  # plugin_open.cc:104
    "ncclCommInitRankConfig comm {comm} rank 1 nranks 2 cudaDev 1 nvmlDev 1 busId 25000 commId {id} - Init COMPLETE",
    "Init timings - ncclCommInitRankConfig: rank 1 nranks 2 total {t}",  # src/init.cc:1475
]
FIGURES = re.compile(r"(Bootstrap timings total |Init timings - ncclCommInitRankConfig: rank 1 nranks 2 total )"
                     r"\d+\.\d+ \(.*\)$|(CPU core )\d+$")


def test_227_info_on_a_pcie_pair_prints_exactly_its_lines():
    lines = messages(printed(ident(gpu=L40S, nccl="2.27.5"), {"NCCL_DEBUG": "INFO"}), 1)
    shape = [FIGURES.sub(lambda m: (m[1] + "{t}") if m[1] else m[2] + "{core}", x) for x in lines]
    assert shape == fill(RANK1_227, lines, t="{t}", core="{core}")
    timings = next(x for x in lines if x.startswith("Bootstrap timings"))
    assert re.fullmatch(r"Bootstrap timings total \d\.\d{6} \(create \d\.\d{6}, send \d\.\d{6}, "
                        r"recv \d\.\d{6}, ring \d\.\d{6}, delay 0\.000000\)", timings)
    assert re.fullmatch(r"Init timings - ncclCommInitRankConfig: rank 1 nranks 2 total \d\.\d\d \(kernels \d\.\d\d, "
                        r"alloc \d\.\d\d, bootstrap \d\.\d\d, allgathers \d\.\d\d, topo \d\.\d\d, graphs \d\.\d\d, "
                        r"connections \d\.\d\d, rest \d\.\d\d\)", lines[-1])


def test_227_on_hopper_adds_fabric_dma_buf_nvls_and_direct_p2p():
    rank0 = messages(printed(ident(nproc=8, nccl="2.27.5"), {"NCCL_DEBUG": "INFO"}), 0)
    assert "MNNVL busId 0x18000 fabric UUID 0.0 cliqueId 0x0 state 3 healthMask 0x0" in rank0  # src/init.cc:590
    assert "NVLS multicast support is available on dev 0 (NVLS_NCHANNELS 16)" in rank0  # src/transport/nvls.cc:200
    assert "Check P2P Type isAllDirectP2p 1 directMode 0" in rank0  # src/transport.cc:99, rank 0
    assert "CC Off, workFifoBytes 1048576" in rank0  # src/init.cc:481, rank 0
    assert "Channel 00/24 : 0 1 2 3 4 5 6 7" in rank0  # src/graph/rings.cc dumpLine: " %*d"
    assert not any(x.startswith(("Channel 00/0", "Connected all", "NVLS comm")) for x in rank0)  # runtime connect


@pytest.mark.parametrize("nccl,expected", [
    # v2.21.5-1 src/graph/rings.cc: MAXWIDTH 20 ranks of " %3d" after "Channel %02d/%02d : "
    ("2.21.5", "Channel 00/32 : " + "".join(f" {r:3d}" for r in range(20))),
    # v2.27.5-1: " %*d" two wide for rank 63, written into char line[128] while
    # fewer than 127 are used, the last three of the 127 then overwritten by "..."
    ("2.27.5", ("Channel 00/32 :" + "".join(f" {r:2d}" for r in range(38)))[:124] + "..."),
])
def test_long_rings_are_cut_as_each_dumpline_does(nccl: str, expected: str):
    run = ident(nproc=8, nnodes=8 if nccl == "2.27.5" else 4, nccl=nccl)
    assert messages(printed(run, {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT"}), 0).count(expected) == 1


@pytest.mark.parametrize("gpu,nics", [
    (H100, "[0]mlx5_0:1/IB [1]mlx5_3:1/IB [2]mlx5_4:1/IB [3]mlx5_5:1/IB [4]mlx5_6:1/IB [5]mlx5_9:1/IB "
           "[6]mlx5_10:1/IB [7]mlx5_11:1/IB"),
    (A100, "[0]mlx5_0:1/IB [1]mlx5_1:1/IB [2]mlx5_2:1/IB [3]mlx5_3:1/IB [4]mlx5_6:1/IB [5]mlx5_7:1/IB "
           "[6]mlx5_8:1/IB [7]mlx5_9:1/IB"),
])
def test_dgx_nodes_list_their_compute_nics(gpu: str, nics: str):
    # src/transport/net_ib.cc:538 "NET/IB : Using%s %s; OOB %s:%s", " [%d]%s:%d/%s" a device
    lines = messages(printed(ident(gpu=gpu, nproc=8), {"NCCL_DEBUG": "INFO"}), 3)
    assert [x for x in lines if x.startswith("NET/IB")] == fill([f"NET/IB : Using {nics} [RO]; OOB eth0:{{ip}}<0>"],
                                                                lines)


# -- WARN --------------------------------------------------------------------------
def socket_closed(nccl: str, env: dict[str, str]) -> list[str]:
    from datetime import UTC, datetime

    run = ident(nproc=2, nnodes=2, nccl=nccl)
    pids = {rank: 4000 + 3 * rank for rank in range(run.world)}
    when = datetime(2026, 4, 18, 12, 45, 41, tzinfo=UTC).timestamp()
    lines = NcclInit(run, pids, resolve(Flags(), env, drop_in=True)).socket_closed(1, "gpu002", when, UTC)
    assert all(line.rank == 1 and line.stream == "stdout" for line in lines)
    return [line.text for line in lines]


WARN_TEXT = "NCCL WARN socketProgress: Connection closed by remote peer gpu002<32769>"


@pytest.mark.parametrize("nccl", ["2.20.5", "2.21.5"])
@pytest.mark.parametrize("level", ["WARN", "INFO", "TRACE"])
def test_a_closed_peer_socket_is_a_warn_from_warn_up(nccl: str, level: str):
    # src/misc/socket.cc:50 (v2.20.5-1 and v2.21.5-1) WARN("socketProgress: Connection closed by remote
    # peer %s", ...); src/debug.cc ncclDebugLog: "\n%s:%d:%d [%d] %s:%d NCCL WARN " (__FILE__ as built: misc/).
    (blank, line) = socket_closed(nccl, {"NCCL_DEBUG": level})
    assert blank == ""
    assert re.fullmatch(rf"[\w-]+:4003:\d+ \[1\] misc/socket\.cc:50 {WARN_TEXT}", line), line


def test_2_27_stamps_its_warn_lines():
    # v2.27.5-1 src/debug.cc: NCCL_DEBUG_TIMESTAMP_LEVELS unset stamps WARN, "[%F %T] " unless
    # NCCL_DEBUG_TIMESTAMP_FORMAT says otherwise; socket.cc's WARN spans :71-72 and prints :72 (a public
    # 2.27 log: "[2026-04-18 12:45:41] gpu002:704800:704915 [1] misc/socket.cc:72 NCCL WARN socketProgress").
    (_, line) = socket_closed("2.27.5", {"NCCL_DEBUG": "WARN"})
    assert re.fullmatch(rf"\[2026-04-18 12:45:41\] [\w-]+:4003:\d+ \[1\] misc/socket\.cc:72 {WARN_TEXT}", line)


@pytest.mark.parametrize("env", [{}, {"NCCL_DEBUG": "VERSION"}, {"NCCL_DEBUG": "WARN", "NCCL_DEBUG_SUBSYS": "^ALL"}])
def test_no_warn_below_warn_or_with_an_empty_mask(env: dict[str, str]):
    assert socket_closed("2.21.5", env) == []


def test_the_warn_comes_from_a_thread_of_the_rank_not_its_main_one():
    (_, line) = socket_closed("2.21.5", {"NCCL_DEBUG": "WARN"})
    pid, tid = map(int, line.split(" ", 1)[0].split(":")[1:3])
    assert tid > pid
