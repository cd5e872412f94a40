"""A resumed run's loss curve carries on from its checkpoint's last logged
loss (checkpoint/anchor.py): exactly as it was under the seed that wrote it,
put through that loss under another."""

from __future__ import annotations

from fakerun.checkpoint import anchor
from fakerun.world import physics
from fakerun.world.identity import build


def logged(ident, every: int, through: int, digits: int | None = 4) -> tuple[dict, ...]:
    """The Trainer's log_history of `ident`'s run: interval means every `every` steps."""
    out = []
    for end in range(every, through + 1, every):
        mean = anchor.interval_mean(ident, end - every, end)
        out.append({"loss": round(mean, digits) if digits else mean, "step": end, "epoch": 0.1})
    return tuple(out)


def test_the_run_that_wrote_the_history_is_not_rescaled():
    ident = build(10, 1, 2, 40, model="Llama-3.2-3B")
    assert anchor.loss_scale(ident, logged(ident, 4, 20)) == 1.0  # 4.x: round(loss, 4)
    assert anchor.loss_scale(ident, logged(ident, 4, 20, digits=None)) == 1.0  # 5.x: unrounded


def test_another_seeds_curve_is_put_through_the_logged_loss():
    first, other = build(10, 1, 2, 40, model="Llama-3.2-3B"), build(11, 1, 2, 40, model="Llama-3.2-3B")
    history = logged(first, 4, 20)
    scale = anchor.loss_scale(other, history)
    assert scale != 1.0
    trend = sum(physics.trend_loss(other, s) for s in range(17, 21)) / 4
    assert abs(scale * trend - history[-1]["loss"]) < 1e-12


def test_no_logged_loss_no_scale():
    ident = build(10, 1, 2, 40)
    assert anchor.loss_scale(ident, ()) == 1.0
    assert anchor.loss_scale(ident, ({"eval_loss": 2.0, "step": 4},)) == 1.0
