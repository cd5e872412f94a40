"""Where a resumed run's loss curve starts: the checkpoint's last logged
loss. A real resume reruns the same command, and --resume takes the seed
from the command line; a run of another seed draws another curve, which is
scaled to pass through the loss the checkpoint logged last (its log_history),
so the resumed run's first logged loss carries on from the checkpoint's. A
run of the same seed logs that loss itself: its scale is exactly 1, and the
resumed run repeats the uninterrupted one's losses to the bit."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fakerun.world import physics

if TYPE_CHECKING:
    from fakerun.world.identity import Identity

# How far a logged loss may be from the curve's and still be the curve's:
# transformers 4.x logs round(loss, 4) (trainer.py `_maybe_log_save_evaluate`
# at v4.46.3); and the float32 sum of a logging interval's losses is a few
# ulps off the float64 one.
ROUNDING = 5e-5
RELATIVE = 1e-6


def loss_scale(ident: Identity, history: tuple[dict[str, Any], ...]) -> float:
    """The factor on `ident`'s losses that puts its curve through the last
    logged training loss of `history` (1.0 where there is none, or where the
    curve already passes through it)."""
    logged = [h for h in history if _finite(h.get("loss"))]
    if not logged:
        return 1.0
    last = logged[-1]
    before = [h["step"] for h in logged[:-1]]
    # The interval the loss is the mean of: since the entry before (since the
    # start, for the first); a run resumed in between logged its first loss
    # over less, and the scale then differs from 1 by a little.
    start = min(before[-1], last["step"] - 1) if before else 0
    ours = interval_mean(ident, max(0, start), last["step"])
    if ours <= 0 or abs(ours - last["loss"]) <= ROUNDING + RELATIVE * ours:
        return 1.0
    # Another seed's: its trend (not its own noisy interval, whose noise would
    # add to the logged loss's) put through the logged loss.
    trend = [physics.trend_loss(ident, s) for s in range(max(0, start) + 1, last["step"] + 1)]
    return float(last["loss"]) / (sum(trend) / len(trend))


def interval_mean(ident: Identity, after: int, through: int) -> float:
    """The mean over steps (after, through] of the run's loss (the mean of
    the ranks' micro-batch losses): what the Trainer logs at `through`."""
    steps = range(after + 1, through + 1)
    ranks = range(ident.world)
    return sum(sum(physics.local_loss(ident, r, s) for r in ranks) / ident.world for s in steps) / len(steps)


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)
