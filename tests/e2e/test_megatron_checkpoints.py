"""Megatron-LM's checkpoints as its users know them: a pretrain_gpt.py
launch line under fakerun saves, in the pinned megatron-core version's
layout, exactly the files its lines name (NVIDIA/Megatron-LM core_v0.10.0
megatron/training/checkpointing.py save_checkpoint: `iter_{:07d}/`,
latest_checkpointed_iteration.txt; megatron/core/dist_checkpointing: the
torch_dist format's common.pt, __<rank>_<k>.distcp, .metadata and
metadata.json; core_v0.8.0's legacy mp_rank_XX[_YYY]/model_optim_rng.pt),
TP x PP shapes the memory report and the files, and `--load` carries the
loss curve on."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.test_style_megatron import printed_losses
from tests.e2e.test_styles import rank_lines

FIXED = ("--start-time", "2026-01-30T14:23:15", "--speed", "0", "--seed", "5", "--output", "plain", "--tee", "3")
# A 0.4B GPT: eval and save every 5 iterations, the distributed optimizer.
LINE = ("pretrain_gpt.py", "--num-layers", "8", "--hidden-size", "1024", "--num-attention-heads", "8",
        "--seq-length", "2048", "--micro-batch-size", "1", "--global-batch-size", "32", "--lr", "3e-4",
        "--min-lr", "3e-5", "--log-interval", "1", "--eval-interval", "5", "--eval-iters", "2",
        "--save-interval", "5", "--use-distributed-optimizer")
SAVING = re.compile(r"^saving checkpoint at iteration +(\d+) to (\S+) in (torch_dist|torch) format$")
SAVED = re.compile(r"^  successfully saved checkpoint from iteration +(\d+) to (\S+)( \[ t 1/\d, p 1/\d \])?$")


def _run(runner, nproc: int, *args: str, style: tuple[str, ...] = ()):
    job = runner.start(*FIXED, "--nproc", str(nproc), *style, *args)
    assert job.wait() == 0, job.stderr
    return job


def _lines(job) -> list[tuple[int, str]]:
    return rank_lines(job.stdout)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _named(job) -> set[str]:
    """The iteration directories the save lines name, under the directory they name."""
    named = set()
    for _, line in _lines(job):
        if m := SAVING.match(line):
            named.add(f"{m.group(2)}/iter_{int(m.group(1)):07d}")
    return named


def test_tp2_pp2_shapes_the_memory_report_and_each_ranks_files(runner):
    """8 GPUs as TP 2 x PP 2 x DP 2: Megatron's data-parallel rank 0s are
    global ranks 0, 1 (first stage) and 4, 5 (last stage) in its
    tp-cp-ep-dp-pp order; each shard holds a quarter of the layers' weights,
    so the footprint is the shard's; every rank writes its two .distcp files."""
    save = runner.tmp_path / "ck"
    split = _run(runner, 8, "--sparse-checkpoints", *LINE, "--tensor-model-parallel-size", "2",
                 "--pipeline-model-parallel-size", "2", "--train-iters", "10", "--save", str(save))
    whole = _run(runner, 8, *LINE, "--train-iters", "10")
    memory = [(rank, line) for rank, line in _lines(split) if line.startswith("[Rank ")]
    assert [rank for rank, _ in memory] == [0, 1, 4, 5]
    assert all(line.startswith(f"[Rank {rank}] (after 1 iterations) memory (MB)") for rank, line in memory)
    counts = [(rank, line.split("rank ")[1]) for rank, line in _lines(split) if "number of parameters on" in line]
    assert [(rank, text.split(":")[0]) for rank, text in counts] == [(0, "(0, 0)"), (1, "(1, 0)"), (4, "(0, 1)"),
                                                                      (5, "(1, 1)")]
    footprint = [line for _, line in _lines(split) if line.startswith("Theoretical memory footprints")]
    alone = [line for _, line in _lines(whole) if line.startswith("Theoretical memory footprints")]
    assert footprint and alone and footprint != alone
    assert "  successfully saved checkpoint from iteration      10 to " + str(save) + " [ t 1/2, p 1/2 ]" in \
        [line for _, line in _lines(split)]
    assert _named(split) == {f"{save}/iter_0000005", f"{save}/iter_0000010"}
    shards = {f"__{r}_{k}.distcp" for r in range(8) for k in range(2)}
    per_save = {"common.pt", ".metadata", "metadata.json", *shards}
    assert _tree(save) == {"latest_checkpointed_iteration.txt",
                           *(f"iter_{n:07d}/{f}" for n in (5, 10) for f in per_save),
                           "iter_0000005", "iter_0000010"}  # nothing else: no temporaries, no hidden file
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "10"


def test_load_carries_the_loss_curve_on(runner):
    """A run saved at iteration 5 and one launched again with --load pick up
    at 6: the same losses as a run that never stopped, the samples counted on."""
    save = runner.tmp_path / "ck"
    flags = (*LINE, "--tensor-model-parallel-size", "2", "--save", str(save), "--load", str(save))
    first = _run(runner, 2, *flags, "--train-iters", "5")
    assert "WARNING: could not find the metadata file " + str(save / "latest_checkpointed_iteration.txt") in \
        [line for _, line in _lines(first)]
    resumed = _run(runner, 2, *flags, "--train-iters", "10")
    straight = _run(runner, 2, *LINE, "--tensor-model-parallel-size", "2", "--train-iters", "10")
    lines = [line for _, line in _lines(resumed)]
    assert f" loading distributed checkpoint from {save} at iteration 5" in lines
    assert f"  successfully loaded checkpoint from {save} [ t 1/2, p 1/1 ] at iteration 5" in lines
    carried, whole = printed_losses(resumed.stdout), printed_losses(straight.stdout)
    assert sorted(carried) == [6, 7, 8, 9, 10] and carried == {k: v for k, v in whole.items() if k > 5}
    assert any(" iteration        6/      10 | consumed samples:          192 |" in line for line in lines)
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "10"
    assert _tree(save) >= {"iter_0000005/metadata.json", "iter_0000010/metadata.json"}


def test_the_issues_line_saves_megatrons_layout_where_it_says(runner):
    """`--style megatron --output-dir mg` (fakerun's own run): --output-dir is
    --save; the lines and the files agree (issue 20)."""
    mg = runner.tmp_path / "mg"
    job = _run(runner, 2, "--max-steps", "12", "--output-dir", str(mg), style=("--style", "megatron"))
    saved = [m for m in map(SAVED.match, (line for _, line in _lines(job))) if m]
    assert saved and {m.group(2) for m in saved} == {str(mg)}
    assert _named(job) == {f"{mg}/iter_{int(m.group(1)):07d}" for m in saved}
    last = max(int(m.group(1)) for m in saved)
    assert (mg / "latest_checkpointed_iteration.txt").read_text() == str(last)
    assert not [p for p in mg.iterdir() if p.name.startswith("checkpoint-")]


def test_mid_2024_saves_the_legacy_format(runner):
    """core_v0.8.0 saves in the torch format unless --use-dist-ckpt: one
    mp_rank_XX folder per tensor-parallel rank, its model_optim_rng.pt (and
    distrib_optim.pt with the distributed optimizer)."""
    save = runner.tmp_path / "ck"
    job = _run(runner, 2, *LINE, "--tensor-model-parallel-size", "2", "--train-iters", "5", "--save", str(save),
               style=("--style", "megatron@0.8"))
    assert f"saving checkpoint at iteration       5 to {save} in torch format" in [line for _, line in _lines(job)]
    assert _tree(save) == {"latest_checkpointed_iteration.txt", "iter_0000005", "iter_0000005/mp_rank_00",
                           "iter_0000005/mp_rank_01", *(f"iter_0000005/mp_rank_0{t}/{f}" for t in (0, 1)
                                                        for f in ("model_optim_rng.pt", "distrib_optim.pt"))}


def test_the_last_iteration_on_the_interval_is_evaluated_twice(runner):
    """training.py: train() evaluates and saves at iteration 10 (both on their
    interval); pretrain() then prints '[after training is done]', skips the
    save it already has, and evaluates once more on the next validation
    batches ('on validation set'): two blocks, two losses."""
    job = _run(runner, 2, *LINE, "--train-iters", "10", "--save", str(runner.tmp_path / "ck"))
    lines = [line for _, line in _lines(job)]
    blocks = [i for i, line in enumerate(lines) if line.startswith(" validation loss at iteration 10")]
    saved = lines.index(f"  successfully saved checkpoint from iteration      10 to {runner.tmp_path / 'ck'} "
                        "[ t 1/1, p 1/1 ]")
    done = next(i for i, line in enumerate(lines) if line.startswith("[after training is done]"))
    assert len(blocks) == 2 and blocks[0] < saved < done < blocks[1]
    assert lines[blocks[1]].startswith(" validation loss at iteration 10 on validation set |")
    assert lines[blocks[0]].split("|")[1] != lines[blocks[1]].split("|")[1]  # other batches, another loss
    assert sum(line.startswith("saving checkpoint at iteration      10") for line in lines) == 1
