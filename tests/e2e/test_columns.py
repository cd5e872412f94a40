"""The seeds' layout fits the terminal: at 80 columns every line the training
script prints (banner, init, step blocks, NCCL report, GPU box, validation,
checkpoint, export, summary) fits with its rank prefix; on a wider terminal
the layout takes up to 200 columns instead of wrapping at 80. What the real
tools print (torchrun's warnings, NCCL's INFO lines, c10's and Python's
tracebacks, the failure box) is theirs, as wide as they make it."""

from __future__ import annotations

import re
import unicodedata

import pytest

from tests.e2e.test_simulation import FIXED, clean_env

PREFIX = re.compile(r"^\[[a-z-]+\d+\]:")  # the tee prefix: torchrun's [{role}{local_rank}]:, or a template's
HOST = re.compile(r"^[a-z0-9-]+: ")  # the local cluster's pdsh-style label of a node's line
THEIRS = ("NCCL INFO", "NCCL WARN", "NCCL version")

RUNS = {
    "one GPU": ("--nproc", "1", "--max-steps", "24"),
    "8 GPUs": ("--nproc", "8", "--max-steps", "24"),
    "16 ranks, two-digit prefixes": ("--nproc", "16", "--max-steps", "12", "--gpu", "NVIDIA H100 80GB HBM3"),
    "16 ranks on 2 nodes": ("--nodes", "2", "--nproc", "8", "--no-theatre", "--max-steps", "12",
                            "--gpu", "NVIDIA H100 80GB HBM3"),
    "a failure": ("--nproc", "4", "--max-steps", "24", "--scenario", "nan-loss", "--fail-step", "16"),
    "loss spikes": ("--nproc", "4", "--max-steps", "24", "--scenario", "loss-spike"),
    "a fine-tune, another role": ("--nproc", "2", "--max-steps", "24", "--tee", "3", "--role", "trainer",
                                  "--style", "torchrun", "train.py", "--model_name_or_path", "Qwen/Qwen2.5-0.5B"),
}


def cells(text: str) -> int:
    """Display columns (the box-drawing characters and '━' are one each)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def layout_lines(stdout: str) -> list[str]:
    """The training script's lines, each as its node's terminal shows it
    (the prefix kept; a merged stream's host label, not a node's, dropped)."""
    lines = []
    for raw in stdout.splitlines():
        line = HOST.sub("", raw) if not PREFIX.match(raw) else raw
        text = PREFIX.sub("", line)
        if PREFIX.match(line) and not text.startswith("[rank") and not any(t in text for t in THEIRS):
            lines.append(line)
    return lines


def run_at(runner, columns: int, args: tuple[str, ...], **environ: str) -> list[str]:
    env = clean_env() | {"COLUMNS": str(columns), **environ}
    job = runner.start(*FIXED, "--output", "plain", *args, env=env)
    job.wait(timeout=120)
    lines = layout_lines(job.stdout)
    assert any("Training Summary" in x or "Loss:" in x for x in lines), job.stderr[-2000:]
    return lines


@pytest.mark.parametrize("args", RUNS.values(), ids=RUNS.keys())
def test_every_line_of_the_layout_fits_80_columns_with_its_prefix(runner, args):
    lines = run_at(runner, 80, args)
    wide = [(cells(x), x) for x in lines if cells(x) > 80]
    assert not wide, wide
    # Nothing was cut to fit: the step block and the box are whole.
    assert any("| Step " in x for x in lines) and any("ETA: " in x for x in lines)


def test_a_prefix_template_takes_its_own_width(runner):
    """torchrun's TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE: the layout makes room for the prefix it gives."""
    lines = run_at(runner, 80, RUNS["8 GPUs"], TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE="[${role_name}-r${rank}]:")
    assert lines and all(x.startswith("[default-r0]:") for x in lines)
    assert max(cells(x) for x in lines) <= 80


@pytest.mark.parametrize("args", [RUNS["8 GPUs"], RUNS["16 ranks on 2 nodes"]], ids=["8 GPUs", "2 nodes"])
def test_a_wider_terminal_gets_wider_lines_up_to_200_columns(runner, args):
    narrow, wide = run_at(runner, 80, args), run_at(runner, 200, args)
    assert max(cells(x) for x in wide) <= 200
    assert max(cells(x) for x in wide) > 120
    # The same content in fewer lines: a step block's figures on one line, a node's GPUs in one row.
    assert len(wide) < len(narrow)
    assert any("| Step:" in x and "Throughput:" in x for x in wide)
    box_rows = [x for x in wide if "°C |" in x]
    assert box_rows and all(x.count("°C") == 8 for x in box_rows)
    def step_bar(lines: list[str]) -> int:  # the longest (a finished epoch's) step header bar
        return max(x.count("━") for x in lines if "| Step " in x)

    assert step_bar(wide) > step_bar(narrow)


def test_piped_output_keeps_80_columns(runner):
    env = {k: v for k, v in clean_env().items() if k != "COLUMNS"}
    job = runner.start(*FIXED, "--output", "plain", *RUNS["8 GPUs"], env=env)
    job.wait(timeout=120)
    lines = layout_lines(job.stdout)
    assert lines and max(cells(x) for x in lines) <= 80
    assert max(cells(x) for x in lines) > 70  # laid out for 80, not for less
