"""The host's GPUs when no job runs: what nvidia-smi shows of an idle node
(no process, idle clocks and draw, nothing allocated). The node is the
draw of one fixed seed, so every call shows the same machine: its board,
driver and host name as a fakerun run of that seed has them."""

from __future__ import annotations

from functools import cache

from fakerun.smi.device import card
from fakerun.smi.snapshot import GpuRow, Snapshot, cuda_text
from fakerun.world import draws, identity
from fakerun.world.jobs import Identity

IDLE_SEED = 0
GPUS = 8  # a node's GPUs, as a run's default --nproc-per-node
FALLBACK_GPU = "NVIDIA H100 80GB HBM3"  # should the seed's draw ever be a board nvidia-smi cannot see
IDLE_TEMP_C = 30  # a parked board in a cooled rack


def snapshot(now: float) -> Snapshot:
    ident = _identity()
    gpu = ident.gpu
    rows = [GpuRow(rank=i, node=0, index=i, host=ident.hosts[0], name=gpu.name,
                   bus_id=f"00000000:{gpu.bus_id(i).upper()}:00.0", util=0, mem_used_mib=0,
                   mem_total_mib=gpu.memory_mib, temp_c=_temp(i), power_w=_power(gpu.name, i),
                   power_cap_w=gpu.power_cap_w, pid=0) for i in range(GPUS)]
    return Snapshot(time=now, run_id="", driver=ident.versions.driver,
                    cuda=cuda_text(ident.versions.cuda_driver), process=identity.PYTHON, step=0, gpus=rows,
                    seed=IDLE_SEED)


@cache
def _identity() -> Identity:
    ident = identity.build(IDLE_SEED, 1, GPUS)
    if ident.gpu.vendor == "nvidia":
        return ident
    return identity.build(IDLE_SEED, 1, GPUS, gpu=FALLBACK_GPU)


def _temp(index: int) -> int:
    return IDLE_TEMP_C + round(3 * draws.gauss(IDLE_SEED, "idle-temp", index))


def _power(name: str, index: int) -> int:
    return max(1, card(name).idle["power_w"] + round(2 * draws.gauss(IDLE_SEED, "idle-power", index)))
