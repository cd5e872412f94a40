"""The seeds' lines in the default layout, each from the run's own figures:
memory per GPU from the memory model, validation samples from the timeline's
evaluation, the scheduler's save, the shards' merge where there are shards,
NCCL's ring and tree latencies from its tuner's table; and the line breaking
that keeps them within the width."""

from __future__ import annotations

import dataclasses
import io
import os
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.render import rich_view
from fakerun.render.lines import cells, fit
from fakerun.render.renderer import width_of
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.world import identity
from fakerun.world import physics as sim
from fakerun.world.memory import Parallelism, state_bytes
from tests.unit.test_sim import run_timeline

H100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA L40S"


def layout(ident: identity.Identity, width: int = 100) -> PytorchLines:
    out = PytorchLines(width, UTC)
    out.routed(ev.RunIdentity(ident))
    return out


def texts(out: PytorchLines, event: object) -> list[str]:
    return [line.text for line in out.lines(event)]


# -- breaking lines ------------------------------------------------------------
def test_fit_breaks_between_parts_only_and_drops_the_separator_at_a_break():
    parts = ["Loss: 2.1000", "PPL: 8.17", "LR: 1.00e-04", "Grad Norm: 0.900"]
    assert fit(parts, 200, "  ") == ["  Loss: 2.1000 | PPL: 8.17 | LR: 1.00e-04 | Grad Norm: 0.900"]
    narrow = fit(parts, 30, "  ", "    ")
    assert narrow == ["  Loss: 2.1000 | PPL: 8.17", "    LR: 1.00e-04", "    Grad Norm: 0.900"]
    assert all(cells(x) <= 30 for x in narrow)


def test_cells_counts_the_bar_and_box_characters_as_one_column():
    assert cells("┌─ GPU ━━━ 72°C │") == 17
    assert cells("中文") == 4


@pytest.mark.parametrize("width", [68, 69, 120, 189])  # 80 less [default15]: or [default7]:
def test_every_banner_and_init_line_fits_the_width(width):
    ident = identity.build(5, 2, 8, 400, gpu=H100)
    out = layout(ident, width)
    lines = [x.text for x in out.banner(0.0)]
    for stage in ("nccl", "model", "tokenizer", "dataset"):
        lines += texts(out, ev.Phase("init", stage, 0, 0.0))
    lines += texts(out, ev.Phase("train", "", 0, 0.0))
    assert max(cells(x) for x in lines) <= width
    joined = " ".join(x.split("] ", 1)[-1].strip() for x in lines)
    # Broken, never cut: each figure is still there whole.
    assert f"Driver: {ident.versions.driver}" in joined and "peak LR" in joined and "tokens/step" in joined


# -- the seeds' missing lines ----------------------------------------------------
def test_memory_per_gpu_is_the_memory_models_state_of_one_gpu():
    ident = identity.build(5, 1, 8, 400, gpu=H100)
    lines = texts(layout(ident, 150), ev.Phase("init", "model", 0, 0.0))
    [line] = [x for x in lines if "Memory per GPU:" in x]
    state = state_bytes(ident.model, ident.parallel)
    assert (f"{state['weights'] / 1e9:.1f} GB model + {state['grads'] / 1e9:.1f} GB grads "
            f"+ {state['optimizer'] / 1e9:.1f} GB optimizer") in line


def test_one_gpus_model_is_the_whole_models_bf16_size():
    ident = identity.build(5, 1, 1, 40)
    lines = texts(layout(ident, 150), ev.Phase("init", "model", 0, 0.0))
    bf16 = f"{2 * ident.model.params / 1e9:.1f} GB"
    assert any(f"(bf16: {bf16})" in x for x in lines)
    assert any(f"Memory per GPU: {bf16} model" in x for x in lines)


def test_validation_samples_are_what_each_evaluation_runs():
    ident = identity.build(5, 1, 4, 40)
    lines = texts(layout(ident), ev.Phase("init", "dataset", 0, 0.0))
    [validation] = [e for e in run_timeline(ident) if isinstance(e, ev.Validation)][:1]
    assert validation.samples == ident.hyper.eval_batches * ident.hyper.micro_batch * ident.parallel.dp
    assert f"  Validation samples: {validation.samples:,}" in [x.split("] ", 1)[1] for x in lines if "] " in x]


def test_a_checkpoint_saves_the_scheduler_state_too():
    ident = identity.build(5, 1, 4, 40)
    lines = texts(layout(ident), ev.Checkpoint(20, 1, "checkpoints/x/epoch_1_step_20/", 1, 10**9, 6 * 10**9,
                                               12.0, 0.0))
    assert lines.index("  Saving scheduler state...") < lines.index("  Path: checkpoints/x/epoch_1_step_20/")


@pytest.mark.parametrize(("tp", "pp", "dp", "zero", "shards"), [
    (1, 1, 8, 1, 0), (1, 1, 8, 2, 0),  # every rank holds the whole bf16 weights: nothing to merge
    (1, 1, 8, 3, 8), (2, 1, 4, 1, 2), (2, 2, 2, 3, 8), (1, 4, 2, 2, 4),
])
def test_the_export_merges_shards_only_where_the_weights_are_sharded(tp, pp, dp, zero, shards):
    ident = dataclasses.replace(identity.build(5, 1, 8, 40), parallel=Parallelism(tp, pp, dp, zero))
    lines = texts(layout(ident), ev.Phase("export", "", 40, 0.0))
    merging = [x for x in lines if "Merging shards:" in x]
    if not shards:
        assert not merging and not any("Consolidating" in x for x in lines)
    else:
        assert merging == [merging[0]] and merging[0].endswith(f"100% | {shards}/{shards}")


def test_a_single_gpu_merges_nothing():
    ident = identity.build(5, 1, 1, 40)
    assert len(texts(layout(ident), ev.Phase("export", "", 40, 0.0))) == 1


def test_the_nccl_report_gives_ring_and_tree_latency_beside_the_bus_bandwidth():
    ident = identity.build(5, 2, 8, 40, gpu=H100)
    seconds = sim.allreduce_seconds(ident, sim.grad_numel(ident))
    stats = ev.NcclStats(20, [ev.OpStats("all_reduce", 4, 8 * sim.grad_numel(ident), 1e3 * seconds, 45.0),
                              ev.OpStats("barrier", 2, 8, 0.1, 0.0)], 0.0)
    report = texts(layout(ident, 120), stats)
    assert "[NCCL] Ring latency: 43.4us | Tree latency: 25.2us | Bus bandwidth: 45.0 GB/s" in report
    assert "[NCCL] Calls since last report: 4 all_reduce, 2 barrier" in report


# -- the width -------------------------------------------------------------------
def test_the_layout_takes_80_columns_piped_and_at_most_200():
    assert width_of(io.StringIO(), {}) == 80
    assert width_of(io.StringIO(), {"COLUMNS": "132"}) == 132
    assert width_of(io.StringIO(), {"COLUMNS": "300"}) == 200


def test_the_live_footer_takes_the_terminal_up_to_200_columns(monkeypatch):
    class Tty:
        def fileno(self) -> int:
            return 1

    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((300, 50)))
    assert rich_view._width(Tty()) == 200
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((120, 50)))
    assert rich_view._width(Tty()) == 120
