"""--style: the same run in another framework's conventions. A golden log per
style and version, every line of it matched against the real formats (the
frameworks' own sources at the pinned versions, as each style's module in
fakerun.render.styles cites them), and the losses it prints equal to the
JSONL stream's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.e2e.test_simulation import FIXED, assert_golden, clean_env

GOLDEN = Path(__file__).parent / "golden"
RANK = re.compile(r"^\[default(\d+)\]:(.*)$")
HEADER_SPLIT = re.compile(r"(?=\[default\d+\]:)")
NCCL = re.compile(r"^([\w.-]+:\d+:\d+ \[\d+\] NCCL (INFO|WARN) |NCCL version \d+\.\d+\.\d+\+cuda\d+\.\d+$)")
# torch's own warnings through c10 logging, from every rank (ProcessGroupNCCL's).
C10 = re.compile(r"^\[rank\d+\]:\[W\d{3,4} \d\d:\d\d:\d\d\.\d{9} ProcessGroupNCCL\.cpp:\d+\] ")
NUM = r"\d{1,3}(?:,\d{3})*"
# The rate is tqdm's f'{rate:5.2f}' (tqdm/std.py format_meter): at least five wide, wider from 100 s/it on;
# `?it/s` before any (the bar's first print). A bar at position 1 (the Trainer's evaluation bar under its
# training bar) ends each print with tqdm's cursor-up escape (moveto's _term_move_up).
TQDM = re.compile(r"^[ \d]{3}%\|[ ▏▎▍▌▋▊▉█]{10}\| \d+/\d+ \[(\d+:)?\d\d:\d\d<((\d+:)?\d\d:\d\d|\?), "
                  r"([ \d]\d+\.\d\d(s/it|it/s)|\?it/s)\](\x1b\[A)?$")
HF_LINES = [re.compile(p) for p in (
    r"^\*\*\*\*\* Running training \*\*\*\*\*$", rf"^  Num examples = {NUM}$", rf"^  Num Epochs = {NUM}$",
    rf"^  Instantaneous batch size per device = {NUM}$",
    rf"^  Total train batch size \(w\. parallel, distributed & accumulation\) = {NUM}$",
    r"^  Gradient Accumulation steps = \d+$", rf"^  Total optimization steps = {NUM}$",
    rf"^  Number of trainable parameters = {NUM}$", r"^$", r"^\*\*\*\*\* Running Evaluation \*\*\*\*\*$",
    r"^  Num examples = \d+$", r"^  Batch size = \d+$", r"^\{'(loss|eval_loss|train_runtime)': .*\}$",
    # Trainer._save: a checkpoint's, and save_model's into the output dir at the end; the tokenizer's
    # save_pretrained (tokenization_utils_base.py) for a model with one (world/tokenizers.py).
    r"^Saving model checkpoint to \S+$", r"^Configuration saved in \S+/(generation_)?config\.json$",
    r"^tokenizer config file saved in \S+/tokenizer_config\.json$",
    r"^Special tokens file saved in \S+/special_tokens_map\.json$", r"^chat template saved in \S+/chat_template\.jinja$",
    r"^The model is bigger than the maximum size per checkpoint \((5|50)GB\) and is going to be split in \d+ "
    r"checkpoint shards\. You can find where each parameters has been saved in the index located at "
    r"\S+/model\.safetensors\.index\.json\.$", r"^Model weights saved in \S+/model\.safetensors$",
    r"^Training completed\. Do not forget to share your model on huggingface\.co/models =\)$",
    TQDM.pattern, r"^ *(\x1b\[A)?$")]  # tqdm blanks a bar (clear, close without leave) with spaces
V4_FLOAT = r"-?\d+(\.\d+(e-?\d+)?|e-?\d+)"  # a float's repr: 9.7738, 1.5e-05, or a round 3e-05
V5_FLOAT = r"'-?\d+(\.\d+)?(e-?\d+)?'"


def styled_run(runner, style: str, *args: str):
    job = runner.start(*FIXED, "--nproc", "2", "--max-steps", "12", "--style", style, *args, env=clean_env())
    assert job.wait() == 0, job.stderr
    return job


def rank_lines(text: str) -> list[tuple[int, str]]:
    """Every rank's lines. One console line may hold several: where torch's tee
    read a rank's file mid-line (a tqdm redraw, no newline yet), the next
    read's header follows on the same line (render/tail.py)."""
    pieces = [p for line in text.splitlines() for p in HEADER_SPLIT.split(line)]
    return [(int(m.group(1)), m.group(2)) for m in map(RANK.match, pieces) if m]


@pytest.mark.parametrize("style,golden", [("hf", "hf4.46_seed5_2x12.txt"), ("hf@5", "hf5_seed5_2x12.txt")])
def test_hf_golden_and_every_line_in_a_real_format(runner, style, golden):
    job = styled_run(runner, style, "--output", "plain")
    assert_golden(job, GOLDEN / golden)
    script = [line for rank, line in rank_lines(job.stdout + job.stderr) if not NCCL.match(line)
              and not C10.match(line)]
    assert script and all(rank == 0 for rank, line in rank_lines(job.stdout + job.stderr)
                          if not NCCL.match(line) and not C10.match(line))  # only world process zero logs
    unmatched = [line for line in script if not any(p.match(line) for p in HF_LINES)]
    assert not unmatched
    dicts = [line for line in script if line.startswith("{")]
    value = V5_FLOAT if style == "hf@5" else V4_FLOAT
    for line in dicts:
        body = ast.literal_eval(line)
        assert all(re.fullmatch(value, repr(v)) for k, v in body.items()), line
    # transformers v5.0.0's trainer.py prints the same "Train!" block as 4.x (no "Num update steps per epoch")
    assert "Num update steps per epoch" not in job.stderr


@pytest.mark.parametrize("style,nccl,cuda", [("hf", "2.21.5", "12.4"), ("hf@5", "2.27.5", "12.8")])
def test_a_style_pins_one_software_set(runner, style, nccl, cuda):
    job = styled_run(runner, style, "--output", "jsonl")
    versions = job.of("run_identity")[0]["identity"]["versions"]
    assert (versions["nccl"], versions["cuda"]) == (nccl, cuda)
    assert versions["transformers"].startswith("5." if style == "hf@5" else "4.46.")
    plain = styled_run(runner, style, "--output", "plain")
    assert f"NCCL version {nccl}+cuda{cuda}" in plain.stdout


@pytest.mark.parametrize("style", ["hf", "hf@5"])
def test_the_losses_printed_are_the_runs(runner, style):
    events = styled_run(runner, style, "--output", "jsonl")
    plain = styled_run(runner, style, "--output", "plain")
    printed = [ast.literal_eval(line)["loss"] for _, line in rank_lines(plain.stdout) if line.startswith("{'loss'")]
    steps = events.of("step")
    every = events.of("run_identity")[0]["identity"]["hyper"]["log_every"]
    logged = [s["loss"] for s in steps if s["step"] % every == 0 or s["step"] == s["max_steps"]]
    assert len(printed) == len(logged) > 0
    for shown, loss in zip(printed, logged, strict=True):
        # The Trainer rounds the loss to 4 places; 5.x then prints 4 significant digits.
        expected = f"{round(loss, 4):.4g}" if style == "hf@5" else round(loss, 4)
        assert shown == expected


def test_an_oom_under_hf_fails_through_the_trainer(runner):
    job = styled_run_failing(runner, "hf", "--scenario", "cuda-oom", "--fail-rank", "1", "--fail-step", "4")
    # The traceback's lines ("[rank1]: "), not c10's warnings ("[rank1]:[W...").
    frames = [line for rank, line in rank_lines(job.stderr) if rank == 1 and line.startswith("[rank1]: ")]
    assert frames[0] == "[rank1]: Traceback (most recent call last):"
    assert '[rank1]:   File "/workspace/train.py", line 630, in main' in frames
    assert any(re.fullmatch(r'\[rank1\]:   File "\S+/transformers/trainer\.py", line 2481, in _inner_training_loop',
                            line) for line in frames)
    assert frames[-1].startswith("[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ")


def styled_run_failing(runner, style: str, *args: str):
    job = runner.start(*FIXED, "--nproc", "2", "--max-steps", "12", "--style", style, "--output", "plain", *args,
                       env=clean_env())
    assert job.wait() == 1, job.stderr
    return job

