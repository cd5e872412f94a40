"""AMD Instinct GPUs run ROCm's stack and print ROCm's own texts: RCCL's
init lines (ROCm/rccl at rocm-6.2.0, file:line cited per test), the ROCm
software line, xGMI in the cluster box. Expected texts are RCCL's, or lines of
real RCCL runs where a test says so."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from fakerun import events as ev
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.render.torchrun.nccl import NcclInit
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.catalog import CatalogError
from fakerun.world.settings import Flags, resolve

MI300X = "AMD Instinct MI300X"
PREFIX = re.compile(r"^(?P<host>[\w-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL INFO (?P<text>.*)$")


def amd(nproc: int = 2, seed: int = 3) -> identity.Identity:
    return identity.build(seed, 1, nproc, 20, gpu=MI300X)


def printed(run: identity.Identity, env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    settings = resolve(Flags(), {"NCCL_DEBUG": "INFO"} if env is None else env, drop_in=True)
    pids = {rank: 4000 + 3 * rank for rank in range(run.world)}
    return [(line.rank, line.text) for line in NcclInit(run, pids, settings).lines(sorted(pids))]


def messages(lines: list[tuple[int, str]], rank: int) -> list[str]:
    return [(m.group("text") if (m := PREFIX.match(text)) else text) for r, text in lines if r == rank]


# -- the catalog and the draws ---------------------------------------------------
def test_an_amd_job_runs_torchs_rocm_wheel_and_what_ships_with_it():
    # torch 2.5.1+rocm6.2: torch.version.hip 6.2.41133 (ROCm 6.2.0); ROCm/rccl
    # rocm-6.2.0 makefiles/version.mk: NCCL 2.20.5; MIOpen 3.2.0; amdgpu 6.8.5.
    v = amd().versions
    assert (v.torch, v.nccl, v.cuda, v.cudnn, v.driver) == ("2.5.1+rocm6.2", "2.20.5", "6.2.0", "3.2.0", "6.8.5")
    assert v.cuda_driver == 60241133  # HIP_VERSION: 6 * 10^7 + 2 * 10^5 + 41133
    assert (v.transformers, v.deepspeed, v.lightning) == ("4.46.3", "0.16.4", "2.5.0")  # the same Python stack


def test_the_mi300x_row_is_what_rocm_smi_and_torch_see():
    gpu = catalog.find(catalog.gpus(), MI300X, "GPU")
    assert gpu.vendor == "amd" and gpu.kind == "real"
    assert gpu.memory_mib * 2**20 == 205822885888  # rocm-smi --showmeminfo vram: VRAM Total Memory (B)
    assert (gpu.power_cap_w, gpu.bf16_tflops) == (750, 1307)


def test_amd_clusters_are_drawn_rarely_and_only_with_the_rocm_stack():
    seen = Counter()
    for seed in range(1000):
        run = identity.build(seed, 1, 8, 20)
        seen[run.gpu.vendor] += 1
        assert run.versions.torch.endswith("+rocm6.2") == (run.gpu.vendor == "amd"), seed
    assert 50 <= seen["amd"] <= 120  # identity.AMD_SHARE: one in twelve


def test_the_vendor_coin_changes_no_nvidia_draw(monkeypatch: pytest.MonkeyPatch):
    # The coin is tossed on a stream of its own: an NVIDIA draw is the one a
    # catalog without AMD rows gives.
    seeds = range(120)
    drawn = {s: identity.build(s, 1, 8, 20) for s in seeds}
    nvidia_only = tuple(g for g in catalog.gpus() if g.vendor == "nvidia")
    monkeypatch.setattr(catalog, "gpus", lambda: nvidia_only)
    for seed in seeds:
        if drawn[seed].gpu.vendor == "nvidia":
            assert drawn[seed] == identity.build(seed, 1, 8, 20), seed
    assert any(run.gpu.vendor == "amd" for run in drawn.values())


def test_no_amd_draw_across_nodes_and_none_under_a_pin_without_a_rocm_build():
    assert all(identity.build(s, 2, 8, 20).gpu.vendor == "nvidia" for s in range(300))
    pinned = next(v for v in catalog.versions() if v.torch == "2.3.1")  # --style deepspeed's 0.14
    assert all(identity.build(s, 1, 8, 20, versions=pinned).gpu.vendor == "nvidia" for s in range(300))


def test_asking_for_amd_where_it_cannot_run_says_why():
    pinned = next(v for v in catalog.versions() if v.torch == "2.3.1")
    with pytest.raises(CatalogError, match="no ROCm build of torch 2.3.1"):
        identity.build(1, 1, 8, 20, gpu=MI300X, versions=pinned)
    with pytest.raises(CatalogError, match="across nodes"):
        identity.build(1, 2, 8, 20, gpu=MI300X)


# -- what the training script prints ---------------------------------------------
def layout(run: identity.Identity) -> PytorchLines:
    out = PytorchLines(100, None)
    out.routed(ev.RunIdentity(run))
    return out


def test_the_banner_names_rocms_stack():
    banner = [line.text for line in layout(amd()).banner(0.0)]
    assert any(t.endswith("RCCL: 2.20.5 | ROCm: 6.2.0 | MIOpen: 3.2.0 | Driver: 6.8.5") for t in banner)
    assert any(t.endswith("Framework: PyTorch 2.5.1+rocm6.2 + transformers 4.46.3") for t in banner)
    assert not any("CUDA" in t or "NCCL:" in t for t in banner)


def test_the_cluster_box_shows_the_xgmi_bus():
    run = amd(nproc=8)
    out = layout(run)
    out.routed(ev.NcclStats(20, [ev.OpStats("all_reduce", 1, 10**9, 5.0, 268.8)], 0.0))
    gpus = [ev.GpuSample(r, 0, r, 99, 70, 700, 1000, run.gpu.memory_mib) for r in range(8)]
    box = [line.text for line in out.lines(ev.GpuStatus(20, gpus, 0.0))]
    assert any("xGMI: 269 GB/s bus" in t for t in box) and not any("NVLink" in t for t in box)


@pytest.mark.parametrize("nproc,busbw", [(2, 38.4e9), (4, 115.2e9), (8, 268.8e9)])
def test_xgmi_bus_bandwidth_grows_with_the_links_a_ring_uses(nproc: int, busbw: float):
    # One 48 GB/s xGMI link between each pair of MI300X (RCCL's GFX94X_XGMI_WIDTH): k GPUs drive k-1 each.
    assert sim.node_busbw(amd(nproc)) == pytest.approx(busbw)


# -- RCCL's init lines --------------------------------------------------------------
def test_rccl_prints_its_version_with_hip_and_its_git_hash_on_rank_0_only():
    # src/init.cc:686 VERSION_STRING, :690 showVersion; as a real ROCm 6.2.0 run prints it.
    lines = printed(amd(4))
    assert [(r, t) for r, t in lines if "version 2.20.5" in t] == [(0, "RCCL version 2.20.5+hip6.2 HEAD:45b618a+")]
    assert printed(amd(4), {"NCCL_DEBUG": "VERSION"}) == [(0, "RCCL version 2.20.5+hip6.2 HEAD:45b618a+")]


def test_the_main_threads_say_what_rccl_says_in_its_order():
    # Rank 0: ncclGetUniqueId's ncclInit (src/init.cc:102-123), then ROCr
    # (misc/rocmwrap.cc:93, :104) and the version; the others load ROCr first.
    lines = printed(amd(2))
    net_plugin = ("NET/Plugin : dlerror=librccl-net.so: cannot open shared object file: No such file or "
                  "directory No plugin found (librccl-net.so), using internal implementation")
    rank0 = messages(lines, 0)
    rank1 = messages(lines, 1)
    head = [t for t in rank0 if not t.startswith(("NET/IB", "Using", "comm", "["))][:6]
    assert head == [rank0[0], net_plugin, "Kernel version: 5.15.0-119-generic", "ROCr version 1.14",
                    "Dmabuf feature disabled without NCCL_DMABUF_ENABLE=1", "RCCL version 2.20.5+hip6.2 HEAD:45b618a+"]
    assert rank0[0].startswith("Bootstrap : Using eth0:")
    assert rank1[:3] == ["ROCr version 1.14", "Dmabuf feature disabled without NCCL_DMABUF_ENABLE=1", rank0[0]]
    assert not any("cudaDriverVersion" in t or "nvmlDev" in t or "libnccl" in t for _, t in lines)


def test_init_start_and_complete_are_rccls():
    # src/init.cc:1896 and :1920 (no nvmlDev; localSize and the device memory used).
    run = amd(2)
    text = messages(printed(run), 1)
    start = next(t for t in text if t.endswith("Init START"))
    assert re.fullmatch(r"comm 0x[0-9a-f]+ rank 1 nranks 2 cudaDev 1 busId 2e000 commId 0x[0-9a-f]{16} - Init START",
                        start)
    complete = next(t for t in text if t.endswith("Init COMPLETE"))
    # 32 channels, each receiving from the one peer: 32 x (LL + LL128 + SIMPLE buffers) + the rest.
    assert complete.endswith(f" localSize 0 used {11154224 + 32 * 4915200} bytes - Init COMPLETE")


def test_every_rank_reads_the_hosts_eight_gpus_from_kfd_in_unique_id_order():
    # src/misc/alt_rsmi.cc:142 (a multimap by unique_id), once a process; then rocm_smi_wrap.cc:68.
    lines = printed(amd(2))
    nodes = {rank: [t for t in messages(lines, rank) if t.startswith("[node_id")] for rank in (0, 1)}
    assert nodes[0] == nodes[1] and len(nodes[0]) == 8
    unique = [int(re.search(r"unique_id = (\d+)", t)[1]) for t in nodes[0]]
    assert unique == sorted(unique)
    first = re.fullmatch(r"\[node_id = (\d); gpu_id = (\d+); unique_id = \d+; location_id = (\d+); bdf = (\d+); "
                         r"domain = 0; partition = 0\], ", nodes[0][0])
    assert first and first[3] == first[4] and 2 <= int(first[1]) <= 9
    after = messages(lines, 0).index(nodes[0][-1]) + 1
    assert messages(lines, 0)[after] == "initialized internal alternative rsmi functionality"
    locations = sorted(int(re.search(r"location_id = (\d+)", t)[1]) for t in nodes[0])
    assert locations == sorted(int(b, 16) << 8 for b in ("1d", "2e", "3f", "61", "9f", "af", "bf", "df"))


@pytest.mark.parametrize("nproc,channels,p2p", [(2, 32, 32), (4, 24, 32), (8, 56, 64)])
def test_channel_counts_follow_rccls_choices_for_mi300x(nproc: int, channels: int, p2p: int):
    # src/init.cc:1393-1399 (gfx94: 16x for 2 ranks, 4x for 4), rome_model_79 for the
    # whole node; p2p: next power of two (graph/paths.cc:911), 8 per peer on one gfx94 node (:910).
    text = messages(printed(amd(nproc)), 0)
    assert f"{channels} coll channels, 0 collnet channels, 0 nvls channels, {p2p} p2p channels, " \
           "8 p2p channels per peer" in text
    assert sum(bool(re.match(r"Channel \d\d/\d\d :", t)) for t in text) == channels
    assert "threadThresholds 8/8/64 | " + str(8 * nproc) + "/8/64 | 256 | 256" in text  # graph/tuning.cc:615


# Lines of a real run of 8 MI300X (RCCL's rome_model_79 node: 56 channels): rank 0's
# last rings and rank 3's first trees (the comm and busId after them differ per run).
REAL_RINGS = ["Channel 46/56 :    0   3   1   5   2   7   4   6", "Channel 47/56 :    0   3   5   1   6   2   7   4",
              "Channel 48/56 :    0   4   1   7   3   6   2   5", "Channel 49/56 :    0   7   6   5   4   3   2   1",
              "Channel 50/56 :    0   6   7   5   4   3   2   1", "Channel 51/56 :    0   7   5   6   3   1   4   2",
              "Channel 52/56 :    0   5   3   7   1   6   4   2", "Channel 53/56 :    0   6   4   7   2   5   1   3",
              "Channel 54/56 :    0   4   7   2   6   1   5   3", "Channel 55/56 :    0   5   2   6   3   7   1   4"]
REAL_TREES_3 = ("Trees [0] 4/-1/-1->3->2 [1] 4/-1/-1->3->2 [2] 6/-1/-1->3->1 [3] 5/-1/-1->3->7 [4] 1/-1/-1->3->0 "
                "[5] 5/-1/-1->3->0 [6] 6/-1/-1->3->7 [7] 2/-1/-1->3->4 [8] 2/-1/-1->3->4 [9] 1/-1/-1->3->6 "
                "[10] 7/-1/-1->3->5 [11] 0/-1/-1->3->1 [12] 0/-1/-1->3->5 [13] 7/-1/-1->3->6 [14] 4/-1/-1->3->2")


def test_a_whole_mi300x_node_has_rccls_rings_and_trees():
    run = amd(8)
    lines = printed(run)
    assert [t for t in messages(lines, 0) if t.startswith("Channel 4") or t.startswith("Channel 5")
            if "/56 :" in t][-10:] == REAL_RINGS
    trees = next(t for t in messages(lines, 3) if t.startswith("Trees"))
    assert trees.startswith(REAL_TREES_3 + " ")
    assert trees.endswith(" nRanks 08 busId 61000")  # src/init.cc:1542


def test_connections_come_peer_by_peer_as_rccl_sets_them_up():
    # src/transport/p2p.cc:401: legacy IPC, on the sender; ncclTransportP2pSetup
    # sends to rank+1, then rank+2, ..., each peer's channels in order (a real
    # 8 x MI300X run shows rank 1 send to rank 2 on channels 00, 01, 14, 15, 28,
    # 29, 42, 43 first, then to rank 3).
    text = messages(printed(amd(8)), 1)
    connected = text.index(next(t for t in text if t.startswith("Connected all rings comm ")))
    sends = [t for t in text[:connected] if "via P2P/IPC" in t]
    assert [t.split()[1] for t in sends[:8]] == ["00/0", "01/0", "14/0", "15/0", "28/0", "29/0", "42/0", "43/0"]
    assert sends[0] == f"Channel 00/0 : 1[2e000] -> 2[3f000] via P2P/IPC comm {sends[0].split()[-3]} nRanks 08"
    peers = [int(t.split("-> ")[1].split("[")[0]) for t in sends]
    assert [(p - 1) % 8 for p in peers] == sorted((p - 1) % 8 for p in peers) and len(sends) == 56
    assert text[connected].endswith(" nRanks 08 busId 2e000")  # src/init.cc:1593
    assert "Connected all trees" in text[connected:]


# -- what the script dies of on ROCm ------------------------------------------------
def amd_config(style: str = "torchrun", scenario: str = "cuda-oom"):
    from fakerun.cli.main import build_parser, to_config
    argv = ["--speed", "0", "--max-steps", "20", "--nproc", "2", "--gpu", MI300X, "--scenario", scenario,
            "--fail-step", "5", "--style", style]
    return to_config(build_parser().parse_args(argv), environ={})


@pytest.mark.parametrize("style", ["torchrun", "hf", "megatron", "lightning", "deepspeed@0.16"])
def test_an_oom_on_rocm_is_the_hip_allocators(style: str):
    # c10/hip/HIPCachingAllocator.cpp, as ROCm runs of torch 2.4-2.6 print it: no NVML,
    # so no "Including non-PyTorch memory" clause; PYTORCH_HIP_ALLOC_CONF.
    from fakerun.rank.faults import Faults, ScriptFailed
    config = amd_config(style)
    with pytest.raises(ScriptFailed) as failed:
        Faults(config, config.identity, 1).strike(5)
    last = failed.value.lines[-1]
    assert re.fullmatch(r"torch\.OutOfMemoryError: HIP out of memory\. Tried to allocate [\d.]+ [GM]iB\. GPU 1 has a "
                        r"total capacity of [\d.]+ GiB of which [\d.]+ [GM]iB is free\. Of the allocated memory [\d.]+ "
                        r"[GM]iB is allocated by PyTorch, and [\d.]+ (GiB|MiB) is reserved by PyTorch but unallocated\. "
                        r"If reserved but unallocated memory is large try setting PYTORCH_HIP_ALLOC_CONF="
                        r"expandable_segments:True to avoid fragmentation\.  See documentation for Memory Management  "
                        r"\(https://pytorch\.org/docs/stable/notes/cuda\.html#environment-variables\)", last), last
    assert not any("CUDA" in line for line in failed.value.lines)


def test_an_illegal_memory_access_on_rocm_6_aborts_with_the_hsa_fault():
    # ROCm 6's HSA runtime: "Memory access fault by GPU node-N (Agent handle: 0x...) on
    # address 0x.... Reason: Page not present or supervisor privilege.", then abort();
    # the node is the GPU's KFD node, as RCCL's topology lines name it.
    import signal

    from fakerun.rank.faults import Faults, SimulatedSignal
    config = amd_config(scenario="rank-crash")
    with pytest.raises(SimulatedSignal) as died:
        Faults(config, config.identity, 1).strike(5)
    assert died.value.sig == signal.SIGABRT
    [line] = died.value.lines
    m = re.fullmatch(r"Memory access fault by GPU node-(\d) \(Agent handle: 0x55[0-9a-f]{9}0\) on address "
                     r"0x7f[0-9a-f]{7}000\. Reason: Page not present or supervisor privilege\.", line)
    assert m, line
    nodes = messages(printed(config.identity), 1)
    assert any(f"[node_id = {m[1]}; " in t and "location_id = 11776;" in t for t in nodes)  # GPU 1: bus 2e


# -- rocm-smi ----------------------------------------------------------------------
# A real rocm-smi (ROCm 6.2's rocm_smi.py showAllConcise) on 8 MI300X under load:
# the rules, the header, the italic subheader and device 5's row, char for char
# (the paste lost the trailing spaces of the unitalicised lines).
REAL_SMI = [
    "============================================ ROCm System Management Interface ============================================",
    "====================================================== Concise Info ======================================================",
    "Device  Node  IDs              Temp        Power     Partitions          SCLK     MCLK    Fan  Perf  PwrCap  VRAM%  GPU%",
    "\x1b[3m              (DID,     GUID)  (Junction)  (Socket)  (Mem, Compute, ID)                                          "
    "         \x1b[0m",
    "==========================================================================================================================",
]
REAL_ROW_5 = ("5       7     0x74a1,   705    65.0°C      736.0W    NPS1, SPX, 0        1420Mhz  900Mhz  0%   auto  "
              "750.0W  95%    100%")


def mi300x_row(index: int, **values: int):
    from fakerun.smi import GpuRow
    fields = {"util": 100, "mem_used_mib": 186474, "temp_c": 83, "power_w": 740, "guid": 55354, **values}
    return GpuRow(rank=index, node=0, index=index, host="node017", name=MI300X, bus_id="-", mem_total_mib=196288,
                  power_cap_w=750, pid=9000 + index, kfd_node=2 + index, **fields)


def test_fakerun_smi_shows_rocm_smis_concise_table_for_amd_gpus():
    from fakerun.smi import Snapshot
    from fakerun.smi.table import table
    rows = [mi300x_row(i) for i in range(5)] + [mi300x_row(5, guid=705, temp_c=65, power_w=736)]
    snap = Snapshot(time=0.0, run_id="job", driver="6.8.5", cuda="6.2", process="python", step=1, gpus=rows,
                    vendor="amd")
    lines = table(snap)
    assert [line.rstrip() if not line.startswith("\x1b") else line for line in lines[:5]] == REAL_SMI
    assert lines[5 + 5].rstrip() == REAL_ROW_5
    assert lines[-2:] == [REAL_SMI[-1], "================================================== End of ROCm SMI Log "
                                        "==================================================="]


def test_rocm_smi_reads_the_same_kfd_nodes_and_guids_rccl_does(tmp_path):
    # rocm-smi's Node and GUID are KFD's node and gpu_id: those RCCL's topology lines print.
    from fakerun.smi import SmiStateSink, Snapshot
    from fakerun.smi.table import fit
    run = amd(4)
    sink = SmiStateSink(tmp_path / "smi.json", "/opt/conda/bin/python3", monotonic=lambda: 100.0,
                        wall=lambda: 100.0)
    sink.event(ev.RunIdentity(run))
    sink.event(ev.RunStarted("job-7", 4, 1, 4, 0, 3, "train.py", [], 100, "127.0.0.1", 29500, 999, 0, 0.0))
    for r in range(4):
        sink.event(ev.RankStarted(r, r, 0, 5000 + r, {}))
    snap = Snapshot.from_json((tmp_path / "smi.json").read_text())
    assert snap.vendor == "amd"
    topology = [t for t in messages(printed(run), 0) if t.startswith("[node_id")]
    for g in snap.gpus:
        assert any(f"[node_id = {g.kfd_node}; gpu_id = {g.guid}; " in t for t in topology)
    narrow = fit(snap, 60, 40, 0)
    assert all(len(line) <= 60 or line.startswith("\x1b[3m") and line.endswith("\x1b[0m") for line in narrow)
    assert narrow[3].endswith("\x1b[0m") and len(narrow[3]) == 60 + len("\x1b[3m\x1b[0m")


# -- MI250X: two GCDs a package ------------------------------------------------------
MI250X = "AMD Instinct MI250X"


def test_an_mi250x_gcd_is_what_torch_and_rocm_smi_see():
    gpu = catalog.find(catalog.gpus(), MI250X, "GPU")
    assert gpu.memory_mib * 2**20 == 68702699520  # torch: "total capacity of 63.98 GiB"
    assert 2 * gpu.power_cap_w == 560 and gpu.bf16_tflops == 191  # a package: 560 W, 383 TFLOP/s


def test_a_whole_mi250x_node_has_rccls_model_and_numa_affinity():
    # rome_model_73 (4 rings) and init.cc's gfx90a multiplier 4: 16 channels; per peer 2;
    # the affinity of each GCD's NUMA domain, as a real MI250X node prints it (ROCm/rccl#1026).
    run = identity.build(5, 1, 8, 20, gpu=MI250X)
    lines = printed(run)
    for rank, mask in ((0, "ffff0000,00000000,ffff0000,00000000"), (1, "ffff0000,00000000,ffff0000,00000000"),
                       (2, "ffff0000,00000000,ffff0000"), (3, "ffff0000,00000000,ffff0000")):
        assert f"Setting affinity for GPU {rank} to {mask}" in messages(lines, rank)
    text = messages(lines, 0)
    assert "16 coll channels, 0 collnet channels, 0 nvls channels, 16 p2p channels, 2 p2p channels per peer" in text
    assert "Channel 00/16 :    0   1   3   2   4   5   7   6" in text
    # Slingshot, not InfiniBand: RCCL's sockets on the four hsn interfaces.
    assert "NET/IB : No device found." in text and "Using network Socket" in text
    socket = next(t for t in text if t.startswith("NET/Socket : Using [0]hsn0:"))
    assert re.fullmatch(r"NET/Socket : Using \[0\]hsn0:10\.\d+\.\d+\.\d+<0> \[1\]hsn1:\S+<0> \[2\]hsn2:\S+<0> "
                        r"\[3\]hsn3:\S+<0>", socket)
    assert all(int(octet) < 256 for octet in re.findall(r"\d+", socket.split("Using ")[1]) if len(octet) <= 3)


def test_rocm_smi_shows_a_packages_power_on_its_first_gcd():
    from fakerun.smi import GpuRow, Snapshot
    from fakerun.smi.table import table
    rows = [GpuRow(rank=i, node=0, index=i, host="nid001", name=MI250X, bus_id="-", util=100, mem_used_mib=40000,
                   mem_total_mib=65520, temp_c=50, power_w=176, power_cap_w=280, pid=1, kfd_node=4 + i, guid=100 + i)
            for i in range(4)]
    lines = table(Snapshot(time=0.0, run_id="j", driver="6.8.5", cuda="6.2", process="p", step=1, gpus=rows,
                           vendor="amd"))
    assert "(Edge)  (Avg)" in lines[3]
    assert [line.split()[5] for line in lines[5:9]] == ["352.0W", "N/A", "352.0W", "N/A"]
    assert [line.split()[-3] for line in lines[5:9]] == ["560.0W", "0.0W", "560.0W", "0.0W"]
    assert lines[5].split()[:4] == ["0", "4", "0x740c,", "100"]


@pytest.mark.parametrize("nproc,busbw", [(2, 115.2e9), (4, 57.6e9), (8, 115.2e9)])
def test_mi250x_bus_bandwidth_is_the_links_its_rings_cross(nproc: int, busbw: float):
    assert sim.node_busbw(identity.build(5, 1, nproc, 20, gpu=MI250X)) == pytest.approx(busbw)


def test_the_watchdogs_frames_name_the_rocm_wheels_library():
    # torch's ROCm wheel builds ProcessGroupNCCL into libtorch_hip.so (libc10_hip.so, ...).
    from fakerun.render.torchrun.formatter import EventFormatter
    e = ev.WatchdogTimeout("default_pg", 25, "all_reduce", 2, 600000, 600061, [1], [0], 0.0)
    amd_lines = [line.text for line in EventFormatter(ident=amd(2)).lines(e)]
    nvidia_lines = [line.text for line in EventFormatter(ident=identity.build(5, 1, 2, 20)).lines(e)]
    assert any("/torch/lib/libtorch_hip.so)" in t for t in amd_lines)
    assert not any("libtorch_cuda" in t for t in amd_lines)
    assert any("/torch/lib/libtorch_cuda.so)" in t for t in nvidia_lines)


def test_mi300x_ranks_take_their_sockets_cpus():
    # Two 64-core EPYC 9534 with SMT: socket 0 is CPUs 0-63 and 128-191 (GPUs 0-3), socket 1 the rest.
    lines = printed(amd(8))
    assert "Setting affinity for GPU 0 to ffffffff,ffffffff,00000000,00000000,ffffffff,ffffffff" in messages(lines, 0)
    assert ("Setting affinity for GPU 5 to ffffffff,ffffffff,00000000,00000000,ffffffff,ffffffff,00000000,00000000"
            in messages(lines, 5))


def test_the_theatres_dashboard_pane_is_named_for_the_tool_it_imitates():
    from fakerun.launcher import cluster
    agents = [cluster.Agent(0, "node017", ["fakerun"], {})]
    assert cluster.stage(agents, "job-1", "rocm-smi").dashboard.title == "rocm-smi"
    assert cluster.stage(agents, "job-1").dashboard.title == "nvidia-smi"


def test_nccl_debug_subsys_filters_rccls_lines_by_their_subsystems():
    # src/debug.cc: the same mask as NCCL 2.20.5's; GRAPH alone keeps init.cc:1538's ring lines
    # ("Ring %d", not %02d, with RCCL's comm, nRanks and busId) and the printf'd version.
    lines = printed(amd(2), {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "GRAPH"})
    text = messages(lines, 0)
    assert text[0] == "RCCL version 2.20.5+hip6.2 HEAD:45b618a+"
    assert len(text) == 1 + 32
    assert re.fullmatch(r"Ring 0 : 1 -> 0 -> 1 comm 0x[0-9a-f]+ nRanks 02 busId 1d000", text[1])
    assert text[-1].startswith("Ring 31 : 1 -> 0 -> 1 comm ")


def test_the_hip_oom_says_the_total_torch_sees_on_rocm():
    # hipMemGetInfo's total: an MI250X GCD's whole VRAM, as its OOMs say ("total capacity of 63.98 GiB").
    from fakerun.rank.faults import oom_sizes
    assert oom_sizes(identity.build(5, 1, 8, 20, gpu=MI250X), 1, 10)["total"] == "63.98 GiB"


def test_more_ranks_than_the_hosts_gpus_share_them_in_turn():
    """`--nproc 64` on one MI300X host (8 GPUs): RCCL's affinity, the KFD
    node a memory fault names and rocm-smi's rows take the GPUs in turn, as
    the bus ids do, instead of an IndexError past the eighth rank."""
    from fakerun.rank.faults import memory_fault
    from fakerun.world.kfd import kfd_gpu, kfd_gpus
    run = amd(nproc=64)
    lines = printed(run)
    assert {rank for rank, _ in lines} == set(range(64))
    host = kfd_gpus(run.seed, 0, run.gpu)
    assert [kfd_gpu(run.seed, 0, run.gpu, r) for r in (0, 8, 63)] == [host[0], host[0], host[7]]
    assert memory_fault(run, 63)["node"] == str(host[7].node_id)
