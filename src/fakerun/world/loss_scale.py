"""fp16's dynamic loss scale: DeepSpeed's DynamicLossScaler.update_scale
(runtime/fp16/loss_scaler.py), stepped once a step. An overflow skips the
step: it first spends the hysteresis, then halves the scale; `window` clean
steps after the last overflow double the scale and restore the hysteresis.

What a step did is returned as a value, so that the view that logs it (the
deepspeed style) only words it."""

from __future__ import annotations

from dataclasses import dataclass

# The "fp16" section of the fp16 script's DeepSpeed config: the scaler's start.
SCALE_POWER, SCALE_WINDOW, HYSTERESIS = 16, 1000, 2
MIN_SCALE = 1  # min_loss_scale


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


@dataclass
class LossScaler:
    """The scaler's state between steps."""

    scale: float = 2.0**SCALE_POWER
    window: int = SCALE_WINDOW
    delayed_shift: int = HYSTERESIS
    hysteresis: int = HYSTERESIS
    iteration: int = 0
    last_overflow: int = -1

    def update(self, overflow: bool) -> Skip | None:
        """One step: what the scaler did about it when the step is skipped."""
        skip: Skip | None = None
        if overflow:
            if self.delayed_shift == 1 or self.hysteresis == 1:
                skip = ScaleReduced(self.scale, max(self.scale / 2, MIN_SCALE))
                self.scale = skip.reduced_to
            else:
                skip = HysteresisSpent(self.scale, self.hysteresis, self.hysteresis - 1)
                self.hysteresis = skip.left
            self.last_overflow = self.iteration
        elif (self.iteration - self.last_overflow) % self.window == 0:
            self.hysteresis = self.delayed_shift
            self.scale *= 2
        self.iteration += 1
        return skip
