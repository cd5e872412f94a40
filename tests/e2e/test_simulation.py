"""The simulated run end to end: determinism, the golden log, graceful
early ends, --loop."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until

GOLDEN = Path(__file__).parent / "golden" / "seed5_2x12.txt"
FIXED = ("--seed", "5", "--start-time", "2026-01-30T14:23:15", "--speed", "0")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NO_COLOR")}
    env["COLUMNS"] = "100"
    return env


def fixed_run(runner, *args: str):
    # A fixed --rdzv-id too: the run id is part of the output.
    job = runner.start(*FIXED, *args, env=clean_env())
    assert job.wait() == 0, job.stderr
    return job


def test_two_runs_are_byte_identical(runner):
    args = ("--nproc", "4", "--max-steps", "40", "--output", "plain")
    first, second = fixed_run(runner, *args), fixed_run(runner, *args)
    # The only difference allowed is the --rdzv-id marker each test job carries.
    assert first.stdout.replace(first.marker, "ID") == second.stdout.replace(second.marker, "ID")
    assert first.stderr.replace(first.marker, "ID") == second.stderr.replace(second.marker, "ID")
    assert len(first.stdout.splitlines()) > 300


def test_jsonl_is_identical_too(runner):
    args = ("--nproc", "3", "--max-steps", "25", "--output", "jsonl")
    first, second = fixed_run(runner, *args), fixed_run(runner, *args)
    assert first.stdout.replace(first.marker, "ID") == second.stdout.replace(second.marker, "ID")
    names = {e["event"] for e in first.events()}
    for name in ("run_identity", "phase", "step", "validation", "checkpoint", "export", "summary",
                 "nccl_stats"):
        assert name in names
    step = first.of("step")[-1]
    for field in ("ppl", "lr", "grad_norm", "tokens_per_s", "step_time_s", "mfu"):
        assert isinstance(step[field], float)
    assert all(c["wall_us"] is None for c in first.of("collective"))


def test_golden_plain_output(runner):
    """A fixed seed's whole log. Regenerate deliberately with
    FAKERUN_REGEN_GOLDEN=1 after a change that is meant to alter it."""
    job = fixed_run(runner, "--nproc", "2", "--max-steps", "12", "--output", "plain")
    assert_golden(job, GOLDEN)


def test_golden_single_gpu(runner):
    """One GPU, the seeds' layout: a single-GPU job's whole log (no sharding,
    no collectives reported, no NVLink bus on a GPU that has NVLink)."""
    job = fixed_run(runner, "--nproc", "1", "--max-steps", "12", "--output", "plain",
                    "--gpu", "NVIDIA H100 80GB HBM3")
    assert_golden(job, GOLDEN.with_name("seed5_1x12_h100.txt"))


def assert_golden(job, path: Path) -> None:
    """The job's whole output equals the golden file's (rewritten instead
    under FAKERUN_REGEN_GOLDEN=1)."""
    text = (job.stdout + "----- stderr -----\n" + job.stderr).replace(job.marker, "<rdzv-id>")
    if os.environ.get("FAKERUN_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_piped_output_has_no_ansi(runner):
    job = runner.run("--nproc", "2", "--max-steps", "6", "--speed", "0")  # --output auto, not a tty
    assert job.proc.returncode == 0
    assert "\x1b" not in job.stdout + job.stderr
    assert "Training Summary" in job.stdout


def test_exit_after_time_ends_gracefully(runner):
    job = runner.run("--nproc", "2", "--max-steps", "400", "--speed", "4", "--exit-after-time", "2s",
                     "--output", "jsonl", timeout=60)
    assert job.proc.returncode == 0
    steps = job.of("step")
    assert 1 <= len(steps) < 400
    names = [e["event"] for e in job.events()]
    tail = names[names.index("step") + len(steps):]
    for name in ("validation", "checkpoint", "export", "summary", "run_finished"):
        assert name in tail
    summary = job.of("summary")[0]
    assert summary["steps"] == steps[-1]["step"] and summary["final_loss"] == steps[-1]["loss"]


def test_exit_after_time_shows_the_step_it_stopped_at(runner):
    """The summary's last step is the last step block on screen, and the
    export says training stopped early, not that it completed."""
    job = runner.run("--nproc", "2", "--max-steps", "400", "--speed", "4", "--exit-after-time", "2s",
                     "--output", "plain", timeout=60)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    [total] = [line for line in job.stdout.splitlines() if "Total steps:" in line]
    last = int(total.split(":")[-1].replace(",", ""))
    assert 1 <= last < 400
    assert f"| Step {last}/400" in job.stdout
    assert f"Training stopped early at step {last}/400." in job.stdout
    assert "Training complete!" not in job.stdout


def test_exit_after_time_holds_at_a_slow_speed(runner):
    """At --speed 0.05 the start-up's paced stages alone took 36 s."""
    start = time.monotonic()
    job = runner.run("--nproc", "2", "--max-steps", "400", "--speed", "0.05", "--exit-after-time", "2s",
                     "--output", "jsonl", timeout=60)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    assert time.monotonic() - start < 10
    assert job.of("summary")


def test_loop_runs_fresh_cycles_until_sigint(runner):
    job = runner.start("--nproc", "2", "--max-steps", "5", "--speed", "0", "--loop", "--output", "jsonl",
                       "--seed", "9")
    wait_until(lambda: len(job.of("run_finished")) >= 2, 60)
    job.kill(signal.SIGINT)
    assert job.wait() == 130
    finished = job.of("run_finished")
    assert [f["exit_code"] for f in finished[:2]] == [0, 0]
    seeds = [e["seed"] for e in job.of("run_started")]
    assert seeds[:2] == [9, 10]  # each cycle is a fresh run
    pids = [e["pid"] for e in job.of("rank_started")]
    assert len(set(pids)) == len(pids)  # new ranks every cycle


@pytest.mark.parametrize("bad", ["--start-time=yesterday", "--exit-after-time=soon", "--model=GPT-7",
                                 "--gpu=Voodoo3"])
def test_bad_simulation_options(runner, bad):
    job = runner.run(bad)
    assert job.proc.returncode == 2 and len(job.stderr.splitlines()) == 1
    assert job.stderr.startswith("fakerun: error: ")
