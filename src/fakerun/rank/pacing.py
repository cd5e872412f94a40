"""Pacing: a rank keeps the wall clock with the job's simulated clock.

At --speed N a rank about to enter a collective sleeps until the wall clock
reaches the moment that collective ends in simulated time (the job's clock
at the last release, plus this rank's work, plus the collective's own time),
mapped onto the wall from the Welcome at N simulated seconds a second. The
targets are absolute, so time spent in messages and scheduling never
accumulates into drift, and a rank that waited for the slowest at the last
collective starts from the job's time, not its own sum. The release then
comes when its stamp says: at --speed 1 every printed time is the wall's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Pacer:
    speed: float  # simulated seconds per wall second; 0: no pacing
    collective_s: Callable[[str, int, int], float]  # a collective's simulated time, by (op, numel, step)
    until: float = math.inf  # monotonic: --exit-after-time's end, which pacing never outlasts
    anchor: tuple[float, float] = (0.0, 0.0)  # (monotonic, simulated) when the rank was welcomed
    on: bool = True  # off once training was stopped: the rest goes as fast as it can

    def wait(self, start: float, op: str, numel: int, step: int = 0) -> None:
        """Before a collective whose work started at simulated `start`
        (the last release plus this rank's work since)."""
        if not self.speed or not self.on:
            return
        wall, simulated = self.anchor
        ends = start + self.collective_s(op, numel, step)
        delay = min(wall + (ends - simulated) / self.speed, self.until) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
