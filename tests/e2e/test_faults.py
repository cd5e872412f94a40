"""Failures and signals, torch-elastic style; nothing may outlive a job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import FAKERUN, SHORT_STEPS, gone, job_processes, wait_until
from tests.e2e.torchrun_versions import WHERE, exitcode_line, torch_of

# Start-up in ~0.4 s, then a step every ~0.06 s (2.2 s simulated at --speed 35) for 25 s.
RUNNING = ("--nproc", "4", "--max-steps", "400", *SHORT_STEPS, "--speed", "35", "--output", "jsonl")


def root_cause(stderr: str) -> str:
    return stderr.split("Root Cause (first observed failure):\n", 1)[1]


def test_sigkill_of_a_rank_fails_the_job(runner):
    job = runner.start(*RUNNING)
    job.wait_for_event("step")
    victim = next(e for e in job.of("rank_started") if e["rank"] == 2)
    psutil.Process(victim["pid"]).kill()
    assert job.wait() == 1
    root = root_cause(job.stderr)
    torch_of(job)  # one whose box we know
    assert "  rank      : 2 (local_rank: 2)\n" in root
    assert exitcode_line(-9, victim["pid"]) in root
    assert f"  traceback : Signal 9 (SIGKILL) received by PID {victim['pid']}\n" in root
    # The survivors were sent SIGTERM, as torchrun does; up to torch 2.9.1
    # (every pin) the box lists only what failed before that teardown
    # (elastic/multiprocessing/api.py LocalSubprocessContext._poll).
    others = [e for e in job.of("rank_started") if e["rank"] != 2]
    for e in others:
        assert f"Sending process {e['pid']} closing signal SIGTERM" in job.stderr
    assert "Failures:\n  <NO_OTHER_FAILURES>\n" in job.stderr
    assert " (SIGTERM) received by PID " not in job.stderr
    assert job.events()[-1]["exit_code"] == 1


def test_rank_exit_nonzero_is_the_root_cause(runner):
    job = runner.run("--nproc", "4", "--max-steps", "20", "--speed", "0",
                     "--scenario", "rank-exit", "--fail-rank", "3", "--fail-step", "5",
                     "--output", "jsonl")
    assert job.proc.returncode == 1
    root = root_cause(job.stderr)
    pid = next(e["pid"] for e in job.of("rank_started") if e["rank"] == 3)
    assert "  rank      : 3 (local_rank: 3)\n" in root
    assert exitcode_line(1, pid) in root
    assert re.search(rf"E\d{{4}} [\d:.]+ \d+ {WHERE[torch_of(job)]['failed']}\] "
                     rf"failed \(exitcode: 1\) local_rank: 3 \(pid: {pid}\) of binary: ", job.stderr)
    assert [s["step"] for s in job.of("step")] == [1, 2, 3, 4]


def test_rank_crash_prints_prefixed_traceback(runner):
    job = runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0",
                     "--scenario", "rank-crash", "--fail-rank", "1", "--fail-step", "3")
    assert job.proc.returncode == 1
    lines = [line for line in job.stdout.splitlines() + job.stderr.splitlines()
             if line.startswith("[default1]:[rank1]: ")]
    assert lines[0] == "[default1]:[rank1]: Traceback (most recent call last):"
    assert '[default1]:[rank1]:   File "/workspace/train.py", line 236, in <module>' in lines
    assert "[default1]:[rank1]: RuntimeError: CUDA error: an illegal memory access was encountered" in lines
    assert lines[-1] == "[default1]:[rank1]: Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
    assert not any("fakerun" in line for line in lines)  # the training script's frames, not ours


def test_failure_box_layout(runner):
    job = runner.run("--nproc", "2", "--max-steps", "10", "--speed", "0",
                     "--scenario", "rank-exit", "--fail-rank", "0", "--fail-step", "2")
    err = job.stderr
    box = err[err.index("ChildFailedError: \n") + len("ChildFailedError: \n"):].splitlines()
    width = len(box[0])
    assert box[0] == "=" * width and box[-1] == "=" * width and width <= 60
    assert box[1:4] == ["train.py FAILED", "-" * width, "Failures:"]
    assert box[4] == "  <NO_OTHER_FAILURES>"  # the other rank, SIGTERMed after, is not listed up to 2.9.1
    assert "Root Cause (first observed failure):" in box


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_launcher(runner, sig):
    """torchrun's sequence (captured from the torch 2.13 wheel): the death
    signal, the same signal to every worker, for SIGINT each worker's
    `[rankN]:` KeyboardInterrupt traceback (SIGTERM kills them without a
    word), then the launcher's uncaught SignalException: exit 1."""
    job = runner.start(*RUNNING)
    job.wait_for_event("step")
    job.kill(sig)
    assert job.wait() == 1
    assert f"Received {int(sig)} death signal, shutting down workers" in job.stderr
    for e in job.of("rank_started"):
        assert f"Sending process {e['pid']} closing signal {sig.name}" in job.stderr
    said = {e["rank"]: e["lines"] for e in job.of("rank_output")}
    if sig == signal.SIGINT:
        assert sorted(said) == [0, 1, 2, 3]
        for rank, lines in said.items():
            assert lines[0] == f"[rank{rank}]: Traceback (most recent call last):"
            assert lines[-1] == f"[rank{rank}]: KeyboardInterrupt"
            assert not any("fakerun" in line for line in lines)  # the training script's frames, not ours
        assert {e["exitcode"] for e in job.of("rank_exited")} <= {-signal.SIGINT}
    else:
        assert not said
    assert job.stderr.rstrip().endswith(f"SignalException: Process {job.proc.pid} got signal: {int(sig)}")
    assert "FAILED" not in job.stderr  # torchrun prints no ChildFailedError table here
    assert job.events()[-1]["exit_code"] == 1


def test_slurm_s_warning_to_an_agent_told_to_handle_it(runner):
    """torch 2.13's --signals-to-handle naming SIGUSR1: the agent's handler
    raises SignalException for it as for SIGTERM (elastic/multiprocessing/
    api.py at v2.13.0), so the sequence is SIGTERM's, with SIGUSR1 sent on to
    the workers (_shutdown(e.sigval)), which die of it; not the agent's own
    death of an unhandled SIGUSR1 (tests/e2e/test_slurm.py)."""
    job = runner.start(*RUNNING, "--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    job.wait_for_event("step")
    job.kill(signal.SIGUSR1)
    assert job.wait() == 1
    assert f"Received {int(signal.SIGUSR1)} death signal, shutting down workers" in job.stderr
    for e in job.of("rank_started"):
        assert f"Sending process {e['pid']} closing signal SIGUSR1" in job.stderr
    assert {e["exitcode"] for e in job.of("rank_exited")} <= {-signal.SIGUSR1}
    assert job.stderr.rstrip().endswith(f"SignalException: Process {job.proc.pid} got signal: {int(signal.SIGUSR1)}")
    assert job.events()[-1]["exit_code"] == 1


def test_ctrl_c_to_the_process_group(runner):
    """A terminal's Ctrl+C reaches the whole foreground process group."""
    marker = runner.new_marker()
    proc = subprocess.Popen([*FAKERUN, "--rdzv-id", marker, *RUNNING], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for line in proc.stdout:  # mid-training, not during start-up
            if b'"event":"step"' in line:
                break
        assert len(job_processes(marker)) == 5
        os.killpg(proc.pid, signal.SIGINT)
        proc.stdout.read()
        assert proc.wait(30) == 1  # torchrun's: its SignalException goes uncaught
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_sigkill_of_launcher_takes_ranks_down(runner):
    job = runner.start(*RUNNING)
    job.wait_for_event("step")
    pids = [e["pid"] for e in job.of("rank_started")]
    job.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    assert job.wait() == -9

    def all_gone() -> bool:
        # Both: a rank that is exiting has lost its command line (no marker to
        # find) a moment before it is a zombie.
        return not job_processes(job.marker) and all(gone(pid) for pid in pids)

    wait_until(all_gone, 2.0)
    elapsed = time.monotonic() - killed_at
    assert elapsed < 2.0


def test_hung_rank_trips_the_watchdog(runner):
    job = runner.run("--nproc", "3", "--max-steps", "20", "--speed", "0", "--scenario", "nccl-timeout",
                     "--fail-rank", "2", "--fail-step", "4", "--collective-timeout", "1")
    assert job.proc.returncode == 1
    out = job.stdout
    for rank in (0, 1):
        assert re.search(
            rf"\[default{rank}\]:\[rank{rank}\]:\[E\d{{3,4}} [\d:]+\.\d{{9}} ProcessGroupNCCL\.cpp:607\] "
            rf"\[Rank {rank}\] Watchdog caught collective operation timeout: WorkNCCL\(SeqNum=\d+, "
            r"OpType=ALLREDUCE, NumelIn=(\d+), NumelOut=\1, Timeout\(ms\)=1000\) ran for \d+ milliseconds "
            r"before timing out\.", out + job.stderr)
    assert "  exitcode  : -6 (pid: " in job.stderr  # SIGABRT, as ProcessGroupNCCL dies
    assert "(SIGABRT)" in job.stderr
    # The hung rank itself is SIGTERMed after the others aborted: up to 2.9.1 not listed.
    assert job.stderr.count(" closing signal SIGTERM") == 1
    assert "Signal 15 (SIGTERM)" not in job.stderr


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_closed_stdout_pipe(runner, reader):
    """The reader leaves mid-run (head) or before the ranks even start (true).
    PYTHONUNBUFFERED is unset: a block-buffered stdout must not fail at exit."""
    marker = runner.new_marker()
    cmd = " ".join([*FAKERUN, "--rdzv-id", marker, "--nproc", "4", "--max-steps", "200",
                    "--speed", "4"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"{cmd} | {reader}"],
                            capture_output=True, text=True, timeout=60, env=env)
    if reader.startswith("head"):
        assert result.stdout.startswith("[default0]:")
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert result.returncode == 141
