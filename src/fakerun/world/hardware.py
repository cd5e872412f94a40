"""A GPU's hardware condition under the run's fault: what the driver, NVML,
DCGM and nvidia-smi see of it at a step. Pure: a function of the run's
identity, its fault and (rank, step), so the ranks (their pace, their
errors), the launcher's views (nvidia-smi, the DCGM exporter's endpoint,
the kernel's log) and the TensorBoard curves all agree on one story.

The healthy condition is the default; each hardware scenario (an Xid, a
thermal slowdown, a link flap) says here how its GPU or node departs from it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from fakerun.world import catalog, linkflap, physics, thermal, xid
from fakerun.world.draws import rng, uniform
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
    # NVML clocks event reason bits it adds (0x20 SW, 0x40 HW thermal slowdown; 0x8 HW slowdown with 0x40)
    event_reasons: int = 0
    link_factor: float = 1.0  # its node's inter-node bandwidth over the healthy one (a link flap)
    power_factor: float = 1.0  # its draw over the healthy one (a throttled clock draws less)


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
    if fault.kind == "thermal":
        return _thermal(ident, fault, rank, step)
    if fault.kind == "link-flap":
        return _link(ident, fault, rank, step)
    return HEALTHY


def unsupported(ident: Identity, fault: FaultLike) -> str | None:
    """Why the run's hardware cannot have this fault (one line), or None."""
    if fault.kind == "thermal":
        return thermal.supported(ident)
    if fault.kind == "link-flap":
        return linkflap.supported(ident, fault.param("unplugged_s"))
    if fault.kind == xid.KIND and (why := xid.refusal(int(fault.param("code")), ident.gpu)):
        return f"--scenario: {why}"
    return None


def gpu_for(ident: Identity, fault: FaultLike) -> str | None:
    """The GPU the seed puts the cluster on for a fault its drawn GPUs
    cannot have (a thermal slowdown needs NVML's limits, a link flap an
    InfiniBand port a GPU): one of those that can. None: they can."""
    if unsupported(ident, fault) is None:
        return None
    able = [g.name for g in catalog.gpus()
            if g.kind == "real" and unsupported(replace(ident, gpu=g), fault) is None]
    return rng(ident.seed, "hardware-gpu", fault.kind).choice(able) if able else None


def _xid(ident: Identity, fault: FaultLike, rank: int, step: int) -> Condition:
    """From the fail step on, the GPU's last Xid (after an uncorrectable
    ECC error on a row-remapping board: 63, the row recorded for remapping),
    and after Xid 79 the GPU is lost."""
    if rank != fault.rank or fault.step is None or step < fault.step:
        return HEALTHY
    code = int(fault.param("code"))
    return Condition(xid=xid.Report(ident, rank, code).logged()[-1], lost=code == xid.LOST)


def _thermal(ident: Identity, fault: FaultLike, rank: int, step: int) -> Condition:
    """--fail-rank's GPU, its cooling failed at --fail-step (world/thermal.py)."""
    if rank != fault.rank or fault.step is None:
        return HEALTHY
    t = thermal.throttle(ident, rank, step, fault.step, fault.param("cooling"), fault.param("heat_steps"))
    return Condition(clock_factor=t.clock_factor, temp_rise_c=t.temp_rise_c, event_reasons=t.event_reasons,
                     power_factor=t.power_factor)


def _link(ident: Identity, fault: FaultLike, rank: int, step: int) -> Condition:
    """The GPUs of --fail-rank's node at --fail-step, whose gradient
    all-reduce waits out the flap of one of its ports (world/linkflap.py):
    the bandwidth their node's traffic got over that step's collective."""
    topo = ident.topology
    if step != fault.step or topo.node_of(rank) != topo.node_of(fault.rank):
        return HEALTHY
    healthy = linkflap.healthy_s(ident)
    stall = linkflap.flap(ident, fault.rank, step, fault.param("unplugged_s")).stall_s
    return Condition(link_factor=healthy / (healthy + stall))


def reading(ident: Identity, fault: FaultLike | None, rank: int, step: int, phase: str) -> physics.Telemetry:
    """What NVML reads of the GPU at `step` in `phase`: its load's
    telemetry (physics.telemetry) under its condition. The ranks report it,
    `fakerun smi` and the other views show it: the condition's temperature
    rise and draw are in it already."""
    t = physics.telemetry(ident, rank, step, phase)
    cond = condition(ident, fault, rank, step)
    if cond.temp_rise_c == 0.0 and cond.power_factor == 1.0:
        return t
    return physics.Telemetry(t.util, round(t.temp_c + cond.temp_rise_c), round(t.power_w * cond.power_factor),
                             t.mem_used_mib)
