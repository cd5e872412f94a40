"""An AMD Instinct job end to end: the golden log of a 2 x MI300X run (seed
5, 12 steps, plain), at the default style with NCCL_DEBUG=INFO as the demo
sets it: ROCm's banner line, RCCL's init lines, the xGMI bus in the box."""

from __future__ import annotations

from tests.e2e.test_simulation import GOLDEN, assert_golden, fixed_run


def test_golden_amd_mi300x(runner):
    job = fixed_run(runner, "--nproc", "2", "--max-steps", "12", "--output", "plain", "--gpu", "AMD Instinct MI300X")
    assert_golden(job, GOLDEN.with_name("seed5_2x12_mi300x.txt"))
    assert "RCCL version 2.20.5+hip6.2 HEAD:45b618a+" in job.stdout


def test_a_gpu_memory_fault_aborts_the_rank_as_rocm_6_does(runner):
    # ROCm 6's HSA runtime prints the fault and aborts: no traceback, no error file, SIGABRT.
    job = runner.run("--nproc", "2", "--max-steps", "8", "--speed", "0", "--seed", "5", "--fail-rank", "1",
                     "--fail-step", "4", "--output", "jsonl", "--gpu", "AMD Instinct MI300X", "--scenario",
                     "rank-crash")
    assert job.proc.returncode == 1, job.stderr[-2000:]
    lines = [x for e in job.of("rank_output") if e["rank"] == 1 for x in e["lines"]]
    assert len(lines) == 1 and lines[0].startswith("Memory access fault by GPU node-3 (Agent handle: 0x")
    assert lines[0].endswith(". Reason: Page not present or supervisor privilege.")
    assert "exitcode  : -6 (pid: " in job.stderr and "Signal 6 (SIGABRT) received by PID" in job.stderr
