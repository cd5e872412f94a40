"""`nvidia-smi topo -m`: the host's GPU/NIC matrix, from the topology NCCL's
lines describe for the same node (render/torchrun/nccl_fabric.py and
nccl.py): NVLink boards joined by their bonded links (NV18, NV12, the DGX-1's
NV1/NV2 mesh), PCIe pairs under a switch (PIX, where NCCL allows P2P),
a ConnectX port a GPU where NCCL lists IB devices (the same mlx5 names,
in NCCL's order), and each GPU's CPUs and NUMA node from NCCL's affinity
mask. The layout is data/nvidia_smi.toml [topo]'s."""

from __future__ import annotations

from functools import cache
from typing import Any

from fakerun import texts
from fakerun.render.torchrun.nccl import IB_PORTS
from fakerun.render.torchrun.nccl_fabric import affinity, pcie_pair
from fakerun.smi.device import Device

GPUS_PER_SOCKET = 4  # nccl_fabric.affinity: GPUs 0-3 on the first NUMA node
UNDERLINE, PLAIN = "\x1b[4m", "\x1b[0m"


def matrix(devices: list[Device], tty: bool) -> list[str]:
    """The matrix, its legend and (with NICs) the NIC legend. The header is
    underlined on a terminal only, as nvidia-smi does."""
    data = _data()
    gpus = [d.row.index for d in devices]
    nics = _nics(devices[0])
    names = [f"GPU{g}" for g in gpus] + [f"NIC{i}" for i in range(len(nics))]
    head = "\t".join([*names, *data["columns"]])
    lines = ["\t" + (UNDERLINE + head + PLAIN if tty else head)]
    for g in gpus:
        cells = [_between(devices[0], g, other) for other in gpus] + \
            [_to_nic(devices[0], g, n, len(nics)) for n in range(len(nics))]
        lines.append("\t".join([f"GPU{g}", *cells, cpus(g), str(numa(g)), "", "N/A"]))
    for n in range(len(nics)):
        cells = [_to_nic(devices[0], g, n, len(nics)) for g in gpus] + \
            [" X " if m == n else _same_socket(devices[0], _nic_numa(n, len(nics)) == _nic_numa(m, len(nics)))
             for m in range(len(nics))]
        lines.append("\t".join([f"NIC{n}", *cells, "", "", "", ""]))
    lines += ["", *data["legend"]]
    if nics:
        lines += ["", "NIC Legend:", "", *(f"  NIC{i}: mlx5_{port}" for i, port in enumerate(nics))]
    return lines


def numa(local: int) -> int:
    return local // GPUS_PER_SOCKET


def cpus(local: int) -> str:
    """NCCL's "Setting affinity for GPU n to <mask>" as a CPU list: "0-47,96-143"."""
    mask = int(affinity(local).replace(",", ""), 16)
    bits = [b for b in range(mask.bit_length()) if mask >> b & 1]
    runs: list[list[int]] = []
    for b in bits:
        if runs and runs[-1][1] == b - 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ",".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in runs)


def _between(d: Device, a: int, b: int) -> str:
    if a == b:
        return " X "
    gpu = d.gpu
    if gpu is not None and gpu.nvlink == "yes":
        mesh = _data()["mesh"].get(gpu.architecture)
        links = int(mesh[a][b]) if mesh else int(_data()["nvlinks"][gpu.architecture])
        if links:
            return f"NV{links}"
    if gpu is not None and pcie_pair(gpu, a, b):
        return "PIX"
    return _same_socket(d, numa(a) == numa(b))


def _nics(d: Device) -> tuple[int, ...]:
    """NCCL's IB devices on an NVLink board's node (nccl_fabric.Fabric.network:
    a ConnectX port a GPU); a PCIe box speaks sockets, and shows no NIC here."""
    gpu = d.gpu
    if gpu is None or gpu.nvlink != "yes":
        return ()
    return IB_PORTS.get(gpu.architecture, IB_PORTS["ampere"])


def _nic_numa(nic: int, count: int) -> int:
    return numa(nic * 8 // count)


def _to_nic(d: Device, gpu: int, nic: int, count: int) -> str:
    """A NIC shares its PCIe switch with the GPUs it serves (one, or a DGX-1's pair)."""
    if gpu * count // 8 == nic:
        return "PIX"
    return _same_socket(d, numa(gpu) == _nic_numa(nic, count))


def _same_socket(d: Device, same: bool) -> str:
    arch = d.gpu.architecture if d.gpu else ""
    return str(_data()["same_socket"].get(arch, "NODE")) if same else "SYS"


@cache
def _data() -> dict[str, Any]:
    return texts.load("nvidia_smi")["topo"]
