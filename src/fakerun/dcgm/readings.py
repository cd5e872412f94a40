"""What DCGM reads of one GPU at a collection, counter by counter: the same
row nvidia-smi shows (smi/device.py derives the clocks, the memory split and
the power's fraction from it), its hardware condition (world/hardware.py),
its energy and its traffic since the last collection."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.smi.device import Device
from fakerun.world.hardware import Condition

# NVIDIA's DCGM documentation's sample scrape of a busy A100 (dcgm-exporter's
# docs, "Multi-Instance GPU (MIG) Support": DCGM_FI_PROF_PCIE_TX_BYTES
# 33011804, RX 97863601 at GR_ENGINE_ACTIVE 0.9956): the PCIe traffic a
# busy GPU makes beyond its data (the driver's doorbells, semaphores, the
# host's reads of its results), per second of full activity.
BUSY_PCIE_TX, BUSY_PCIE_RX = 33e6, 98e6
# A tensor-core GEMM keeps its pipe busy on more cycles than its FLOPs fill at
# peak rate (operand loads, tile edges): DCGM's TENSOR_ACTIVE runs above the
# MFU the log shows (the docs' benchmark A100: 0.93 active at 0.996 busy).
TENSOR_ACTIVE_PER_MFU = 1.3


@dataclass(frozen=True)
class Traffic:
    """Rates over the last collection interval."""

    nvlink_mbps: float  # DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL: tx + rx over every link, MB/s
    pcie_tx: float  # bytes/s: DCGM_FI_PROF_PCIE_TX_BYTES
    pcie_rx: float


IDLE = Traffic(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Reading:
    """One GPU's figures at one collection, before the counters pick theirs."""

    device: Device  # its row, with the condition's heat already added
    condition: Condition
    energy_mj: float  # since boot
    traffic: Traffic
    mfu: float  # the step's model FLOPs utilisation
    nvlink: bool  # the board has NVLink (an SXM part)
    jitter: float  # in [0, 1): where in its rounding a ratio falls, from the seed


def values(r: Reading) -> dict[str, float | None]:
    """Each default counter's value; None: DCGM holds it blank (no line).
    A GPU that fell off the bus answers nothing: NVML returns GPU_IS_LOST
    for every query and DCGM stores blanks, all but the Xid it raised (an
    event DCGM recorded before the loss: it stays, as the last Xid). So its
    lines vanish rather than show an error state (NVIDIA/dcgm-exporter issue
    348, "GPU has fallen off the bus": the exporter reports no state for it)."""
    if r.condition.lost:
        return {"DCGM_FI_DEV_XID_ERRORS": r.condition.xid}
    dev = r.device
    # Boards without row remapping read N/A; on the others an uncorrectable
    # error's row is recorded for remapping, as nvidia-smi -q's "Remapped Rows" counts it.
    remap = dev.dram_uncorrectable if dev.card.banks else None
    return {
        "DCGM_FI_DEV_SM_CLOCK": dev.clock_graphics,  # a thermal slowdown's clock as nvidia-smi shows it
        "DCGM_FI_DEV_MEM_CLOCK": dev.clock_memory,
        "DCGM_FI_DEV_MEMORY_TEMP": dev.mem_temp,
        "DCGM_FI_DEV_GPU_TEMP": dev.row.temp_c,
        "DCGM_FI_DEV_POWER_USAGE": round(dev.power, 3),
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": int(r.energy_mj),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_GPU_UTIL": dev.row.util,
        "DCGM_FI_DEV_MEM_COPY_UTIL": dev.mem_util,
        "DCGM_FI_DEV_ENC_UTIL": 0,
        "DCGM_FI_DEV_DEC_UTIL": 0,
        "DCGM_FI_DEV_XID_ERRORS": r.condition.xid,
        "DCGM_FI_DEV_FB_FREE": dev.mem_free,
        "DCGM_FI_DEV_FB_USED": dev.row.mem_used_mib,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": remap,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": None if remap is None else 0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": None if remap is None else 0,
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": round(r.traffic.nvlink_mbps) if r.nvlink else None,
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS": 0,  # bare metal: no vGPU licence
    } | _profiling(r)


def _profiling(r: Reading) -> dict[str, float | None]:
    """DCGM's profiling fields (DCP): data-centre parts only, Volta and
    later; on the others the exporter skips their lines ("metric not enabled")."""
    if r.device.card.desktop:
        return {}
    gr = _ratio(r.device.row.util, r.jitter)
    return {
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": gr,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round(gr * min(1.0, TENSOR_ACTIVE_PER_MFU * r.mfu), 6),
        "DCGM_FI_PROF_DRAM_ACTIVE": _ratio(r.device.mem_util, r.jitter),
        "DCGM_FI_PROF_PCIE_TX_BYTES": round(r.traffic.pcie_tx + BUSY_PCIE_TX * gr),
        "DCGM_FI_PROF_PCIE_RX_BYTES": round(r.traffic.pcie_rx + BUSY_PCIE_RX * gr),
    }


def _ratio(percent: int, jitter: float) -> float:
    """The fraction NVML's whole percent was rounded from: within half a
    percent of it, never below 0 or above 1 (an idle engine reads 0)."""
    if percent <= 0:
        return 0.0
    return round(min(1.0, max(0.0, (percent + jitter - 0.5) / 100.0)), 6)
