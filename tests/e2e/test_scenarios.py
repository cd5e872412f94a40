"""The scenario catalog end to end: exit codes, the real texts, nothing left."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import FAKERUN, wait_until
from tests.e2e.torchrun_versions import exitcode_line, torch_of

RUN = ("--nproc", "4", "--max-steps", "12", "--speed", "0", "--seed", "3", "--fail-rank", "2",
       "--fail-step", "6", "--output", "jsonl")
ROOT = "Root Cause (first observed failure):\n[0]:\n"


def root_block(stderr: str) -> str:
    """The root cause's block of the ChildFailedError box, and what follows it."""
    return stderr.split(ROOT, 1)[1]


@pytest.mark.parametrize(("scenario", "code", "root"), [
    ("healthy", 0, None),
    ("loss-spike", 0, None),
    ("straggler", 0, None),
    ("rank-crash", 1, 1),
    ("rank-exit", 1, 1),
    ("cuda-oom", 1, 1),
    ("segfault", 1, -11),
    ("node-failure", 1, -9),
    ("nan-loss", 1, 1),
])
def test_scenario_exit_codes_and_root_causes(runner, scenario, code, root):
    job = runner.run(*RUN, "--scenario", scenario)
    assert job.proc.returncode == code, job.stderr[-2000:]
    assert job.events()[-1]["exit_code"] == code
    if root:
        torch_of(job)  # one whose box we know
        block = root_block(job.stderr)
        rank = int(re.search(r"  rank      : (\d+) ", block).group(1))
        pid = next(e["pid"] for e in job.of("rank_started") if e["rank"] == rank)
        assert re.search(r"  exitcode  : .*\n", block).group(0) == exitcode_line(root, pid)


def test_cuda_oom_text_is_pytorch_s(runner):
    job = runner.run(*RUN, "--scenario", "cuda-oom", "--gpu", "NVIDIA H100 80GB HBM3")
    lines = [x for e in job.of("rank_output") for x in e["lines"]]
    assert lines[0] == "[rank2]: Traceback (most recent call last):"
    assert "[rank2]:     loss.backward()" in lines
    oom = lines[-1]
    assert re.fullmatch(
        r"\[rank2\]: torch\.OutOfMemoryError: CUDA out of memory\. Tried to allocate \d+\.\d\d GiB\. "
        r"GPU 2 has a total capacity of 79\.10 GiB of which \d+\.\d\d (GiB|MiB) is free\. Including non-PyTorch "
        r"memory, this process has \d+\.\d\d GiB memory in use\. Of the allocated memory \d+\.\d\d GiB is "
        r"allocated by PyTorch, and \d+\.\d\d (GiB|MiB) is reserved by PyTorch but unallocated\. If reserved "
        r"but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to "
        r"avoid fragmentation\.  See documentation for Memory Management  "
        r"\(https://pytorch\.org/docs/stable/notes/cuda\.html#environment-variables\)", oom)
    tried = float(re.search(r"allocate (\d+\.\d\d) GiB", oom).group(1))
    number, unit = re.search(r"of which (\d+\.\d\d) (GiB|MiB) is free", oom).groups()
    assert tried > float(number) / (1024 if unit == "MiB" else 1)  # that is why it failed


def test_loss_spike_and_straggler_are_visible(runner):
    spike = runner.run(*RUN, "--scenario", "loss-spike")
    steps = {s["step"]: s for s in spike.of("step")}
    assert steps[6]["loss"] > 1.3 * steps[5]["loss"] and steps[6]["grad_norm"] > 3 * steps[5]["grad_norm"]
    assert steps[12]["loss"] < steps[6]["loss"]  # and it recovers
    slow = runner.run(*RUN, "--scenario", "straggler")
    steps = {s["step"]: s for s in slow.of("step")}
    assert steps[7]["step_time_s"] > 2 * steps[4]["step_time_s"]
    trains = [c for c in slow.of("collective") if c["tag"] == "train_step"]  # steps 1, 2, ...
    assert trains[3]["wait_us"] == 0 and trains[7]["wait_us"] > 1e6  # the others wait seconds for rank 2


def test_nan_loss_stops_every_rank(runner):
    job = runner.run(*RUN, "--scenario", "nan-loss")
    said = {e["rank"]: e["lines"] for e in job.of("rank_output")}
    assert sorted(said) == [0, 1, 2, 3] and all(v == ["Loss is nan, stopping training"] for v in said.values())
    assert job.of("step")[-1]["loss"] == "NaN"


def test_hang_prints_nothing_more_until_killed(runner):
    job = runner.start("--nproc", "2", "--max-steps", "50", "--speed", "0", "--scenario", "hang",
                       "--fail-step", "5", "--output", "jsonl")
    wait_until(lambda: len(job.of("step")) == 4, 30)
    size = len(job.stdout)
    with pytest.raises(subprocess.TimeoutExpired):
        job.wait(timeout=2.0)  # the caller's timeout is what ends it
    assert len(job.stdout) == size
    job.kill(15)
    assert job.wait() == 1  # torchrun's SignalException, uncaught


def test_custom_scenario_file(runner, tmp_path):
    custom = tmp_path / "big-spike.toml"
    custom.write_text('description = "a bigger spike"\nfault = "spike"\nheight = 2.0\n')
    job = runner.run(*RUN, "--scenario", str(custom))
    steps = {s["step"]: s for s in job.of("step")}
    assert job.proc.returncode == 0 and steps[6]["loss"] > 2.5 * steps[5]["loss"]
    bad = tmp_path / "bad.toml"
    bad.write_text('fault = "meteor"\n')
    job = runner.run("--scenario", str(bad))
    assert job.proc.returncode == 2 and "fault 'meteor' is not one of" in job.stderr


def test_list_scenarios():
    out = subprocess.run([*FAKERUN, "--list-scenarios"], capture_output=True, text=True, timeout=30)
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and names == ["healthy", "loss-spike", "nan-loss", "cuda-oom", "rank-crash",
                                             "rank-exit", "segfault", "nccl-timeout", "straggler", "preemption",
                                             "hang", "node-failure", "gpu-fallen-off-bus", "ecc-dbe",
                                             "ecc-contained", "ecc-uncontained", "thermal-throttle",
                                             "link-flap"]


@pytest.mark.parametrize("scenario", ["rank-crash", "nccl-timeout", "segfault"])
def test_failing_scenarios_are_deterministic(runner, tmp_path, scenario):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NO_COLOR")}
    outputs = []
    for n in range(2):
        m = tmp_path / f"m{n}.jsonl"
        job = runner.start("--nproc", "3", "--max-steps", "10", "--speed", "0", "--seed", "4", "--scenario",
                           scenario, "--fail-rank", "1", "--fail-step", "5", "--collective-timeout", "1",
                           "--start-time", "2026-01-30T14:23:15", "--rdzv-id", "fixed-id",
                           "--metrics-file", str(m), env=env)
        assert job.wait() == 1
        outputs.append((job.stdout, job.stderr, m.read_text()))
    assert outputs[0] == outputs[1]


def test_scenario_metrics(runner, tmp_path):
    m = tmp_path / "m.jsonl"
    job = runner.run(*RUN, "--scenario", "nan-loss", "--metrics-file", str(m))
    rows = [json.loads(x) for x in m.read_text().splitlines()]
    train = [r for r in rows if r["type"] == "train"]
    assert train[-1]["step"] == 6 and train[-1]["loss"] == "NaN" and train[-1]["ppl"] == "NaN"
    assert rows[-1] == {"type": "event", "event": "run_finished", "exit_code": 1, "steps": 6}
    assert job.proc.returncode == 1
