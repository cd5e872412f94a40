"""The checkpoint writer as an event sink, without a job: what it writes for
a Checkpoint event is what `find` resumes from, with the log history of the
steps before it."""

from __future__ import annotations

import json
from pathlib import Path

from fakerun import checkpoint
from fakerun import events as ev
from fakerun.checkpoint.layouts import Saving
from fakerun.world import identity


def step(n: int, loss: float) -> ev.Step:
    return ev.Step(n, 10, loss, loss, loss, 1.5, epoch=1, lr=3e-4)


def saved(step_no: int, time: float) -> ev.Checkpoint:
    return ev.Checkpoint(step_no, 1, f"out/checkpoint-{step_no}", 1, 0, 0, 0.5, time)


def test_a_checkpoint_event_is_a_checkpoint_find_resumes(tmp_path: Path) -> None:
    ident = identity.build(5, 1, 2, 10)
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident, 5))
    for n, loss in ((1, 3.0), (2, 2.5), (3, 2.25)):
        writer.event(step(n, loss))
    writer.event(saved(2, 1_800_000_000.0))
    writer.event(step(4, 2.0))

    found = checkpoint.find(tmp_path)
    assert (found.step, found.seed, found.model, found.time) == (2, 5, ident.model.name, 1_800_000_000.0)
    assert [h["step"] for h in found.history] == [1, 2]  # what was logged by the step it was saved at
    state = json.loads((tmp_path / "checkpoint-2" / checkpoint.STATE).read_text())
    assert state["global_step"] == 2 and state["max_steps"] == ident.hyper.total_steps
    ranks = sorted(p.name for p in (tmp_path / "checkpoint-2").glob("rng_state_*.pth"))
    assert ranks == ["rng_state_0.pth", "rng_state_1.pth"]


def test_a_resumed_run_carries_the_history_forward(tmp_path: Path) -> None:
    ident = identity.build(5, 1, 2, 10)
    before = ({"step": 1, "epoch": 1, "loss": 3.0, "learning_rate": 3e-4, "grad_norm": 1.5},)
    writer = checkpoint.CheckpointWriter(Saving(tmp_path, ident, 5, checkpoint.Resume(1, 0.0, tmp_path, history=before)))
    writer.event(step(2, 2.5))
    writer.event(saved(2, 1_800_000_000.0))
    assert [h["step"] for h in checkpoint.find(tmp_path).history] == [1, 2]
    assert writer.saved_history(1) == before
