"""The run's cadences and LR schedules as the scripts' arguments set them:
validation and checkpoint each on their own interval (Hyper), the decay
each framework names, and the store that writes any framework's layout."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from fakerun.checkpoint import layouts, store
from fakerun.world import identity
from fakerun.world import physics as sim


def _ident(**hyper: object) -> identity.Identity:
    ident = identity.build(7, 1, 8, total_steps=100)
    return dataclasses.replace(ident, hyper=dataclasses.replace(ident.hyper, **hyper))


def test_eval_and_save_on_their_own_intervals():
    h = _ident(eval_every=0, save_every=30, eval_at_end=False).hyper
    assert h.eval_steps() == [] and h.evaluations == 0
    assert not any(h.evaluates_after(s) for s in range(1, 101))
    assert h.save_steps() == [30, 60, 90, 100]
    assert [s for s in range(1, 101) if h.saves_after(s)] == h.save_steps()


def test_a_save_follows_each_validation_unless_told_otherwise():
    h = _ident(eval_every=25).hyper
    assert h.eval_steps() == h.save_steps() == [25, 50, 75, 100]
    assert _ident(eval_every=25, save_every=0, save_at_end=False).hyper.save_steps() == []


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_lr_progress_is_the_integral_of_the_schedule(decay: str):
    ident = _ident(decay=decay, warmup_steps=10, max_lr=3e-4, min_lr=3e-5)
    # The closed form against a midpoint sum of learning_rate over unit steps.
    total = sum(sim.learning_rate(ident, s) for s in range(1, 101)) / 3e-4
    assert sim.lr_progress(ident, 100) == pytest.approx(total, rel=0.02)


def test_the_decays_end_where_they_say():
    for decay, end in (("cosine", 3e-5), ("linear", 3e-5), ("constant", 3e-4)):
        ident = _ident(decay=decay, warmup_steps=10, max_lr=3e-4, min_lr=3e-5)
        assert sim.learning_rate(ident, 100) == pytest.approx(end)
        assert sim.learning_rate(ident, 10) == pytest.approx(3e-4)
    linear = _ident(decay="linear", warmup_steps=10, max_lr=3e-4, min_lr=0.0)
    assert sim.learning_rate(linear, 55) == pytest.approx(1.5e-4)  # halfway down, in a straight line


def test_write_takes_nested_names_any_target_and_a_time(tmp_path: Path):
    target = tmp_path / "iter_0000004"
    store.write(target, {"mp_rank_00/model_optim_rng.pt": b"x", "common.pt": b"y"}, mtime=1_700_000_000.0,
                last="common.pt")
    assert (target / "mp_rank_00" / "model_optim_rng.pt").read_bytes() == b"x"
    assert os.stat(target / "common.pt").st_mtime == 1_700_000_000.0
    assert os.stat(target).st_mtime == 1_700_000_000.0
    assert [p.name for p in tmp_path.iterdir()] == ["iter_0000004"]  # no temporary left


def test_write_file_replaces_whole(tmp_path: Path):
    target = tmp_path / "latest_checkpointed_iteration.txt"
    store.write_file(target, b"4")
    store.write_file(target, b"8")
    assert target.read_bytes() == b"8"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_dead_writers_temp_file_is_swept(tmp_path: Path):
    import socket
    dead = tmp_path / f".latest.tmp-{2**22 + 12345}@{socket.gethostname()}-abcd1234"
    dead.write_bytes(b"4")
    anyones = tmp_path / ".latest.tmp-abcd1234"
    anyones.write_bytes(b"4")
    assert store.sweep_stale(tmp_path, now=0.0) == [dead.name]
    assert anyones.exists()


def test_a_style_without_its_own_layout_writes_the_trainers(tmp_path: Path):
    from fakerun.checkpoint.writer import CheckpointWriter
    ident = _ident()
    saving = layouts.Saving(tmp_path, ident, 7)
    # The default style has its own now (checkpoint/torchrun.py): a name no layout claims stands for one without.
    assert isinstance(layouts.writer_for("no-such-style", saving), CheckpointWriter)
    assert isinstance(layouts.writer_for("hf", saving), CheckpointWriter)
    from fakerun.checkpoint.torchrun import TorchrunWriter
    assert isinstance(layouts.writer_for("torchrun", saving), TorchrunWriter)
