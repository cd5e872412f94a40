"""--style deepspeed: a deepspeed.initialize script under torchrun. A golden
log, every line the style prints matched against DeepSpeed's real formats
(deepspeedai/DeepSpeed v0.14.4 deepspeed/utils/logging.py and the logging
calls data/style-deepspeed.toml lists), who prints what, the printed losses
equal to the JSONL stream's, the fp16 loss scaler's skips, each pinned
version's logging sites, and failures through DeepSpeed's frames."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_styles import GOLDEN, NCCL, assert_golden, rank_lines, styled_run

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]"
SITE = r"\[[\w.]+\.py:\d+:\w+\]"
DS = rf"^{STAMP} \[INFO\] {SITE} "  # DeepSpeed's logger
DIST = rf"{DS}\[Rank \d+\] "  # log_dist
LOGURU = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| INFO     \| __main__:log_dist:54 - \[Rank 0\] "
FLOAT = r"\d+(\.\d+)?(e-?\d+)?"
GB = r"\d+(\.\d+)?"
PATH = r"\S+/global_step\d+/"
LR = rf"\[(0\.0|{FLOAT}), (0\.0|{FLOAT})\]"
DEEPSPEED_LINES = [re.compile(p) for p in (
    rf"{DS}Setting ds_accelerator to cuda \(auto detect\)$", rf"{DS}cdb=None$",
    rf"{DS}Initializing TorchBackend in DeepSpeed with backend nccl$",
    rf"{DS}Config mesh_device None world_size = \d+$",
    rf"{DIST}DeepSpeed info: version=\d+\.\d+\.\d+, git-hash=unknown, git-branch=unknown$",
    rf"{DIST}DeepSpeed Flops Profiler Enabled: False$", rf"{DIST}Using client Optimizer as basic optimizer$",
    rf"{DIST}Removing param_group that has no 'params' in the basic Optimizer$",
    rf"{DIST}DeepSpeed Basic Optimizer = AdamW$",
    rf"{DS}Checking ZeRO support for optimizer=AdamW type=<class 'torch\.optim\.adamw\.AdamW'>$",
    rf"{DIST}Creating torch\.float16 ZeRO stage [123] optimizer$",
    rf"{DS}(Reduce|Allgather) bucket size 500000000$", rf"{DS}CPU Offload: False$",
    rf"{DS}Round robin gradient partitioning: False$",
    rf"{DS}(Before|After) initializing optimizer states$", rf"{DS}After initializing ZeRO optimizer$",
    rf"{DS}MA {GB} GB {{9}}Max_MA {GB} GB {{9}}CA {GB} GB {{9}}Max_CA \d+ GB $",
    rf"{DS}CPU Virtual Memory:  used = {GB} GB, percent = {GB}%$", rf"{DS}optimizer state initialized$",
    rf"{DIST}DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer$",
    rf"{DIST}DeepSpeed using client LR scheduler$",
    rf"{DIST}DeepSpeed LR Scheduler = <torch\.optim\.lr_scheduler\.LambdaLR object at 0x7f[0-9a-f]{{10}}>$",
    rf"{DIST}step=\d+, skipped=\d+, lr={LR}, mom=\[\(0\.9, 0\.95\), \(0\.9, 0\.95\)\]$",
    rf"{DS}DeepSpeedEngine configuration:$",
    rf"^({DS}  \w+ (\.+ | )\S.*|{DS}  json = \{{|    +\S.*|\}})$",  # the config dump, the user's json
    rf"{DS}epoch=0/micro_step=\d+/global_step=\d+, RunningAvgSamplesPerSec={FLOAT}, "
    rf"CurrSamplesPerSec={FLOAT}, MemAllocated={GB}GB, MaxMemAllocated={GB}GB$",
    rf"{DS}\[deepspeed\] OVERFLOW! Rank 0 Skipping step\. Attempted loss scale: \d+, "
    r"(reducing to \d+|but hysteresis is \d+\. Reducing hysteresis to \d+)$",
    rf"{DIST}\[TorchCheckpointEngine\] Initialized with serialization = True$",
    rf"{DIST}\[Torch\] Checkpoint global_step\d+ is about to be saved!$",
    rf"{DIST}Saving model checkpoint: {PATH}(zero_pp_rank_\d+_)?mp_rank_\d\d_model_states\.pt$",
    rf"{DS}\[Torch\] Saving \S+\.(pt|bin)\.\.\.$", rf"{DS}\[Torch\] Saved \S+\.(pt|bin)\.$",
    rf"{DS}zero checkpoint saved {PATH}zero_pp_rank_\d+_mp_rank_\d\d_optim_states\.pt$",
    rf"{DS}\[Torch\] Checkpoint global_step\d+ is ready now!$",
    rf"{DS}Saving model weights to \S+/pytorch_model\.bin, tag: global_step\d+$",
    rf"{LOGURU}(Creating (Model|Datasets|DeepSpeed engine)|(Model|Dataset) Creation Done|DeepSpeed engine created)$",
    rf"{LOGURU}Total number of model parameters: \d{{1,3}}(,\d{{3}})*$", rf"{LOGURU}Loss: \d+\.\d{{4}}$",
    rf"{LOGURU}ppl: {FLOAT}, loss: {FLOAT}$", rf"{LOGURU}Saved model to \S+$")]
EVERY_RANK = re.compile(r"(Setting ds_accelerator|cdb=None|Config mesh_device|optim_states\.pt|is ready now)")


def script_lines(text: str) -> list[tuple[int, str]]:
    return [(rank, line) for rank, line in rank_lines(text) if not NCCL.match(line)]


def test_golden_and_every_line_in_a_real_format(runner):
    job = styled_run(runner, "deepspeed", "--output", "plain")
    assert_golden(job, GOLDEN / "deepspeed_seed5_2x12.txt")
    lines = script_lines(job.stdout + job.stderr)
    assert len(lines) > 200
    unmatched = [line for _, line in lines if not any(p.match(line) for p in DEEPSPEED_LINES)]
    assert not unmatched
    # DeepSpeed's logger writes to stdout, the script's loguru to stderr.
    assert all(not line.startswith("[20") for _, line in script_lines(job.stderr))
    assert all(" | INFO     | " not in line for _, line in script_lines(job.stdout))


def test_who_prints_what(runner):
    lines = script_lines(styled_run(runner, "deepspeed", "--output", "plain").stdout)
    others = [line for rank, line in lines if rank != 0 and not line.startswith("    ")]
    # Rank 1 says only what DeepSpeed logs on every rank: its import, cdb=None, its own shard.
    assert others and all(EVERY_RANK.search(line) for line in others)
    assert all("zero_pp_rank_1_" in line for line in others if "optim_states" in line)
    for rank in (0, 1):
        assert sum("cdb=None" in line for r, line in lines if r == rank) == 1
    assert [r for r, line in lines if "Initializing TorchBackend" in line] == [0]
    assert [r for r, line in lines if "DeepSpeedEngine configuration:" in line] == [0]
    assert {r for r, line in lines if "Saving model checkpoint" in line} == {0}


def test_the_losses_printed_are_the_runs(runner):
    events = styled_run(runner, "deepspeed", "--output", "jsonl")
    plain = styled_run(runner, "deepspeed", "--output", "plain")
    printed = [line.rsplit("Loss: ", 1)[1] for _, line in rank_lines(plain.stderr) if "] Loss: " in line]
    every = events.of("run_identity")[0]["identity"]["hyper"]["log_every"]
    logged = [s["loss"] for s in events.of("step") if s["step"] % every == 0]
    assert len(printed) == len(logged) > 0
    assert printed == [f"{loss:.4f}" for loss in logged]


@pytest.mark.parametrize("style,nccl,cuda", [("deepspeed", "2.20.5", "12.1"), ("deepspeed@0.18", "2.27.5", "12.8")])
def test_a_style_pins_one_software_set(runner, style, nccl, cuda):
    job = styled_run(runner, style, "--output", "plain")
    assert f"NCCL version {nccl}+cuda{cuda}" in job.stdout
    assert f"DeepSpeed info: version={'0.18.2' if '@' in style else '0.14.4'}," in job.stdout


def test_a_loss_spike_overflows_the_fp16_loss_scaler(runner):
    args = ("--scenario", "loss-spike", "--fail-step", "6")
    events = styled_run(runner, "deepspeed", "--output", "jsonl", *args)
    plain = styled_run(runner, "deepspeed", "--output", "plain", *args)
    skipped = [s["step"] for s in events.of("step") if s["overflow"]]
    assert skipped  # the spike's peak is past what the fp16 scale survives
    lines = [line for _, line in rank_lines(plain.stdout)]
    overflows = [line for line in lines if "OVERFLOW!" in line]
    overflowed, pending = [], False  # the steps whose progress line an OVERFLOW line precedes
    for line in lines:
        if "OVERFLOW!" in line:
            pending = True
        elif pending and (m := re.search(r"\] step=(\d+), skipped=", line)):
            overflowed.append(int(m[1]))
            pending = False
    assert len(overflowed) == len(overflows)
    # The spike overflows; so do the first steps, while the scaler comes down from
    # 65536 to its level (world/loss_scale.py: a step's gradients must fit fp16).
    assert set(skipped) <= set(overflowed)
    assert [s for s in overflowed if s not in skipped][:3] == [1, 2, 3]
    # DeepSpeed's hysteresis (2) spends the first overflow without shrinking the scale.
    assert overflows[0].endswith("Attempted loss scale: 65536, but hysteresis is 2. Reducing hysteresis to 1")
    assert overflows[1].endswith("Attempted loss scale: 65536, reducing to 32768")
    steps = {int(m[1]): (int(m[2]), m[3]) for m in re.finditer(r"step=(\d+), skipped=(\d+), lr=\[([^,\]]+)",
                                                               plain.stdout)}
    for step in overflowed:
        assert steps[step][0] == steps[step - 1][0] + 1
        # The skipped step did not step the scheduler: the LR stays where it was.
        assert steps[step][1] == steps[step - 1][1]


@pytest.mark.parametrize("version,log_dist,timer,accelerator,mesh,shards", [
    ("0.15", "logging.py:128", "timer.py:264", True, "config.py:733", True),
    ("0.16", "logging.py:128", "timer.py:264", True, "config.py:734", True),
    ("0.18", "logging.py:123", "timer.py:265", False, "config.py:687", False)])
def test_each_version_logs_from_its_own_sites(runner, version, log_dist, timer, accelerator, mesh, shards):
    out = styled_run(runner, f"deepspeed@{version}", "--output", "plain").stdout
    lines = [line for _, line in script_lines(out)]
    unmatched = [line for line in lines if not any(p.match(line) for p in DEEPSPEED_LINES)]
    assert not unmatched
    assert f"[{log_dist}:log_dist] [Rank 0] DeepSpeed info: version={version}." in out
    assert f"[{timer}:stop] epoch=0/" in out
    assert ("Setting ds_accelerator" in out) is accelerator  # 0.17.6+: WARNING until the script says info
    assert out.count(f"[{mesh}:__init__] Config mesh_device None world_size = 2") == 2
    assert ("zero checkpoint saved" in out) is shards  # 0.18 no longer logs its torch.save calls


@pytest.mark.parametrize("scenario,frames,error", [
    ("cuda-oom", ["deepspeed/utils/nvtx.py\", line 15, in wrapped_fn",
                  "deepspeed/runtime/engine.py\", line 1967, in backward",
                  "deepspeed/runtime/zero/stage_1_and_2.py\", line 2057, in backward",
                  "deepspeed/runtime/fp16/loss_scaler.py\", line 63, in backward",
                  "torch/autograd/graph.py\", line 744, in _engine_run_backward"],
     "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate "),
    ("rank-crash", ["deepspeed/runtime/engine.py\", line 2160, in step",
                    "deepspeed/runtime/zero/stage_1_and_2.py\", line 2016, in has_overflow"],
     "RuntimeError: CUDA error: an illegal memory access was encountered")])
def test_a_failure_runs_through_deepspeeds_frames(runner, scenario, frames, error):
    job = runner.start("--seed", "5", "--speed", "0", "--nproc", "2", "--max-steps", "12", "--style", "deepspeed",
                       "--output", "plain", "--scenario", scenario, "--fail-rank", "1", "--fail-step", "3")
    assert job.wait() == 1
    trace = [line for rank, line in rank_lines(job.stderr) if rank == 1 and line.startswith("[rank1]:")]
    text = "\n".join(trace)
    positions = [text.find(frame) for frame in frames]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    assert trace[-1 if scenario == "cuda-oom" else -4].startswith(f"[rank1]: {error}")
