"""Every signal torch elastic's agent takes as a death signal (SIGINT, SIGTERM,
SIGHUP, SIGQUIT) stops the job the same way: the ranks are shut down, the run
directory is removed, nothing is left, exit 1 (torchrun's: the agent's
SignalException goes uncaught, torch/distributed/elastic/multiprocessing/api.py
_terminate_process_handler, v2.3.1 to v2.13.0)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import SHORT_STEPS, Runner, job_processes

EXIT_TIMEOUT_S = 15.0


def runtime_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose runtime directory (where run dirs live) is the test's own."""
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    return {**os.environ, "XDG_RUNTIME_DIR": str(xdg)}, xdg / "fakerun"


@pytest.mark.parametrize("nodes", [[], ["--nodes", "2", "--no-theatre"]], ids=["one-node", "two-nodes"])
def test_sigquit_stops_the_job_like_the_other_death_signals(runner: Runner, tmp_path: Path,
                                                            nodes: list[str]) -> None:
    env, runtime = runtime_env(tmp_path)
    job = runner.start(*nodes, "--nproc", "2", *SHORT_STEPS, "--speed", "40", "--max-steps", "500", "--output", "jsonl",
                       env=env, new_session=True)
    job.wait_for_event("step", count=len(nodes) // 2 + 1)  # every node's ranks are training
    job.kill(signal.SIGQUIT)
    code = job.wait(EXIT_TIMEOUT_S)
    assert code == 1, (code, job.stderr[-3000:])
    assert job.of("shutdown", signal=signal.SIGQUIT), job.stdout[-2000:]
    assert {e["exit_code"] for e in job.of("run_finished")} == {1}
    assert "Received 3 death signal" in job.stderr
    assert not job_processes(job.marker)
    assert not [p.name for p in runtime.glob("job-*")], "the run directory must be removed"
