"""`nvidia-smi topo -m`: the layout of real matrices (the 590.48.01 capture's
`topo -m` in utkuozdemir/nvidia_gpu_exporter internal/captures/
linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt: tabs, " X ", the CPU
list, the NUMA node, an empty field, "N/A", the legend; 8 x H100 with NICs in
vllm-project/vllm#29944; the DGX-1's mesh in NVIDIA's developer blog), and
its agreement with the NCCL lines fakerun prints for the same node."""

from __future__ import annotations

import io

import pytest

from fakerun.smi import nvsmi
from fakerun.smi.snapshot import GpuRow, Snapshot
from tests.unit.test_nccl import A100, H100, H100_PCIE, L40S, V100, ident, messages, printed
from tests.unit.test_nvidia_smi import run, snap

LEGEND_590 = [
    "Legend:", "", "  X    = Self",
    "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
    "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
    "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
    "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
    "  PIX  = Connection traversing at most a single PCIe bridge",
    "  NV#  = Connection traversing a bonded set of # NVLinks",
]
# NVIDIA's developer blog, the DGX-1's `nvidia-smi topo -m` (its GPU columns).
DGX1 = [["X", "NV1", "NV1", "NV2", "NV2", "SYS", "SYS", "SYS"],
        ["NV1", "X", "NV2", "NV1", "SYS", "NV2", "SYS", "SYS"],
        ["NV1", "NV2", "X", "NV2", "SYS", "SYS", "NV1", "SYS"],
        ["NV2", "NV1", "NV2", "X", "SYS", "SYS", "SYS", "NV1"],
        ["NV2", "SYS", "SYS", "SYS", "X", "NV1", "NV1", "NV2"],
        ["SYS", "NV2", "SYS", "SYS", "NV1", "X", "NV2", "NV1"],
        ["SYS", "SYS", "NV1", "SYS", "NV1", "NV2", "X", "NV2"],
        ["SYS", "SYS", "SYS", "NV1", "NV2", "NV1", "NV2", "X"]]


def node_of(gpu: str, nproc: int = 8) -> Snapshot:
    """The node NCCL's lines describe for test_nccl's seed, as nvidia-smi sees it."""
    board = ident(gpu=gpu, nproc=nproc).gpu
    rows = [GpuRow(rank=i, node=0, index=i, host="h", name=board.name,
                   bus_id=f"00000000:{board.bus_id(i).upper()}:00.0", util=0, mem_used_mib=0, mem_total_mib=board.memory_mib, temp_c=30, power_w=60,
                   power_cap_w=board.power_cap_w, pid=0) for i in range(nproc)]
    return Snapshot(time=0.0, run_id="", driver="535.183.01", cuda="12.2", process="python", step=0, gpus=rows,
                    seed=3)


def topo(shot: Snapshot) -> tuple[list[list[str]], list[str]]:
    code, out, _ = run("topo", "-m", shot=shot)
    assert code == 0
    lines = out.splitlines()
    end = lines.index("")
    return [line.split("\t") for line in lines[:end]], lines[end + 1:]


def cpu_list(mask: str) -> str:
    value = int(mask.replace(",", ""), 16)
    cpus = [c for c in range(value.bit_length()) if value >> c & 1]
    starts = [c for c in cpus if c - 1 not in cpus]
    return ",".join(f"{s}-{next(c for c in cpus if c >= s and c + 1 not in cpus)}" for s in starts)


def test_the_layout_is_nvidia_smis():
    rows, rest = topo(snap())
    assert rows[0][:2] == ["", "GPU0"] and rows[0][-3:] == ["CPU Affinity", "NUMA Affinity", "GPU NUMA ID"]
    for i, row in enumerate(rows[1:9]):
        assert row[0] == f"GPU{i}" and row[1 + i] == " X " and row[-3:] == ["0" if i < 4 else "1", "", "N/A"]
    assert rows[9][0] == "NIC0" and rows[9][-4:] == ["", "", "", ""]
    assert rest[:9] == LEGEND_590 and rest[9:12] == ["", "NIC Legend:", ""] and rest[12] == "  NIC0: mlx5_0"
    # "NUMA Affinity" passes a tab stop: a row has one field more than the header (0\t\tN/A).
    assert all(len(row) == len(rows[0]) + 1 for row in rows[1:])


def test_a_terminal_sees_the_header_underlined():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert nvsmi.main(["topo", "-m"], out, io.StringIO(), snap, tool=True) == 0
    assert out.getvalue().startswith("\t\x1b[4mGPU0\tGPU1\t") and "GPU NUMA ID\x1b[0m\nGPU0\t X \t" in out.getvalue()
    assert run("topo", "-m")[1].startswith("\tGPU0\tGPU1\t")  # a pipe: plain


@pytest.mark.parametrize("gpu,links", [(H100, "NV18"), (A100, "NV12")])
def test_an_nvswitch_node_agrees_with_its_nccl_lines(gpu: str, links: str):
    rows, rest = topo(node_of(gpu))
    lines = printed(ident(gpu=gpu, nproc=8), {"NCCL_DEBUG": "INFO"})
    for rank in range(8):
        said = messages(lines, rank)
        mask = next(x for x in said if x.startswith(f"Setting affinity for GPU {rank} to ")).rsplit(" ", 1)[1]
        assert rows[1 + rank][-4] == cpu_list(mask)
        assert all(cell == links for g, cell in enumerate(rows[1 + rank][1:9]) if g != rank)
    ib = next(x for x in messages(lines, 0) if x.startswith("NET/IB : Using"))
    names = [word.split("]")[1].split(":")[0] for word in ib.split("Using ")[1].split(" [RO]")[0].split()]
    assert [line.split(": ")[1] for line in rest[12:]] == names
    assert [rows[1 + g][9 + g] for g in range(8)] == ["PIX"] * 8  # each GPU's own NIC


def test_gpus_4_to_7_are_the_second_socket():
    rows, _ = topo(node_of(H100))
    assert {row[-4] for row in rows[1:5]} == {"0-47,96-143"} and {row[-4] for row in rows[5:9]} == {"48-95,144-191"}


def test_a_pcie_box_is_pix_where_nccl_goes_p2p_and_shm_elsewhere():
    rows, rest = topo(node_of(H100_PCIE, 4))
    rank0, rank1 = (messages(printed(ident(gpu=H100_PCIE, nproc=4), {"NCCL_DEBUG": "INFO"}), r) for r in (0, 1))
    assert "Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM" in rank0 and rows[1][2] == "PIX"
    assert "Channel 00 : 1[1] -> 2[2] via SHM/direct/direct" in rank1 and rows[2][3] == "NODE"
    assert "NIC Legend:" not in rest and len(rows[0]) == 1 + 4 + 3  # sockets: no IB device
    l40s, _ = topo(node_of(L40S))
    assert l40s[1][2:9] == ["NODE"] * 3 + ["SYS"] * 4


def test_a_dgx1_is_its_hybrid_cube_mesh():
    rows, rest = topo(node_of(V100))
    assert [[cell.strip() for cell in row[1:9]] for row in rows[1:9]] == DGX1
    assert rows[1][9:13] == ["PIX", "PHB", "SYS", "SYS"] and len(rest) == 9 + 3 + 4  # a NIC a pair


def test_other_topo_views_are_not_supported():
    assert run("topo", "-p2p", "r") == (3, "Unable to run topo: Not Supported\n", "")
    assert run("topo", "--matrix")[0] == 0
