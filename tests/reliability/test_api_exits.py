"""fakerun.run() from a test suite: however the call is left (its timeout, a
bad argument, the caller's Ctrl+C), the job has ended when it is, every
process of it gone (not ending a moment later: at once)."""

from __future__ import annotations

import _thread
import math
import threading
from collections.abc import Iterator

import pytest

import fakerun
from tests.conftest import Runner, job_processes, wait_until
from tests.reliability.conftest import Started, started_together

START_TIMEOUT_S = 30.0


def interrupt_once_running(marker: str) -> threading.Thread:
    """The caller's Ctrl+C (KeyboardInterrupt in its main thread) once the
    job's ranks are up."""
    def fire() -> None:
        wait_until(lambda: len(job_processes(marker)) >= 3, START_TIMEOUT_S)  # the launcher and 2 ranks
        _thread.interrupt_main()
    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def test_the_callers_ctrl_c_ends_the_job(runner: Runner) -> None:
    marker = runner.new_marker()
    thread = interrupt_once_running(marker)
    with pytest.raises(KeyboardInterrupt):
        fakerun.run(nproc=2, max_steps=1000, speed=1, rdzv_id=marker, timeout=60)
    thread.join(START_TIMEOUT_S)
    assert not job_processes(marker)


@pytest.mark.parametrize("timeout", [math.nan, 0, -1.0])
def test_a_bad_timeout_is_refused_before_anything_runs(runner: Runner, timeout: float) -> None:
    marker = runner.new_marker()
    with pytest.raises(ValueError, match="timeout"):
        fakerun.run(nproc=2, max_steps=3, speed=0, rdzv_id=marker, timeout=timeout)
    assert not job_processes(marker)


def timeout_with_nodes(runner: Runner) -> None:
    """The job of test_a_timeout_with_nodes_leaves_nothing."""
    marker = runner.new_marker()
    with pytest.raises(fakerun.FakerunTimeout) as info:
        fakerun.run(nodes=2, nproc=2, max_steps=1000, speed=1, rdzv_id=marker, timeout=2)
    assert not job_processes(marker)
    assert info.value.result.of("run_started")  # what it printed until then is kept


@pytest.fixture(scope="module", autouse=True)
def started(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    """run()'s two seconds, waited out side by side with the module's other
    tests (run() starts its job with Popen and takes no signal: a thread
    may call it)."""
    yield from started_together(request, tmp_path_factory, {
        "test_a_timeout_with_nodes_leaves_nothing": timeout_with_nodes})


def test_a_timeout_with_nodes_leaves_nothing(started: dict[str, Started]) -> None:
    """The agents run in sessions of their own: killing the launcher's group
    left them (and their ranks) running for up to a second."""
    started["test_a_timeout_with_nodes_leaves_nothing"].result()
