"""The AMD GPUs of a simulated host as the amdgpu driver's KFD topology
numbers them (/sys/class/kfd/kfd/topology/nodes): what RCCL's topology lines
and rocm-smi's Node and GUID columns show, alike for every rank of the host.

KFD numbers the host's CPU nodes first, then its GPUs in bus order; gpu_id
is a 16-bit hash the driver makes of the GPU's properties and unique_id the
GPU's 64-bit serial (drawn here from the seed, per host); location_id is the
PCI address, bus << 8 | device << 3 | function."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.world.catalog import Gpu
from fakerun.world.draws import rng

# KFD's first GPU node: after the host's CPU nodes, two sockets on MI300X
# platforms (rocm-smi shows their GPUs as nodes 2-9), one EPYC in four NUMA
# domains (NPS4) on MI250X's HPE Cray EX235a (nodes 4-11).
FIRST_GPU_NODE = {"AMD Instinct MI250X": 4}
DEFAULT_FIRST_GPU_NODE = 2


@dataclass(frozen=True)
class KfdGpu:
    node_id: int
    gpu_id: int
    unique_id: int
    location_id: int


def kfd_gpus(seed: int, node: int, gpu: Gpu) -> list[KfdGpu]:
    """The host's GPUs, in its bus order (device 0 first)."""
    r = rng(seed, "kfd", node)
    first = FIRST_GPU_NODE.get(gpu.name, DEFAULT_FIRST_GPU_NODE)
    return [KfdGpu(first + i, r.randrange(1, 1 << 16), r.getrandbits(64), int(bus, 16) << 8)
            for i, bus in enumerate(gpu.bus_ids.split(","))]


def kfd_gpu(seed: int, node: int, gpu: Gpu, local_rank: int) -> KfdGpu:
    """The GPU of the host's local rank `local_rank`. More ranks than the host
    has GPUs (`--nproc 64` on one node) share them in turn, as their bus ids
    do (Gpu.bus_id)."""
    found = kfd_gpus(seed, node, gpu)
    return found[local_rank % len(found)]
