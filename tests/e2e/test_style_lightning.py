"""--style lightning: a LightningModule's Trainer.fit under torchrun. A golden
log, every script line matched against Lightning's formats
(Lightning-AI/pytorch-lightning 2.5.0 src/lightning/pytorch/callbacks/
progress/tqdm_progress.py and the lines fakerun.render.styles.lightning
cites), Lightning's who-prints and streams, the losses in the progress bar
equal to the JSONL stream's (to the bar's 3 significant digits), each pinned
version's differences, and an OOM through Lightning's frames."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_styles import GOLDEN, NCCL, assert_golden, rank_lines, styled_run, styled_run_failing

CLOCK = r"(\d+:)?\d\d:\d\d"
METER = rf" +\d+%\|[ ▏▎▍▌▋▊▉█]{{10}}\| (?P<n>\d+)/(?P<total>\d+) \[{CLOCK}<({CLOCK}|\?), +(\d+\.\d\d|\?)it/s"
EPOCH = re.compile(rf"^Epoch (?P<epoch>\d+):{METER}, v_num=\d+, train_loss=(?P<loss>\d+\.\d+|nan\.0)"
                   r"(, val_loss=\d+\.\d+)?\]$")
EVAL = re.compile(rf"^(Sanity Checking|Validation) DataLoader 0:{METER}\]$")
COUNT = r"[\d,.]+ [ KMBT]"
EVERY_RANK = (re.compile(r"^Initializing distributed: GLOBAL_RANK: (\d+), MEMBER: (\d+)/(\d+)$"),
              re.compile(r"^LOCAL_RANK: (\d+) - CUDA_VISIBLE_DEVICES: \[\d+(,\d+)*\]$"))
STDERR_LINES = [*EVERY_RANK, *(re.compile(p) for p in (
    r"^Using bfloat16 Automatic Mixed Precision \(AMP\)$", r"^GPU available: True \(cuda\), used: True$",
    r"^TPU available: False, using: 0 TPU cores$", r"^HPU available: False, using: 0 HPUs$",
    r"^💡 Tip: For seamless cloud (logging and experiment tracking|uploads and versioning), try installing "
    r"\[lit(logger|models)\]\(https://pypi\.org/project/lit(logger|models)/\) to enable "
    r"Lit(Logger|ModelCheckpoint), which .+\.$",
    r"^-+$", r"^distributed_backend=nccl$", r"^All distributed processes registered\. Starting with \d+ processes$",
    r"^$", r"^You are using a CUDA device \('NVIDIA [^']+'\) that has Tensor Cores\. To properly utilize them, you "
    r"should set `torch\.set_float32_matmul_precision\('medium' \| 'high'\)` which will trade-off precision for "
    r"performance\. For more details, read https://pytorch\.org/docs/stable/generated/"
    r"torch\.set_float32_matmul_precision\.html#torch\.set_float32_matmul_precision$",
    r"^\S+/site-packages/lightning/pytorch/utilities/model_summary/model_summary\.py:242: Precision bf16-mixed is "
    r"not supported by the model summary\.  Estimated model size in MB will not be accurate\. Using 32 bits "
    r"instead\.$",
    r"^  \| Name  \| Type +\| Params \| Mode ( \| FLOPs)?$", rf"^0 \| model \| \w+ +\| {COUNT} +\| train( \| 0    )?$",
    rf"^{COUNT} +(Trainable|Non-trainable|Total) params$", r"^[\d,]+\.\d{3} *Total estimated model params size \(MB\)$",
    r"^\d+ +Modules in (train|eval) mode$", r"^0 +Total Flops$",
    r"^`Trainer\.fit` stopped: `max_steps=\d+` reached\.$",
    # The default logger is a CSVLogger (no tensorboard installed): rank 0 warns so.
    r"^\S+/site-packages/lightning/pytorch/trainer/connectors/logger_connector/logger_connector\.py:7[56]: "
    r"Starting from v1\.9\.0, `tensorboardX` has been removed as a dependency of the `lightning\.pytorch` "
    r"package, .+ to enable TensorBoard support by default$"))]
STDOUT_LINES = [EPOCH, EVAL]


def script_lines(text: str) -> list[tuple[int, str]]:
    return [(rank, line) for rank, line in rank_lines(text) if not NCCL.match(line)]


def unmatched(text: str, patterns: list[re.Pattern]) -> list[str]:
    return [line for _, line in script_lines(text) if not any(p.match(line) for p in patterns)]


def test_lightning_golden_and_every_line_in_a_real_format(runner):
    job = styled_run(runner, "lightning", "--output", "plain")
    assert_golden(job, GOLDEN / "lightning_seed5_2x12.txt")
    assert not unmatched(job.stdout, STDOUT_LINES)  # tqdm bars: TQDMProgressBar writes to sys.stdout
    assert not unmatched(job.stderr, STDERR_LINES)  # Lightning's loggers: a bare StreamHandler, stderr
    assert any(EVAL.match(line) for _, line in script_lines(job.stdout))
    assert "`Trainer.fit` stopped: `max_steps=12` reached." in job.stderr


def test_who_prints_what(runner):
    job = styled_run(runner, "lightning", "--output", "plain")
    lines = script_lines(job.stdout + job.stderr)
    for pattern in EVERY_RANK:  # log.info on every rank
        ranks = [(rank, int(m.group(1))) for rank, line in lines if (m := pattern.match(line))]
        assert sorted(rank for rank, _ in ranks) == [0, 1]
        # GLOBAL_RANK and LOCAL_RANK name the rank that prints them (one node here)
        assert all(rank == shown for rank, shown in ranks)
    rest = [rank for rank, line in lines if not any(p.match(line) for p in EVERY_RANK)]
    assert rest and set(rest) == {0}  # rank_zero_info and the bars: global rank 0 only
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in job.stderr


@pytest.mark.parametrize("style,nccl,cuda", [("lightning", "2.21.5", "12.4"), ("lightning@2.4", "2.20.5", "12.1"),
                                             ("lightning@2.6", "2.27.5", "12.8")])
def test_a_lightning_version_pins_its_software_set(runner, style, nccl, cuda):
    job = styled_run(runner, style, "--output", "plain")
    assert f"NCCL version {nccl}+cuda{cuda}" in job.stdout
    assert not unmatched(job.stdout, STDOUT_LINES)
    assert not unmatched(job.stderr, STDERR_LINES)
    newest = style == "lightning@2.6"
    # HPU line up to 2.5; 2.6 drops it and adds the two tips, the FLOPs column and
    # ModelSummary's warning about bf16-mixed.
    assert ("HPU available: False, using: 0 HPUs" in job.stderr) != newest
    assert ("💡 Tip: For seamless cloud logging" in job.stderr) == newest
    assert ("| Mode  | FLOPs" in job.stderr) == newest
    assert ("0         Total Flops" in job.stderr) == newest
    assert ("Precision bf16-mixed is not supported" in job.stderr) == newest
    assert "| Mode " in job.stderr and "Modules in train mode" in job.stderr  # 2.4+
    line = {"lightning@2.4": 75}.get(style, 76)  # logger_connector.py's warning_cache.warn( at 2.4.0, 2.5.0, 2.6.5
    assert job.stderr.count(f"logger_connector.py:{line}: Starting from v1.9.0") == 1


def test_the_losses_in_the_bar_are_the_runs(runner):
    events = styled_run(runner, "lightning", "--output", "jsonl")
    plain = styled_run(runner, "lightning", "--output", "plain")
    hyper = events.of("run_identity")[0]["identity"]["hyper"]
    accum, per_epoch = hyper["grad_accum"], hyper["steps_per_epoch"]
    shown: dict[int, str] = {}  # step -> train_loss of its last refresh
    for _, line in script_lines(plain.stdout):
        if m := EPOCH.match(line):
            assert int(m["total"]) == per_epoch * accum  # the bar counts micro-batches
            shown[int(m["epoch"]) * per_epoch + int(m["n"]) // accum] = m["loss"]
    losses = {s["step"]: s["loss"] for s in events.of("step")}
    logged = {step for step in losses if (step - 1) % per_epoch + 1 in
              {*range(hyper["log_every"], per_epoch + 1, hyper["log_every"]), per_epoch}}
    assert set(shown) == logged and logged
    for step, text in shown.items():
        assert float(text) == float(f"{losses[step]:.3g}"), step  # the bar's precision: 3 significant digits


def test_a_multi_epoch_run_resets_the_bar_and_keeps_val_loss(runner):
    # Seed 21 draws a fine-tune whose 33 steps are its 3 epochs of 11, each step logged.
    args = ("--seed", "21", "--max-steps", "33")
    job = styled_run(runner, "lightning", "--output", "plain", *args)
    events = styled_run(runner, "lightning", "--output", "jsonl", *args)
    hyper = events.of("run_identity")[0]["identity"]["hyper"]
    assert (hyper["epochs"], hyper["steps_per_epoch"], hyper["log_every"]) == (3, 11, 1)
    bars = [(m, line) for _, line in script_lines(job.stdout) if (m := EPOCH.match(line))]
    assert [int(m["epoch"]) for m, _ in bars] == [0] * 12 + [1] * 12 + [2] * 13  # 11 steps, val, (close)
    # Every epoch's bar starts again from 0 (tqdm's reset), and its elapsed with it.
    firsts = [line for (m, line), (prev, _) in zip(bars[1:], bars, strict=False) if m["epoch"] != prev["epoch"]]
    assert all("[00:" in line or "[01:" in line for line in firsts), firsts
    # The val_loss logged with prog_bar=True stays in the postfix from the first validation on.
    assert ["val_loss=" in line for _, line in bars] == [False] * 11 + [True] * 26
    validations = [line for _, line in script_lines(job.stdout) if line.startswith("Validation DataLoader 0: 100%")]
    assert len(validations) == len(events.of("validation")) == 3


def test_an_oom_under_lightning_fails_through_its_frames(runner):
    job = styled_run_failing(runner, "lightning", "--scenario", "cuda-oom", "--fail-rank", "1", "--fail-step", "4")
    frames = [line for rank, line in rank_lines(job.stderr) if rank == 1 and line.startswith("[rank1]:")]
    assert frames[0] == "[rank1]: Traceback (most recent call last):"
    where = [m.group(1, 2, 3) for line in frames
             if (m := re.match(r'\[rank1\]:   File "\S+/site-packages/(\S+)", line (\d+), in (\w+)$', line))]
    assert ("lightning/pytorch/trainer/trainer.py", "539", "fit") in where
    assert ("lightning/pytorch/trainer/call.py", "46", "_call_and_handle_interrupt") in where
    assert ("lightning/pytorch/loops/fit_loop.py", "216", "run") in where
    assert ("lightning/pytorch/core/module.py", "1097", "backward") in where
    assert where[-1] == ("torch/autograd/graph.py", "825", "_engine_run_backward")
    assert frames[-1].startswith("[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ")
