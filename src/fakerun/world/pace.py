"""How long a rank's work and the job's collectives take under the run's
fault: the straggler's factor, a throttled GPU's clock, a flapping link.
The ranks pace themselves by it and the coordinator's clock advances by it,
from the same hardware condition the views show (world/hardware.py)."""

from __future__ import annotations

from fakerun.world import hardware, physics, thermal
from fakerun.world.hardware import FaultLike
from fakerun.world.identity import Identity


def compute_factor(ident: Identity, fault: FaultLike | None, rank: int, step: int) -> float:
    """How many times longer `rank`'s compute at `step` takes than a
    healthy GPU's: a straggler's factor; a throttled GPU's clock ratio
    (a training step's matrix multiplies run at the SM clock)."""
    if fault is None or fault.step is None or step < fault.step or rank != fault.rank:
        return 1.0
    if fault.kind == "slow":
        return fault.param("factor")
    clock = hardware.condition(ident, fault, rank, step).clock_factor
    return 1.0 / clock if clock > 0 else 1.0  # no clock at all (a lost GPU): its rank fails, not slows


def slowest(ident: Identity, fault: FaultLike | None) -> float:
    """compute_factor at its largest over the run: for the plan's bounds."""
    if fault is not None and fault.kind == "slow":
        return fault.param("factor")
    if fault is not None and fault.kind == "thermal":
        return thermal.slowest(ident)
    return 1.0


def collective_seconds(ident: Identity, fault: FaultLike | None, op: str, numel: int, step: int) -> float:
    """A collective's simulated time (physics.collective_seconds), over a
    fabric whose bandwidth the condition cuts: the gradient all-reduce of
    the step a port flaps in, when it crosses nodes."""
    seconds = physics.collective_seconds(ident, op, numel)
    if fault is None or fault.kind != "link-flap" or ident.nnodes == 1 or op != "all_reduce" \
            or numel != physics.grad_numel(ident):
        return seconds
    return seconds / hardware.condition(ident, fault, fault.rank, step).link_factor
