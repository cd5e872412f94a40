"""Ctrl+C under --loop, at seeded moments of a fast loop: inside a run, and in
the gap between one run's end and the next run's ranks (a run at --speed 0
lasts ~60 ms, so the moments cover every part of a cycle). Every one ends
the loop: exit 130, the signal reported, nothing left, within the bound of
the other Ctrl+C tests."""

from __future__ import annotations

import signal
import statistics
import time

from tests.conftest import Runner, job_processes
from tests.reliability.conftest import rng, seed_note, side_by_side
from tests.reliability.test_ctrl_c import EXIT_BOUND_S, EXIT_TIMEOUT_S

RUNS = 24
SIDE_BY_SIDE = 8
CYCLE_S = 0.08  # a little more than one --speed 0 run of 3 steps


def ctrl_c_in_the_loop(runner: Runner, i: int) -> float:
    r = rng(f"loop-ctrl-c:{i}")
    args = ["--nproc", "2", "--max-steps", "3", "--speed", "0", "--loop", "--output", "jsonl",
            "--seed", str(r.randrange(10_000))]
    job = runner.start(*args)
    job.wait_for_event("run_finished", count=r.randint(1, 3))
    time.sleep(r.uniform(0, CYCLE_S))  # the injected moment, not a wait for state
    job.kill(signal.SIGINT)  # to the launcher alone, as `kill -INT $!` sends it
    sent = time.monotonic()
    code = job.wait(EXIT_TIMEOUT_S)
    took = time.monotonic() - sent
    where = f"Ctrl+C in loop run {i} ({' '.join(args)}; {seed_note()})"
    assert code == 130, f"{where}: exit {code}\n{job.stderr[-2000:]}"
    assert took <= EXIT_BOUND_S, f"{where}: {took:.1f} s from SIGINT to exit"
    assert not job_processes(job.marker), f"{where}: processes left"
    assert job.of("shutdown", signal=signal.SIGINT), where
    last = job.events()[-1]
    assert (last["event"], last.get("exit_code")) == ("run_finished", 130), where
    return took


def test_ctrl_c_at_seeded_moments_of_a_fast_loop(runner: Runner) -> None:
    took = side_by_side(lambda i: ctrl_c_in_the_loop(runner, i), RUNS, SIDE_BY_SIDE)
    print(f"Ctrl+C under --loop, {RUNS} moments: median {statistics.median(took):.2f} s, "
          f"max {max(took):.2f} s")
