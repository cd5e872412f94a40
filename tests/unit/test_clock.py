"""The run's clock (world/clock.py) and a rank's pacing (rank/pacing.py),
on fake wall clocks: the one clock that every printed time comes from."""

from __future__ import annotations

from datetime import UTC

import pytest

from fakerun.rank import pacing
from fakerun.rank.pacing import Pacer
from fakerun.world.clock import VirtualClock

START = 1_800_000_000.0


class Wall:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_at_speed_0_only_the_work_moves_the_clock():
    wall = Wall()
    clock = VirtualClock(START, UTC, 0.0, wall)
    wall.now += 100
    assert clock() == START  # the wall never enters it: the same arguments, the same bytes
    assert clock.rebase() == START
    assert clock.advance(2.5) == START + 2.5 and clock() == START + 2.5


def test_at_a_speed_the_clock_runs_with_the_wall_where_no_work_is_simulated():
    wall = Wall()
    clock = VirtualClock(START, UTC, 4.0, wall)
    wall.now += 10  # a rendezvous wait
    assert clock.rebase() == START + 40  # the ranks' work counts from the Welcome
    assert clock.advance(3.0) == START + 43  # their work, not the wall, moves it


def test_a_launcher_line_between_two_collectives_is_not_counted_twice():
    wall = Wall()
    clock = VirtualClock(START, UTC, 1.0, wall)
    clock.rebase()
    wall.now += 2.0  # half way through a 4 s step, a launcher line reads the clock
    assert clock() == START + 2.0
    assert clock.advance(4.0) == START + 4.0  # the step's end: from the last release, not from the read
    wall.now += 10.0  # ranks that fell behind: the clock never goes back behind a time shown
    assert clock() == START + 12.0
    assert clock.advance(1.0) == START + 12.0


def test_another_node_follows_node_0_and_goes_on_from_its_welcome():
    wall = Wall()
    clock = VirtualClock(START, UTC, 2.0, wall)
    assert clock.reach(START + 100.0, anchor=True) == START + 100.0
    wall.now += 1.0
    assert clock() == START + 102.0
    assert clock.reach(START + 101.0) == START + 102.0  # an older event never moves it back


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    wall, naps = Wall(), []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        wall.now += seconds

    monkeypatch.setattr(pacing.time, "monotonic", wall)
    monkeypatch.setattr(pacing.time, "sleep", sleep)
    return naps


def test_a_rank_sleeps_until_its_collective_ends_on_the_wall(slept):
    pacer = Pacer(2.0, lambda op, numel, step: 0.5, anchor=(50.0, START))
    pacer.wait(START + 3.5, "all_reduce", 10)  # 3.5 s of work and a 0.5 s all_reduce: 4 s at 2x
    assert slept == [2.0]
    pacer.wait(START + 3.5, "all_reduce", 10)  # targets are absolute: no drift, no second sleep
    assert slept == [2.0]


def test_pacing_never_outlasts_exit_after_time_nor_runs_at_speed_0_or_after_a_stop(slept):
    Pacer(1.0, lambda op, numel, step: 0.0, until=53.0, anchor=(50.0, START)).wait(START + 60, "barrier", 0)
    Pacer(0.0, lambda op, numel, step: 0.0, anchor=(50.0, START)).wait(START + 60, "barrier", 0)
    Pacer(1.0, lambda op, numel, step: 0.0, anchor=(50.0, START), on=False).wait(START + 60, "barrier", 0)
    assert slept == [3.0]
