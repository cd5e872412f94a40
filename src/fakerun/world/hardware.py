"""A GPU's hardware condition under the run's fault: what the driver, NVML,
DCGM and nvidia-smi see of it at a step. Pure: a function of the run's
identity, its fault and (rank, step), so the ranks (their pace, their
errors), the launcher's views (nvidia-smi, the DCGM exporter's endpoint,
the kernel's log) and the TensorBoard curves all agree on one story.

The healthy condition is the default; each hardware scenario (an Xid, a
thermal slowdown, a link flap) says here how its GPU or node departs from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fakerun.world import xid
from fakerun.world.draws import uniform
from fakerun.world.identity import Identity


class FaultLike(Protocol):
    """The run's fault as config.options.Fault holds it (its step resolved)."""

    kind: str
    rank: int
    step: int | None

    def param(self, name: str) -> float: ...


@dataclass(frozen=True)
class Condition:
    xid: int = 0  # the last Xid the driver raised on this GPU (0: none): DCGM_FI_DEV_XID_ERRORS
    lost: bool = False  # fallen off the bus: NVML and DCGM read nothing from it any more
    clock_factor: float = 1.0  # its SM clock over the healthy one (a thermal slowdown)
    temp_rise_c: float = 0.0  # above what its load alone would give
    event_reasons: int = 0  # NVML clocks event reason bits it adds (0x20 SW, 0x40 HW thermal slowdown)
    link_factor: float = 1.0  # its node's inter-node bandwidth over the healthy one (a link flap)


HEALTHY = Condition()

# A training node is rebooted for driver and firmware updates and after a
# fault's drain: up for days to a few weeks when a job lands on it.
UPTIME_DAYS = (2.0, 40.0)


def uptime_at_start(ident: Identity, node: int) -> float:
    """Seconds `node` had been up when the job started: the kernel log's
    timestamps and DCGM's energy-since-boot count from its boot."""
    low, high = UPTIME_DAYS
    return 86400.0 * (low + (high - low) * uniform(ident.seed, "uptime", node))


def condition(ident: Identity, fault: FaultLike | None, rank: int, step: int) -> Condition:
    """The GPU of `rank` at `step` (the step it is in or last finished)."""
    if fault is None:
        return HEALTHY
    if fault.kind == xid.KIND:
        return _xid(ident, fault, rank, step)
    return HEALTHY


def _xid(ident: Identity, fault: FaultLike, rank: int, step: int) -> Condition:
    """From the fail step on, the GPU's last Xid (after an uncorrectable
    ECC error on a row-remapping board: 63, the row recorded for remapping),
    and after Xid 79 the GPU is lost."""
    if rank != fault.rank or fault.step is None or step < fault.step:
        return HEALTHY
    code = int(fault.param("code"))
    return Condition(xid=xid.Report(ident, rank, code).logged()[-1], lost=code == xid.LOST)
