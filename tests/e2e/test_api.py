"""fakerun.run(): the Python API a test suite uses."""

from __future__ import annotations

import pytest

import fakerun
from tests.conftest import job_processes


def test_run_returns_exit_code_events_and_output(runner):
    marker = runner.new_marker()
    result = fakerun.run(nproc=3, max_steps=8, speed=0, seed=2, scenario="rank-crash", fail_rank=2,
                         fail_step=4, rdzv_id=marker, timeout=60)
    assert not result.ok and result.exit_code == 1
    (failed,) = result.of("run_failed")
    assert (failed["root"]["rank"], failed["root"]["exitcode"]) == (2, 1)
    assert [s["step"] for s in result.of("step")] == [1, 2, 3]
    assert "Root Cause (first observed failure):" in result.stderr
    assert result.events[-1]["event"] == "run_finished" and not job_processes(marker)


def test_a_healthy_run_and_the_script_arguments(runner):
    marker = runner.new_marker()
    result = fakerun.run("pretrain.py", ["--lr", "3e-4"], nproc=2, max_steps=3, speed=0, rdzv_id=marker,
                         timeout=60)
    assert result.ok
    started = result.of("run_started")[0]
    assert (started["entrypoint"], started["args"]) == ("pretrain.py", ["--lr", "3e-4"])


def test_unknown_options_fail_before_anything_runs():
    with pytest.raises(ValueError, match="unknown option 'nprocs'"):
        fakerun.run(nprocs=2)
    # The value in the flag's own word: one that starts with a dash is never read as an option.
    assert fakerun.api.to_argv({"max_steps": 5, "funny": True, "seed": None}) == ["--max-steps=5", "--funny"]


def test_a_value_only_the_command_can_judge_is_raised_in_its_words(runner):
    """A scenario it has not got: its exit 2 and one line, raised (it was
    returned as a Result with exit code 2)."""
    marker = runner.new_marker()
    with pytest.raises(ValueError, match=r"^fakerun\.run\(\): unknown scenario 'nope'; see --list-scenarios$"):
        fakerun.run(nproc=2, max_steps=3, speed=0, scenario="nope", rdzv_id=marker, timeout=60)
    assert not job_processes(marker)


def test_timeout_kills_the_whole_job(runner):
    marker = runner.new_marker()
    with pytest.raises(fakerun.FakerunTimeout) as info:
        fakerun.run(nproc=2, max_steps=50, speed=0, scenario="hang", fail_rank=1, fail_step=3,
                    rdzv_id=marker, timeout=3)
    assert [s["step"] for s in info.value.result.of("step")] == [1, 2]
    assert not job_processes(marker)


def test_cuda_oom_through_the_api(runner):
    marker = runner.new_marker()
    result = fakerun.run(scenario="cuda-oom", nproc=4, max_steps=10, speed=0, fail_rank=3, fail_step=5,
                         rdzv_id=marker, timeout=60)
    assert result.exit_code == 1
    root = result.of("run_failed")[0]["root"]
    assert root["rank"] == 3 and root["exitcode"] == 1 and root["error_file"].endswith("/3/error.json")
    oom = [x for e in result.of("rank_output") for x in e["lines"] if "OutOfMemoryError" in x]
    # torch 2.3's class is torch.cuda.OutOfMemoryError; torch.OutOfMemoryError from 2.4 on.
    torch = result.of("run_identity")[0]["identity"]["versions"]["torch"]
    name = "torch.cuda.OutOfMemoryError" if torch.startswith("2.3.") else "torch.OutOfMemoryError"
    device = "HIP" if result.of("run_identity")[0]["identity"]["gpu"]["vendor"] == "amd" else "CUDA"
    assert oom and oom[0].startswith(f"[rank3]: {name}: {device} out of memory. Tried to allocate ")
    assert not job_processes(marker)
