"""A run stopped early (--exit-after-time) in each framework's layout: the
step it stopped at shows as that framework shows its last step, and the end
of training says what the framework says then, never that max_steps was
reached or that training ran its course.

- transformers' Trainer (a callback setting control.should_training_stop):
  no log dict off logging_steps, but the bar stops at the step and closes
  there, "K/400"; speed_metrics counts the planned samples and steps.
- Lightning's Trainer(max_time=...): its Timer's "Time limit reached" line;
  the bar keeps its last refresh.
- Megatron's --exit-duration-in-mins: save, "exiting program after N
  minutes", sys.exit (no final evaluation, no "after training is done").
- DeepSpeed says nothing of a stop: the script logs the step's loss; the
  checkpoint's tag names the step.
The same run, complete, says none of the early-stop texts, so each check can fail."""

from __future__ import annotations

import re
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.protocol import tags
from fakerun.render.styles import renderer_for
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world import identity, styles
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock
from fakerun.world.settings import Flags, resolve

T0 = 1_767_225_600.0
STEPS = 400


def ident() -> identity.Identity:
    # Seed 2: a fine-tune, whose epochs (79 steps) tell a step's epoch figure from its neighbours'.
    return identity.build(2, 1, 2, STEPS, asked=identity.Asked(log_every=10))


def stop_step(i: identity.Identity) -> int:
    """A step no layout logs by its interval, inside the first epoch."""
    step = 2 * i.hyper.log_every + 3
    assert step % i.hyper.log_every and step < i.hyper.steps_per_epoch
    return step


def timeline(i: identity.Identity, stop_at: int | None) -> list:
    """The coordinator's events of a run that the launcher stops after
    `stop_at` (None: it runs to the end, validating at each epoch's end)."""
    clock = VirtualClock(T0 + 30, UTC)
    t = Timeline(i, clock)
    out: list = []

    def done(tag: str, op: str, step: int, values_of, sim_s: float = 0.0, numel: int = 0, stop: bool = False):
        contributions = {r: values_of(r) for r in range(i.world)}
        width = len(contributions[0])
        result = [sum(c[k] for c in contributions.values()) / i.world for k in range(width)]
        events, _, _ = t.on_collective(Completed(tag, op, step, numel, {r: sim_s for r in range(i.world)},
                                                 contributions, result, 0), stop)
        out.extend(events)

    def end_of_epoch(step: int) -> None:
        done(tags.PHASE_VALIDATION, "barrier", 0, lambda r: [])
        done(tags.VALIDATION, "all_reduce", step, lambda r: [sim.local_val_loss(i, r, step)], sim.eval_seconds(i))
        done(tags.phase("checkpoint"), "barrier", 0, lambda r: [])
        done(tags.CHECKPOINT, "barrier", step, lambda r: [], sim.checkpoint_seconds(i))

    done(tags.PHASE_TRAIN, "barrier", 0, lambda r: [])
    last = stop_at or i.hyper.total_steps
    for step in range(1, last + 1):
        done(tags.TRAIN_STEP, "all_reduce", step,
             lambda r, s=step: [sim.local_loss(i, r, s), sim.local_grad_norm(i, r, s)],
             sim.compute_seconds(i, step), sim.grad_numel(i), stop=step == stop_at)
        if step == last or step % i.hyper.steps_per_epoch == 0:
            end_of_epoch(step)
    done(tags.phase("export"), "barrier", 0, lambda r: [])
    done(tags.EXPORT, "barrier", 0, lambda r: [], sim.export_seconds(i))
    done(tags.PHASE_SUMMARY, "barrier", 0, lambda r: [])
    return out


def script_lines(style: str, stop_at: int | None) -> list[str]:
    """Every rank's script lines of the run, in `style`."""
    i = ident()
    formatter = EventFormatter(tz=UTC, script=renderer_for(styles.parse(style), 100, UTC), ident=i,
                               settings=resolve(Flags(), {}, drop_in=True))
    events = [ev.RunIdentity(i), ev.RendezvousComplete(i.world, list(range(i.world)), [4100, 4101]),
              *(ev.Phase("init", stage, 0, T0 + k) for k, stage in enumerate(("nccl", "model", "tokenizer",
                                                                                "dataset"))),
              *timeline(i, stop_at)]
    return [line.text for e in events for line in formatter.lines(e) if line.rank is not None]


def the_stopped_step(stop_at: int) -> ev.Step:
    return next(e for e in timeline(ident(), stop_at) if isinstance(e, ev.Step) and e.step == stop_at)


def test_the_timeline_marks_the_step_it_stopped_at():
    k = stop_step(ident())
    steps = [e for e in timeline(ident(), k) if isinstance(e, ev.Step)]
    assert [s.step for s in steps if s.stopped] == [k] and steps[-1].step == k


def test_hf_the_bar_stops_and_closes_at_the_step_with_the_planned_speed_metrics():
    k = stop_step(ident())
    lines = script_lines("hf", k)
    bars = [x for x in lines if re.search(r"\| \d+/400 \[", x)]
    assert bars[-2].split("|")[2].startswith(f" {k}/400 ") and bars[-1].split("|")[2].startswith(f" {k}/400 ")
    assert not any(f"{k}/{k} " in x for x in lines)  # the bar keeps its total
    assert "Training completed. Do not forget to share your model on huggingface.co/models =)" in lines
    [stats] = [x for x in lines if "train_runtime" in x]
    runtime = float(re.search(r"'train_runtime': ([\d.]+)", stats)[1])
    assert f"'train_steps_per_second': {round(STEPS / runtime, 3)}" in stats  # speed_metrics: state.max_steps
    assert f"'epoch': {round(k / ident().hyper.steps_per_epoch, 2)}" in stats
    assert not any(x.startswith("{'loss'") and f"'epoch': {round(k / ident().hyper.steps_per_epoch, 2)}" in x
                   for x in lines)  # no log dict off logging_steps


def test_lightning_says_its_time_limit_and_keeps_the_bar_at_its_last_refresh():
    i, k = ident(), stop_step(ident())
    lines = script_lines("lightning", k)
    stopped = the_stopped_step(k)
    train_start = next(e.time for e in timeline(i, k) if isinstance(e, ev.Phase) and e.name == "train")
    elapsed = int(stopped.time - train_start)
    h, m, s = elapsed // 3600, elapsed // 60 % 60, elapsed % 60
    assert f"Time limit reached. Elapsed time is {h}:{m:02d}:{s:02d}. Signaling Trainer to stop." in lines
    assert not any("`Trainer.fit` stopped: `max_steps=" in x for x in lines)
    refreshed = (k // i.hyper.log_every) * i.hyper.log_every * i.hyper.grad_accum
    last_bar = [x for x in lines if x.startswith("Epoch 0:")][-1]
    assert f"| {refreshed}/{i.hyper.steps_per_epoch * i.hyper.grad_accum} [" in last_bar
    assert f"train_loss={stopped.loss:.3g}"[:15] in last_bar  # the loss logged last, the stopped step's


def test_megatron_exits_after_its_duration_with_no_final_evaluation():
    k = stop_step(ident())
    lines = script_lines("megatron", k)
    exits = [x for x in lines if x.startswith("[exiting program after ")]
    assert len(exits) == 1 and re.match(r"\[exiting program after \d+\.\d+ minutes\] datetime: ", exits[0])
    assert lines.index(exits[0]) > max(n for n, x in enumerate(lines) if "successfully saved checkpoint" in x)
    assert not any("after training is done" in x or "on validation set" in x for x in lines)
    assert not any("exiting program after receiving SIGTERM" in x for x in lines)


def test_deepspeed_the_script_logs_the_step_it_stopped_at():
    k = stop_step(ident())
    lines = script_lines("deepspeed", k)
    assert any(x.endswith(f"Loss: {the_stopped_step(k).loss:.4f}") for x in lines)
    assert any(f"global_step{k}" in x for x in lines)


@pytest.mark.parametrize("style,said", [
    ("hf", "Training completed."), ("lightning", "`Trainer.fit` stopped: `max_steps=400` reached."),
    ("megatron", "[after training is done]"),
])
def test_a_complete_run_says_none_of_it(style, said):
    lines = script_lines(style, None)
    assert any(said in x for x in lines)
    assert not any("Time limit reached" in x or "exiting program after" in x for x in lines)
    if style == "hf":
        assert [x for x in lines if re.search(r"\| \d+/400 \[", x)][-1].startswith("\r100%|██████████| 400/400 [")
