"""The training model: pure functions of (seed, rank, step).

Every random draw comes from an RNG seeded by (seed, rank, purpose, step),
so any process (a rank, the coordinator, a test) recomputes the same value.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Wall-clock pacing of one step at --speed 1.
STEP_SECONDS = 0.25


def rng(seed: int, *purpose: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed: stable across runs
    # and independent of PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in (seed, *purpose)))


@dataclass(frozen=True)
class LossModel:
    """Power-law decay towards a floor, with per-rank noise."""

    initial: float
    floor: float
    alpha: float
    noise: float

    @classmethod
    def for_seed(cls, seed: int) -> LossModel:
        r = rng(seed, "loss-model")
        floor = r.uniform(1.6, 2.4)
        return cls(initial=r.uniform(9.5, 11.5), floor=floor, alpha=r.uniform(0.45, 0.65),
                   noise=r.uniform(0.015, 0.03))

    def trend(self, step: int) -> float:
        return self.floor + (self.initial - self.floor) * (1.0 + step / 8.0) ** -self.alpha

    def local(self, seed: int, rank: int, step: int) -> float:
        """This rank's micro-batch loss: the trend times multiplicative noise."""
        eps = rng(seed, "loss", rank, step).gauss(0.0, 1.0)
        return self.trend(step) * math.exp(self.noise * eps)


def local_grad_norm(seed: int, rank: int, step: int) -> float:
    """Grad norm: large and spiky early, settling near 1."""
    r = rng(seed, "grad-norm", rank, step)
    base = 0.9 + 6.0 / math.sqrt(1.0 + step)
    return base * math.exp(0.12 * r.gauss(0.0, 1.0))


def local_metrics(seed: int, rank: int, step: int) -> tuple[float, float]:
    return LossModel.for_seed(seed).local(seed, rank, step), local_grad_norm(seed, rank, step)


def step_seconds(speed: float) -> float:
    return 0.0 if speed == 0 else STEP_SECONDS / speed
