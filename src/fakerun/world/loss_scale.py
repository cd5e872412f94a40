"""fp16's dynamic loss scale: DeepSpeed's DynamicLossScaler.update_scale
(runtime/fp16/loss_scaler.py), stepped once a step. An overflow skips the
step: it first spends the hysteresis, then halves the scale; `window` clean
steps after the last overflow double the scale and restore the hysteresis.

A step overflows when its scaled gradients pass fp16's largest finite value
(65504): the scale times the step's largest gradient (`gradient_amax`). The
scaler starts far above what the gradients allow (2**16), so a real fp16 run
skips its first few steps while the scale finds its level, one halving a
step once the hysteresis is spent: deepspeedai/DeepSpeed#931 (a DeepSpeed-Chat
fine-tune on 0.9) shows `Attempted loss scale: 65536, but hysteresis is 2`,
then 65536 -> 32768 -> ... and `step=10, skipped=6`: the scale settled at
2048. Each run's level is drawn from the seed between 2**11 and 2**14.

What a step did is returned as a value, so that the view that logs it (the
deepspeed style) only words it, and the checkpoint that saves the scaler's
state counts the same skips."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fakerun.world.draws import uniform
from fakerun.world.physics import local_grad_norm

if TYPE_CHECKING:
    from fakerun.world.jobs import Identity

# The "fp16" section of the fp16 script's DeepSpeed config: the scaler's start.
SCALE_POWER, SCALE_WINDOW, HYSTERESIS = 16, 1000, 2
MIN_SCALE = 1  # min_loss_scale
FP16_MAX = 65504.0  # torch.finfo(torch.float16).max
# log2 of the scale a run's first steps settle at: 2**11 (the #931 run) to
# 2**14, uniform between (the level, less half a power of two, is the
# largest scale that keeps step 1's gradients finite).
LEVEL_LOW, LEVEL_SPAN = 11.0, 3.0


@dataclass(frozen=True)
class ScaleReduced:
    """An overflow with no hysteresis left: the step is skipped, the scale halved."""

    attempted: float  # the scale the step was tried with
    reduced_to: float


@dataclass(frozen=True)
class HysteresisSpent:
    """An overflow the hysteresis absorbs: the step is skipped, the scale kept."""

    attempted: float
    hysteresis: int  # what was left before this overflow
    left: int


Skip = ScaleReduced | HysteresisSpent


def gradient_amax(ident: Identity, step: int) -> float:
    """The largest |gradient| of `step` before scaling: it follows the step's
    grad norm (large early, spiking with the loss), at the run's own ratio
    of the largest element to the norm."""
    return _amax_per_norm(ident) * local_grad_norm(ident, 0, step)


@functools.lru_cache(maxsize=8)  # a few runs' (a --loop's agent keeps no more)
def _amax_per_norm(ident: Identity) -> float:
    """The run's largest gradient per unit of grad norm: step 1's fits the
    scale 2**level less half a power of two."""
    level = LEVEL_LOW + LEVEL_SPAN * uniform(ident.seed, "fp16-level")
    return FP16_MAX / 2 ** (level + 0.5) / local_grad_norm(ident, 0, 1)


@dataclass
class LossScaler:
    """The scaler's state between steps."""

    scale: float = 2.0**SCALE_POWER
    window: int = SCALE_WINDOW
    delayed_shift: int = HYSTERESIS
    hysteresis: int = HYSTERESIS
    iteration: int = 0
    last_overflow: int = -1
    skipped: int = 0  # the engine's skipped_steps

    def update(self, overflow: bool, amax: float = 0.0) -> Skip | None:
        """One step, `overflow` its gradients' own verdict (non-finite, a
        jump) and `amax` its largest unscaled gradient: what the scaler did
        about it when the step is skipped."""
        skip: Skip | None = None
        if overflow or not self.scale * amax <= FP16_MAX:  # NaN overflows too
            if self.delayed_shift == 1 or self.hysteresis == 1:
                skip = ScaleReduced(self.scale, max(self.scale / 2, MIN_SCALE))
                self.scale = skip.reduced_to
            else:
                skip = HysteresisSpent(self.scale, self.hysteresis, self.hysteresis - 1)
                self.hysteresis = skip.left
            self.last_overflow = self.iteration
            self.skipped += 1
        elif (self.iteration - self.last_overflow) % self.window == 0:
            self.hysteresis = self.delayed_shift
            self.scale *= 2
        self.iteration += 1
        return skip

    def step(self, ident: Identity, step: int, overflow: bool) -> Skip | None:
        """Training step `step` of the run, through the scaler."""
        return self.update(overflow, gradient_amax(ident, step))


def restored(ident: Identity, last: int) -> LossScaler:
    """The scaler as a checkpoint after step `last` saved it (DeepSpeed's
    load_checkpoint restores it with the optimizer states): its steps
    replayed. Only the gradients' size decides a replayed step; a jump the
    run's own history flagged is not known here (a spike overflows through
    its size all the same)."""
    scaler = LossScaler()
    for step in range(1, last + 1):
        scaler.step(ident, step, False)
    return scaler
