"""NCCL's collective timeout on the run's clock (coordinator/collective.py
Watchdog): simulated seconds, so --speed 0 never waits the wall for it."""

from __future__ import annotations

import dataclasses
from datetime import UTC
from pathlib import Path

import pytest

from fakerun.checkpoint.reader import Resume
from fakerun.coordinator.core import Coordinator
from fakerun.coordinator.timeline import Timeline
from fakerun.launcher import build
from fakerun.world import identity
from fakerun.world.clock import VirtualClock
from tests.unit.test_config import config
from tests.unit.test_coordinator import JOB, contribute, hello, rank_routing_id


def coordinator(speed: float, stall: tuple[int, int] | None = None) -> tuple[Coordinator, VirtualClock]:
    clock = VirtualClock(0.0, UTC, speed)
    c = Coordinator(JOB, 600.0, clock, Timeline(identity.build(1, 1, 3, 20), clock), report_wall=True,
                    speed=speed, stall=stall)
    for r in range(3):
        c.handle(rank_routing_id(r), hello(r), 0.0)
    return c, clock


def arrive(c: Coordinator, ranks: tuple[int, ...], step: int, at: float = 0.0) -> None:
    for r in ranks:
        c.handle(rank_routing_id(r), contribute(r, 1, [1.0, 1.0], step=step), at)


def test_unpaced_a_collective_only_the_stalled_rank_misses_times_out_at_once_in_simulated_time():
    c, clock = coordinator(0.0, stall=(1, 4))
    arrive(c, (0, 2), step=4)
    assert c.next_deadline() <= 0.01  # due now: the loop ticks at once
    (timeout,) = c.tick(0.01).events
    assert (timeout.timeout_ms, timeout.waiting, timeout.missing) == (600_000, [0, 2], [1])
    assert timeout.time == 600.0  # the printed clock shows the whole wait
    assert timeout.elapsed_ms == 600_061  # noticed a little after the deadline, never the wall's 10 ms
    assert clock.now > 600.0


@pytest.mark.parametrize(("arrived", "step", "stall"), [
    ((0,), 4, (1, 4)),        # rank 2 is only late: it will come
    ((0, 1), 4, (1, 4)),      # the missing rank is not the stalled one
    ((0, 2), 3, (1, 4)),      # before the stall's step, rank 1 still enters collectives
    ((0, 2), 4, None),        # no stall in this run (a healthy run, or a restarted attempt)
])
def test_unpaced_a_collective_that_can_still_complete_waits(arrived, step, stall):
    c, _ = coordinator(0.0, stall=stall)
    arrive(c, arrived, step)
    assert c.tick(30.0).events == []


def test_paced_the_wall_waits_the_timeout_divided_by_the_speed():
    c, _ = coordinator(10.0, stall=(1, 4))  # the stall changes nothing when paced
    arrive(c, (0, 2), step=4)
    assert c.next_deadline() == pytest.approx(60.0)
    assert c.tick(59.9).events == []
    (timeout,) = c.tick(60.05).events
    assert timeout.elapsed_ms == 600_500  # the wall's wait, on the run's clock


def test_in_real_time_the_wall_waits_the_whole_timeout():
    c, _ = coordinator(1.0, stall=(1, 4))
    arrive(c, (0, 2), step=4)
    assert c.tick(599.0).events == []
    assert len(c.tick(600.0).events) == 1


def test_the_stall_is_the_scenario_s_and_only_while_its_step_is_ahead():
    stalled = config("--scenario", "nccl-timeout", "--fail-rank", "2", "--fail-step", "5")
    assert build.stall(stalled) == (2, 5)
    assert build.stall(config("--scenario", "hang", "--fail-step", "5")) is None
    assert build.stall(config()) is None
    # resumed at or past the step (a restarted attempt): rank/faults.py never strikes it
    for step, expected in ((4, (2, 5)), (5, None)):
        resumed = dataclasses.replace(stalled, resume_from=Resume(step, 0.0, Path("ck")))
        assert build.stall(resumed) == expected
