"""Every scenario ends the same way whatever the style: a style changes the
words, never the exit code (CI users switch styles and keep their checks)."""

from __future__ import annotations

import re

import pytest

from fakerun.world import styles

RUN = ("--nproc", "2", "--max-steps", "10", "--seed", "3", "--fail-rank", "1", "--fail-step", "5",
       "--output", "plain", "--collective-timeout", "1")
# The preemption's SIGTERM must land while the ranks are still training, and
# the step it stops at end within the shutdown grace: Llama-3.2-3B's 10.5 s
# steps (seed 3) at 0.26 s each.
PACED = {"preemption": ("--speed", "40")}
SCENARIOS = ("healthy", "loss-spike", "straggler", "nan-loss", "cuda-oom", "rank-crash", "rank-exit",
             "segfault", "nccl-timeout", "preemption", "node-failure")
OTHERS = [name for name in styles.FRAMEWORKS if name != styles.DEFAULT]
OWN_FRAME = re.compile(r'File "[^"]*/fakerun/[^"]*\.py"')  # a traceback through fakerun's own code
_torchrun: dict[str, int] = {}


def exit_code(runner, scenario: str, style: str) -> int:
    pace = PACED.get(scenario, ("--speed", "0"))
    job = runner.run(*RUN, *pace, "--scenario", scenario, "--style", style)
    assert not OWN_FRAME.search(job.stdout + job.stderr), job.stderr[-1500:]  # fakerun never crashes
    return job.proc.returncode


@pytest.mark.parametrize("style", OTHERS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_exits_as_under_torchrun(runner, scenario, style):
    if scenario not in _torchrun:
        _torchrun[scenario] = exit_code(runner, scenario, styles.DEFAULT)
    assert exit_code(runner, scenario, style) == _torchrun[scenario]
