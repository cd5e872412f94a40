"""The bytes the job's collectives move through each GPU of a node, as the
coordinator ran them (the Collective events: op, element count, dtype,
ranks), split between NVLink and PCIe the way NCCL's ring lays them out:
on one node every hop is a GPU-to-GPU link (NVLink on an SXM board, PCIe
peer-to-peer on a card); across nodes, one hop in nproc leaves through the
NIC, which GPUDirect RDMA reaches over the GPU's PCIe link."""

from __future__ import annotations

from fakerun import events as ev
from fakerun.dcgm.readings import Traffic
from fakerun.world.identity import Identity

DTYPE_BYTES = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "bfloat16": 2, "float16": 2,
               "int8": 1, "uint8": 1, "bool": 1}
MB = 1e6  # DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL reads MB/s (KempnerInstitute/kempnerpulse PR 11:
# field 449 against `nvidia-smi nvlink -gt d` on H200s, ~200 GB/s under FSDP read ~200,000)


def per_direction(op: str, ranks: int) -> float:
    """Bytes each GPU sends (and receives) per byte of the tensor, in a ring
    (NCCL's algorithm model, nccl-tests doc/PERFORMANCE.md's bus bandwidth):
    all_reduce 2(n-1)/n, the gathers, scatters and broadcast (n-1)/n."""
    if ranks < 2:
        return 0.0
    share = (ranks - 1) / ranks
    return 2.0 * share if op == "all_reduce" else share


class TrafficMeter:
    def __init__(self, ident: Identity) -> None:
        topo = ident.topology
        nproc = topo.nproc_per_node
        self.intra = 1.0 if topo.nnodes == 1 else (nproc - 1) / nproc
        self.nvlink = ident.gpu.nvlink == "yes"
        self.moved = 0.0  # bytes each GPU sent since the last collection (and received as many)

    def add(self, e: ev.Collective) -> None:
        self.moved += e.numel * DTYPE_BYTES.get(e.dtype, 4) * per_direction(e.op, len(e.ranks))

    def rates(self, seconds: float) -> Traffic:
        """The rates since the last call, over `seconds`; the count starts again."""
        moved, self.moved = self.moved, 0.0
        if seconds <= 0:
            return Traffic(0.0, 0.0, 0.0)
        link, net = moved * self.intra / seconds, moved * (1.0 - self.intra) / seconds
        if self.nvlink:
            return Traffic(2.0 * link / MB, net, net)  # the counter adds tx and rx
        return Traffic(0.0, link + net, link + net)
