"""--max-restarts, preemption + --resume, and @record's error.json."""

from __future__ import annotations

import json
import re

from tests.e2e.torchrun_versions import WHERE, torch_of

# Seed 5's 20 steps evaluate and save every 5: a checkpoint (at 5) before the crash at 8.
CRASH = ("--nproc", "3", "--max-steps", "20", "--speed", "0", "--seed", "5", "--scenario", "rank-crash",
         "--fail-rank", "1", "--fail-step", "8")


def metrics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_restart_resumes_from_the_last_checkpoint(runner, tmp_path):
    logs, m = tmp_path / "logs", tmp_path / "m.jsonl"
    job = runner.run(*CRASH, "--max-restarts", "1", "--log-dir", str(logs), "--metrics-file", str(m),
                     "--output", "jsonl")
    assert job.proc.returncode == 0, job.stderr[-1500:]
    (run_dir,) = logs.iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["attempt_0", "attempt_1"]
    assert sorted(p.name for p in (run_dir / "attempt_1").iterdir()) == ["0", "1", "2"]
    starts = job.of("run_started")
    assert [s["restart_count"] for s in starts] == [0, 1]
    (restart,) = job.of("restart")
    saved = [c["step"] for c in job.of("checkpoint")]
    assert restart["resume_step"] == saved[0] < 8
    steps = [s["step"] for s in job.of("step")]
    assert steps == list(range(1, 8)) + list(range(saved[0] + 1, 21))  # continues from the checkpoint
    envs = [e["env"]["TORCHELASTIC_RESTART_COUNT"] for e in job.of("rank_started")]
    assert envs == ["0"] * 3 + ["1"] * 3
    pids = [e["pid"] for e in job.of("rank_started")]
    assert len(set(pids)) == 6  # new processes
    assert "FAILED" not in job.stderr  # torchrun reports no table for a restarted attempt
    assert [r["restart_count"] for r in metrics(m) if r.get("event") == "restart"] == [1]
    # ...but logs its failed line: torch elastic's _poll does for every attempt.
    (failed,) = job.of("attempt_failed")
    assert failed["root"]["rank"] == 1 and failed["root"]["pid"] == pids[1]
    where = WHERE[torch_of(job)]["failed"]
    assert re.search(rf"{where}\] failed \(exitcode: 1\) local_rank: 1 \(pid: {pids[1]}\) of binary: ", job.stderr)


def test_every_failed_attempt_logs_its_failed_line(runner):
    """--max-restarts 2: torch elastic logs `failed (exitcode: …)` for each
    attempt that fails (captured from the torch 2.13 wheel: three attempts of a
    crashing script, three lines), the ChildFailedError report for the last
    only. The script's own sys.exit(1) comes back in every attempt."""
    job = runner.run(*CRASH[:-6], "--scenario", "rank-exit", *CRASH[-4:], "--max-restarts", "2",
                     "--output", "jsonl")
    assert job.proc.returncode == 1, job.stderr[-1500:]
    rank1 = [e["pid"] for e in job.of("rank_started") if e["rank"] == 1]
    lines = [line for line in job.stderr.splitlines() if "] failed (exitcode: " in line]
    assert len(rank1) == 3 and len(lines) == 3
    assert all(f"local_rank: 1 (pid: {pid}) of binary: " in line for pid, line in zip(rank1, lines, strict=True))
    assert job.stderr.count("train.py FAILED") == 1  # the report, for the last attempt only
    assert [s["restart_count"] for s in job.of("run_started")] == [0, 1, 2]


def test_a_transient_fault_is_gone_after_a_restart(runner):
    """A CUDA illegal memory access (rank-crash): attempt 0 fails, attempt 1 finishes."""
    job = runner.run(*CRASH, "--max-restarts", "2", "--output", "jsonl")
    assert job.proc.returncode == 0, job.stderr[-1500:]
    first = [e["pid"] for e in job.of("rank_started")][1]
    lines = [line for line in job.stderr.splitlines() if "] failed (exitcode: " in line]
    assert len(lines) == 1 and f"local_rank: 1 (pid: {first}) of binary: " in lines[0]
    assert "FAILED" not in job.stderr


def test_restarts_exhausted_is_a_failure(runner):
    job = runner.run(*CRASH, "--max-restarts", "0")
    assert job.proc.returncode == 1 and "train.py FAILED" in job.stderr


def test_preemption_then_resume_matches_an_uninterrupted_run(runner, tmp_path):
    args = ("--nproc", "2", "--max-steps", "16", "--seed", "5")
    whole = tmp_path / "whole.jsonl"
    assert runner.run(*args, "--speed", "0", "--metrics-file", str(whole)).proc.returncode == 0
    out, first, second = tmp_path / "out", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # pythia-1.4b's 28.6 s steps (seed 5) at 0.29 s each: the SIGTERM lands mid-training, and
    # the step it stops at ends well within the shutdown grace (5 s).
    pre = runner.run(*args, "--speed", "100", "--scenario", "preemption", "--fail-step", "6",
                     "--output-dir", str(out), "--metrics-file", str(first))
    assert pre.proc.returncode == 1  # torchrun's SignalException, uncaught
    assert "Received 15 death signal, shutting down workers" in pre.stderr and "FAILED" not in pre.stderr
    assert (out / "checkpoint-6" / "scheduler.pt").exists()  # the default style's layout: written last
    post = runner.run(*args, "--speed", "0", "--output-dir", str(out), "--resume", "--metrics-file", str(second))
    assert post.proc.returncode == 0

    def training(path):  # the figures of the run; wall-clock-free but not the timestamps
        return [{k: v for k, v in r.items() if k != "time"} for r in metrics(path) if r["type"] in ("train", "eval")]

    assert training(first) + training(second) == training(whole)


def test_exception_deaths_write_record_error_files(runner, tmp_path):
    logs = tmp_path / "logs"
    job = runner.run(*CRASH, "--log-dir", str(logs))
    assert job.proc.returncode == 1
    (run_dir,) = logs.iterdir()
    path = run_dir / "attempt_0" / "1" / "error.json"
    record = json.loads(path.read_text())["message"]
    assert record["message"].startswith("RuntimeError: CUDA error: an illegal memory access was encountered")
    assert record["extraInfo"]["py_callstack"].startswith("Traceback (most recent call last):\n")
    assert record["extraInfo"]["timestamp"].isdigit()
    root = job.stderr.split("Root Cause (first observed failure):\n", 1)[1]
    assert f"  error_file: {path}\n" in root
    # @record's traceback.format_exc(): from its own wrapper frame on (captured from torch 2.13's).
    assert re.search(r'  traceback : Traceback \(most recent call last\):\n    File "\S+/site-packages/torch/'
                     r'distributed/elastic/multiprocessing/errors/__init__\.py", line \d+, in wrapper\n'
                     r'      return f\(\*args, \*\*kwargs\)\n', root)
    assert "in <module>" not in root
    where = WHERE[torch_of(job)]["error_file"]
    assert f"{where}] no error file defined for parent, to copy child error file ({path})" in job.stderr
