"""--style megatron: Megatron-LM's pretrain_gpt.py under torchrun. A golden
log, every script line matched against Megatron's formats (NVIDIA/Megatron-LM
core_v0.10.0 megatron/training/training.py, utils.py, checkpointing.py),
Megatron's who-prints, the losses printed equal to the JSONL stream's, and
each pinned version's differences."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_styles import GOLDEN, NCCL, assert_golden, rank_lines, styled_run

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
SCI = r"\d\.\d{6}E[+-]\d\d"
ITERATION = re.compile(
    rf"^ \[{STAMP}\] iteration ([ \d]{{8}})/([ \d]{{8}}) \| consumed samples: ([ \d]{{12}}) \| "
    r"elapsed time per iteration \(ms\): \d+\.\d \| throughput per GPU \(TFLOP/s/GPU\): \d+\.\d \| "
    rf"learning rate: {SCI} \| global batch size: ([ \d]{{5}}) \| lm loss: ({SCI}) \| loss scale: 1\.0 \| "
    r"grad norm: \d+\.\d{3} \| number of skipped iterations:   0 \| number of nan iterations:   0 \|$")
ARG = re.compile(r"^  ([a-z0-9_]+) (\.+) \S.*$")
TIMER = re.compile(r"^    ([a-z/-]+ \.+): \((\d+\.\d\d), (\d+\.\d\d)\)$")
VALIDATION = re.compile(rf"^ validation loss at iteration \d+( on validation set)? \| lm loss value: {SCI} \| "
                        rf"lm loss PPL: {SCI} \| $")
MEMORY = re.compile(r"^\[Rank (\d+)\] \(after \d+ iterations\) memory \(MB\) \| allocated: \d+\.\d+ \| "
                    r"max allocated: \d+\.\d+ \| reserved: \d+\.0 \| max reserved: \d+\.0$")
PARAMS = re.compile(r"^ > number of parameters on \(tensor, pipeline\) model parallel rank \((\d+), (\d+)\): \d+$")
LAST_RANK = (ITERATION, TIMER, VALIDATION, re.compile(r"^\(min, max\) time across ranks \(ms\):$"),
             re.compile(r"^-+$"))
MEGATRON_LINES = [ITERATION, ARG, TIMER, VALIDATION, MEMORY, PARAMS, *(re.compile(p) for p in (
    r"^accumulate and all-reduce gradients in fp32 for bfloat16 data type\.$",
    r"^using torch\.bfloat16 for parameters \.\.\.$",
    r"^------------------------ arguments ------------------------$",
    r"^-------------------- end of arguments ---------------------$",
    r"^INFO:megatron\.core\.num_microbatches_calculator:setting number of microbatches to constant \d+$",
    r"^> building (HuggingFaceTokenizer|GPT2BPETokenizer) tokenizer \.\.\.$",
    r"^ > padded vocab \(size: \d+\) with \d+ dummy tokens \(new size: \d+\)$",
    r"^> initializing torch distributed \.\.\.$", r"^> initialized (tensor|pipeline) model parallel with size \d+$",
    r"^> setting random seeds to 1234 \.\.\.$", r"^> compiling dataset index builder \.\.\.$",
    r"^make: (Entering|Leaving) directory '/workspace/Megatron-LM/megatron/core/datasets'$",
    r"^make: Nothing to be done for 'default'\.$",
    r"^>>> done with dataset index builder\. Compilation time: \d+\.\d{3} seconds$",
    r"^time to initialize megatron \(seconds\): \d+\.\d{3}$",
    rf"^\[(after|before) [a-z ,]+\] datetime: {STAMP} $",
    r"^building GPT model \.\.\.$",
    r"^INFO:megatron\.core\.optimizer_param_scheduler:> learning rate decay style: cosine$",
    r"^> building train, validation, and test datasets \.\.\.$", r"^ > datasets target sizes \(minimum size\):$",
    r"^    train:      \d+$", r"^    validation: \d+$", r"^    test:       \d+$",
    r"^> building train, validation, and test datasets for GPT \.\.\.$", r"^> finished creating GPT datasets \.\.\.$",
    r"^done with setup \.\.\.$", r"^training \.\.\.$", r"^\(min, max\) time across ranks \(ms\):$",
    r"^Number of parameters in transformer layers in billions:  \d+\.\d\d$",
    r"^Number of parameters in embedding layers in billions: \d+\.\d\d$",
    r"^Total number of parameters in billions: \d+\.\d\d$",
    r"^Number of parameters in (most loaded shard|other shards) in billions: \d+\.\d{4}$",
    r"^Theoretical memory footprints: weight and optimizer=\d+\.\d\d MB$",
    r"^saving checkpoint at iteration ([ \d]{7}) to \S+ in torch_dist format$",
    r"^Storing distributed optimizer sharded state of type fully_sharded_model_space$",
    r"^  successfully saved checkpoint from iteration ([ \d]{7}) to \S+ \[ t 1/1, p 1/1 \]$",
    r"^Evaluating on \d+ samples$", r"^Evaluating iter \d+/\d+$", r"^-+$"))]


def script_lines(job) -> list[tuple[int, str, str]]:
    """(rank, stream, text) of every line the training script printed."""
    return [(rank, stream, line) for stream, text in (("stdout", job.stdout), ("stderr", job.stderr))
            for rank, line in rank_lines(text) if not NCCL.match(line)]


def test_golden_and_every_line_in_a_real_format(runner):
    job = styled_run(runner, "megatron", "--output", "plain")
    assert_golden(job, GOLDEN / "megatron_seed5_2x12.txt")
    lines = script_lines(job)
    assert lines and {stream for _, stream, _ in lines} == {"stdout"}  # Megatron only prints
    unmatched = [line for _, _, line in lines if not any(p.match(line) for p in MEGATRON_LINES)]
    assert not unmatched


def test_who_prints_what(runner):
    """print_rank_last for iterations, timers and validation; data-parallel
    rank 0 for the parameter count and memory; global rank 0 for the rest
    (2 GPUs, tp = pp = 1: rank 0 is the only data-parallel rank 0)."""
    lines = script_lines(styled_run(runner, "megatron", "--output", "plain"))
    for rank, _, line in lines:
        if any(p.match(line) for p in LAST_RANK):
            assert rank == 1, line
        elif m := MEMORY.match(line):
            assert rank == int(m.group(1)) == 0, line
        else:
            assert rank == 0, line
    assert sum(bool(PARAMS.match(line)) for _, _, line in lines) == 1
    assert sum(bool(ITERATION.match(line)) for _, _, line in lines) == 12


def test_columns_line_up_as_megatron_pads_them(runner):
    lines = [line for _, _, line in script_lines(styled_run(runner, "megatron", "--output", "plain"))]
    args = [m for m in map(ARG.match, lines) if m]
    assert len(args) > 40 and all(len(m.group(1)) + len(m.group(2)) == 48 for m in args)
    names = [m.group(0) for m in args]
    assert names == sorted(names, key=str.lower)
    timers = [m for m in map(TIMER.match, lines) if m]
    assert {m.group(1).split(" ")[0] for m in timers} == {
        "model-and-optimizer-setup", "train/valid/test-data-iterators-setup", "save-checkpoint", "evaluate"}
    assert all(len(m.group(1)) == 48 and float(m.group(2)) <= float(m.group(3)) for m in timers)
    for dashes, string in zip(lines, lines[1:], strict=False):
        if VALIDATION.match(string):
            assert dashes == "-" * (len(string) + 1)


def printed_losses(text: str) -> dict[int, str]:
    found = (ITERATION.match(line) for _, line in rank_lines(text))
    return {int(m.group(1)): m.group(5) for m in found if m}


@pytest.mark.parametrize("seed,steps", [("5", "12"), ("2", "120")])
def test_the_losses_printed_are_the_runs(runner, seed, steps):
    """Megatron prints the mean lm loss of the iterations since its previous
    line (every --log-interval iterations); parity at the printed precision."""
    args = ("--nproc", "2", "--max-steps", steps, "--seed", seed)
    events = runner.start("--start-time", "2026-01-30T14:23:15", "--speed", "0", *args, "--style", "megatron",
                          "--output", "jsonl")
    plain = runner.start("--start-time", "2026-01-30T14:23:15", "--speed", "0", *args, "--style", "megatron",
                         "--output", "plain")
    assert events.wait() == 0 and plain.wait() == 0
    every = events.of("run_identity")[0]["identity"]["hyper"]["log_every"]
    losses = {s["step"]: s["loss"] for s in events.of("step")}
    expected = {step: f"{sum(losses[k] for k in range(step - every + 1, step + 1)) / every:.6E}"
                for step in losses if step % every == 0}
    assert printed_losses(plain.stdout) == expected and len(expected) == int(steps) // every
    if every > 1:  # an interval mean, not the last iteration's loss
        assert any(f"{losses[s]:.6E}" != shown for s, shown in expected.items())


def test_intervals_validate_and_save_inside_the_loop(runner):
    """Two evaluations: eval and save at each interval (--eval-interval =
    --save-interval = 50, seed 5's draw for 100 steps), then '[after training
    is done]'."""
    job = runner.start("--start-time", "2026-01-30T14:23:15", "--speed", "0", "--nproc", "2", "--max-steps", "100",
                       "--seed", "5", "--style", "megatron", "--output", "plain")
    assert job.wait() == 0
    lines = [line for _, line in rank_lines(job.stdout)]
    blocks = [line for line in lines if VALIDATION.match(line)]
    assert [b.split("|")[0].strip() for b in blocks] == ["validation loss at iteration 50",
                                                         "validation loss at iteration 100"]
    saves = [line for line in lines if line.startswith("  successfully saved checkpoint")]
    assert len(saves) == 2
    assert lines.index(saves[-1]) < next(i for i, line in enumerate(lines) if "after training is done" in line)


@pytest.mark.parametrize("style,nccl,cuda,core", [("megatron", "2.21.5", "12.4", "0.10.0"),
                                                  ("megatron@0.15", "2.27.5", "12.8", "0.15.0"),
                                                  ("megatron@0.8", "2.20.5", "12.1", "0.8.0")])
def test_a_style_pins_one_software_set(runner, style, nccl, cuda, core):
    job = styled_run(runner, style, "--output", "jsonl")
    versions = job.of("run_identity")[0]["identity"]["versions"]
    assert (versions["nccl"], versions["cuda"], versions["megatron"]) == (nccl, cuda, core)
    plain = styled_run(runner, style, "--output", "plain")
    assert f"NCCL version {nccl}+cuda{cuda}" in plain.stdout


def test_2026_upstream_stamps_microseconds_and_saves(runner):
    lines = [line for _, line in rank_lines(styled_run(runner, "megatron@0.15", "--output", "plain").stdout)]
    micro = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\]"
    iterations = [line for line in lines if "| consumed samples:" in line]
    assert len(iterations) == 12 and all(re.match(rf"^ {micro} iteration ", line) for line in iterations)
    assert any(re.match(rf"^{micro} saving checkpoint at iteration +12 to ", line) for line in lines)
    assert any(re.match(rf"^  {micro} successfully saved checkpoint from iteration +12 to \S+ "
                        r"\[ t 1/1, p 1/1 \]$", line) for line in lines)
    assert any(re.match(r"^\[after training is done\] datetime: \S+ \d\d:\d\d:\d\d\.\d{6} $", line) for line in lines)
    assert any(line.startswith("Number of parameters in transformer block in billions:") for line in lines)


def test_mid_2024_speaks_of_micro_batches_and_prints_the_scheduler_itself(runner):
    lines = [line for _, line in rank_lines(styled_run(runner, "megatron@0.8", "--output", "plain").stdout)]
    assert any(re.match(r"^INFO:megatron\.core\.num_microbatches_calculator:setting number of micro-batches "
                        r"to constant \d+$", line) for line in lines)
    assert "> learning rate decay style: cosine" in lines
    assert any(re.match(r"^  successfully saved checkpoint from iteration +12 to \S+$", line) for line in lines)


@pytest.mark.parametrize("scenario,frames,error", [
    ("cuda-oom", ["pretrain", "train", "train_step", "forward_backward_no_pipelining", "backward_step",
                  "custom_backward"], "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "),
    ("rank-crash", ["pretrain", "train", "train_step", "decorate_context", "step", "clip_grad_norm",
                    "get_grad_norm_fp32"], "RuntimeError: CUDA error: an illegal memory access was encountered")])
def test_failures_run_through_megatrons_frames(runner, scenario, frames, error):
    job = runner.start("--start-time", "2026-01-30T14:23:15", "--speed", "0", "--nproc", "2", "--max-steps", "12",
                       "--seed", "5", "--style", "megatron", "--scenario", scenario, "--fail-step", "5",
                       "--output", "plain")
    assert job.wait() == 1
    trace = [line.removeprefix("[rank1]: ") for rank, line in rank_lines(job.stderr) if rank == 1]
    shown = [m.group(2) for m in (re.match(r'^  File "([^"]+)", line \d+, in (\S+)$', t) for t in trace) if m]
    assert shown == ["<module>", *frames]
    assert any('"/workspace/Megatron-LM/megatron/core/pipeline_parallel/schedules.py"' in t or
               '"/workspace/Megatron-LM/megatron/core/optimizer/clip_grads.py"' in t for t in trace)
    assert any(t.startswith(error) for t in trace)
    steps = printed_losses(job.stdout)
    assert max(steps) == 4  # the failing iteration never logs


def test_a_megatron_launch_line_is_echoed_in_the_arguments(runner):
    """`fakerun pretrain_gpt.py --num-layers ...`: the style follows the script,
    its flags show in the arguments block, and --save is where it saves.
    Teed (a named script starts from torchrun's defaults), so each line says
    its rank."""
    save = str(runner.tmp_path / "ckpt")
    job = runner.start("--start-time", "2026-01-30T14:23:15", "--speed", "0", "--nproc", "2", "--seed", "5",
                       "--output", "plain", "--tee", "3", "pretrain_gpt.py", "--num-layers", "4", "--hidden-size", "512",
                       "--train-iters", "10", "--log-interval", "5", "--save", save, "--save-interval", "10",
                       "--data-path",
                       "/data/my-gpt2_text_document", "--vocab-file", "gpt2-vocab.json")
    assert job.wait() == 0, job.stderr
    lines = [line for _, line in rank_lines(job.stdout)]
    assert f"  save {'.' * 44} {save}" in lines
    assert f"  data_path {'.' * 39} ['/data/my-gpt2_text_document']" in lines
    assert "> building GPT2BPETokenizer tokenizer ..." in lines
    assert " > padded vocab (size: 50257) with 47 dummy tokens (new size: 50304)" in lines
    assert f"  successfully saved checkpoint from iteration      10 to {save} [ t 1/1, p 1/1 ]" in lines
    assert sorted(printed_losses(job.stdout)) == [5, 10]
