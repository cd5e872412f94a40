"""What Megatron-LM's arguments fix of a run's schedule and cadences, with
Megatron's own defaults for what the launch line leaves out
(megatron/training/arguments.py, identical at core_v0.8.0, core_v0.9.0,
core_v0.10.0 and core_v0.15.0):

- `--lr-decay-style` linear (choices constant, linear, cosine,
  inverse-square-root, WSD), `--min-lr` 0.0, `--lr-warmup-iters` 0, or
  `--lr-warmup-fraction` of the decay, which spans `--lr-decay-iters`
  (`--train-iters` by default: training.py get_optimizer_param_scheduler)
  and holds min_lr after it (optimizer_param_scheduler.py get_lr);
- `--eval-interval` 1000 and `--eval-iters` 100; pretrain() evaluates once
  more after training whatever the interval (training.py);
- `--save-interval`: with `--save`, validate_args asserts it is given
  (`assert args.save_interval is not None`; 0.15 also `> 0`); the script
  saves every that many iterations and once more after training
  (pretrain's `if args.save and iteration % args.save_interval != 0`).
  Without `--save` it saves nothing (fakerun's --output-dir stands for
  --save only on a launch line without Megatron's flags).

And `--load DIR`, how Megatron's users resume: the latest checkpoint its
latest_checkpointed_iteration.txt names; with no tracker file there,
load_checkpoint warns and starts from random (checkpointing.py
_load_base_checkpoint), so the run is a fresh one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakerun.errors import UsageError
from fakerun.world.megatron import TRACKER

DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root", "WSD")
SIMULATED_DECAYS = ("constant", "linear", "cosine")  # physics.learning_rate's
EVAL_INTERVAL, EVAL_ITERS = 1000, 100


@dataclass(frozen=True)
class Given:
    """The launch line's schedule flags (None: not given)."""

    train_iters: int | None = None
    decay_iters: int | None = None  # --lr-decay-iters
    lr: float | None = None
    decay: str | None = None
    min_lr: float | None = None
    warmup_iters: int | None = None
    warmup_fraction: float | None = None
    eval_interval: int | None = None
    eval_iters: int | None = None
    save_interval: int | None = None
    save: bool = False  # --save given


def hyper(given: Given) -> tuple[tuple[str, object], ...]:
    """Hyper's fields as Megatron runs them (identity.Asked.hyper)."""
    decay = given.decay or "linear"
    if decay not in DECAY_STYLES:  # argparse's own words for a bad choice
        choices = ", ".join(repr(c) for c in DECAY_STYLES)
        raise UsageError(f"training script argument --lr-decay-style: invalid choice: {decay!r} "
                         f"(choose from {choices})")
    if decay not in SIMULATED_DECAYS:
        raise UsageError(f"--lr-decay-style {decay}: fakerun simulates the {', '.join(SIMULATED_DECAYS)} "
                         "schedules only")
    if given.save and not given.save_interval:
        raise UsageError("training script argument --save without --save-interval: Megatron's validate_args "
                         "refuses it (assert args.save_interval is not None)")
    min_lr = given.min_lr or 0.0
    if given.lr is not None and min_lr > given.lr:
        raise UsageError(f"training script argument --min-lr {min_lr:g} above --lr {given.lr:g}: Megatron's "
                         "validate_args refuses it (assert args.min_lr <= args.lr)")
    out: list[tuple[str, object]] = [
        ("decay", decay), ("min_lr", min_lr), ("warmup_steps", _warmup(given)),
        ("decay_steps", given.decay_iters), ("save_every", given.save_interval or 0),
        ("save_at_end", given.save), *_evaluations(given)]
    return tuple(out)


def _evaluations(given: Given) -> list[tuple[str, object]]:
    """--eval-iters 0 leaves args.do_valid False: no evaluation at all."""
    if given.eval_iters == 0:
        return [("eval_every", 0), ("eval_at_end", False)]
    every = EVAL_INTERVAL if given.eval_interval is None else given.eval_interval
    return [("eval_every", every), ("eval_at_end", True), ("eval_after_loop", True),
            ("eval_batches", EVAL_ITERS if given.eval_iters is None else given.eval_iters)]


def _warmup(given: Given) -> int:
    """Iterations of warmup. A fraction of the decay that ends between two
    iterations is taken to the nearest (Megatron ramps over the exact
    fraction of samples: the LR of the warmup's last iteration differs by
    less than one iteration's share)."""
    decay_iters = given.decay_iters or given.train_iters
    if given.warmup_fraction is not None and decay_iters:
        return round(given.warmup_fraction * decay_iters)
    return given.warmup_iters or 0


def resume(load: str | None) -> str | None:
    """The checkpoint directory `--load` resumes from, if one was saved there."""
    if load and (Path(load) / TRACKER).is_file():
        return load
    return None
