"""The HF Trainer's checkpoint writer as an event sink, without a job: what
it writes for a Checkpoint event is what `find` resumes from, with the log
history the Trainer keeps (trainer.py `_maybe_log_save_evaluate` and `log`
at v4.46.3 and v5.0.0): an entry every logging_steps with the mean loss
since the last one, and one per evaluation."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

from fakerun import checkpoint
from fakerun import events as ev
from fakerun.checkpoint.layouts import Saving
from fakerun.world import identity


def step(n: int, loss: float, grad_norm: float = 1.5) -> ev.Step:
    return ev.Step(n, 10, loss, loss, loss, grad_norm, epoch=1, lr=3e-4)


def saved(step_no: int, time: float) -> ev.Checkpoint:
    return ev.Checkpoint(step_no, 1, f"out/checkpoint-{step_no}", 1, 0, 0, 0.5, time)


def ident_logging_every(every: int, transformers: str = "4.46.3") -> identity.Identity:
    ident = identity.build(5, 1, 2, 10)
    return dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, log_every=every),
                               versions=dataclasses.replace(ident.versions, transformers=transformers))


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_a_checkpoint_event_is_a_checkpoint_find_resumes(tmp_path: Path) -> None:
    ident = ident_logging_every(1)
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident, 5))
    for n, loss in ((1, 3.0), (2, 2.5), (3, 2.25)):
        writer.event(step(n, loss))
    writer.event(saved(2, 1_800_000_000.0))
    writer.event(step(4, 2.0))

    found = checkpoint.find(tmp_path)
    # The seed is the command line's: no file of the Trainer's holds ours.
    assert (found.step, found.seed, found.model, found.time) == (2, None, ident.model.name, 1_800_000_000.0)
    assert [h["step"] for h in found.history] == [1, 2]  # what was logged by the step it was saved at
    state = json.loads((tmp_path / "checkpoint-2" / checkpoint.STATE).read_text())
    assert state["global_step"] == 2 and state["max_steps"] == ident.hyper.total_steps
    ranks = sorted(p.name for p in (tmp_path / "checkpoint-2").glob("rng_state_*.pth"))
    assert ranks == ["rng_state_0.pth", "rng_state_1.pth"]


def test_the_history_logs_interval_means_at_logging_steps(tmp_path: Path) -> None:
    """logging_steps 2: entries at steps 2 and 4 only, each the mean of its
    two steps' losses, round(..., 4) in 4.x; float32 grad norms; epochs as
    floats; evaluations as entries of their own."""
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident_logging_every(2), 5))
    for n, loss in ((1, 3.0), (2, 2.5), (3, 2.25), (4, 2.123456)):
        writer.event(step(n, loss, grad_norm=7.181692116380173))
    writer.event(ev.Validation(4, 1, 2.2, 9.0, 10.0, 80, 0.0))
    entries = [h for h in writer.history if "loss" in h]
    assert [h["step"] for h in entries] == [2, 4]
    assert [h["loss"] for h in entries] == [2.75, round((2.25 + 2.123456) / 2, 4)]
    assert entries[0]["grad_norm"] == 7.181692123413086  # what a float32 tensor holds
    assert all(type(h["epoch"]) is float for h in writer.history)
    evaluation = writer.history[-1]
    assert evaluation["eval_loss"] == f32(2.2) and evaluation["step"] == 4
    assert set(evaluation) == {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
                               "epoch", "step"}


def test_transformers_5_logs_the_mean_unrounded(tmp_path: Path) -> None:
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident_logging_every(2, "5.0.0"), 5))
    for n, loss in ((1, 3.0), (2, 2.123456)):
        writer.event(step(n, loss))
    assert writer.history[0]["loss"] == f32(3.0 + 2.123456) / 2


def test_a_resumed_run_carries_the_history_forward(tmp_path: Path) -> None:
    ident = ident_logging_every(1)
    before = ({"step": 1, "epoch": 0.1, "loss": 3.0, "learning_rate": 3e-4, "grad_norm": 1.5},)
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident, 5, checkpoint.Resume(1, 0.0, tmp_path,
                                                                                      history=before)))
    writer.event(step(2, 2.5))
    writer.event(saved(2, 1_800_000_000.0))
    assert [h["step"] for h in checkpoint.find(tmp_path).history] == [1, 2]
    assert writer.saved_history(1) == before


def test_the_state_keeps_the_arguments_step_counts() -> None:
    """TrainerState.compute_steps: the arguments' counts, a ratio of
    max_steps rounded up, 500 where they are None; eval_steps takes
    logging_steps when evaluating by steps (TrainingArguments.__post_init__)."""
    import dataclasses

    from fakerun.config import script_args
    from fakerun.world.trainer_log import state_steps as counted

    def state_steps(args: tuple[str, ...], name: str, max_steps: int) -> int:
        line = ("--model_name_or_path", "gpt2", *args)  # a Trainer's launch line
        hyper = dataclasses.replace(identity.build(5, 1, 2, max_steps).hyper, total_steps=max_steps)
        return counted(script_args.read("train.py", line).asked.trainer, name, hyper)

    # No Trainer arguments (a bare --style hf): the run's own cadence.
    drawn = dataclasses.replace(identity.build(5, 1, 2, 40).hyper, eval_every=5, save_every=None, log_every=2)
    assert [counted(None, n, drawn) for n in ("logging_steps", "eval_steps", "save_steps")] == [2, 5, 5]
    assert counted(None, "save_steps", dataclasses.replace(drawn, save_every=10)) == 10
    assert state_steps((), "save_steps", 40) == 500
    assert state_steps(("--save_steps", "10"), "save_steps", 40) == 10
    assert state_steps(("--save_steps=0.1",), "save_steps", 45) == 5
    assert state_steps(("--logging_steps", "5"), "eval_steps", 40) == 500
    assert state_steps(("--logging_steps", "5", "--eval_strategy", "steps"), "eval_steps", 40) == 5
    assert state_steps(("--evaluation_strategy", "steps", "--eval_steps", "8"), "eval_steps", 40) == 8
