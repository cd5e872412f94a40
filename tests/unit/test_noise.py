"""Values that differ between processes and occurrences, as a real run's do:
phase durations, a watchdog's stamps, Megatron's timers, DeepSpeed's
per-rank checkpoint lines. Each is drawn from the run's seed (the same run
prints the same bytes) and stays coherent with the figures around it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from fakerun import events as ev
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.render.styles.deepspeed_checkpoint import CheckpointSave
from fakerun.render.styles.deepspeed_log import DeepSpeedLog, ds_stamp, version_table
from fakerun.render.styles.megatron import MegatronLines
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world import identity
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock

T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC
PHASES = {"validation": sim.eval_seconds, "checkpoint": sim.checkpoint_seconds, "export": sim.export_seconds}


@pytest.fixture(scope="module")
def ident():
    return identity.build(4, 1, 8)


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_a_phase_never_lasts_the_same_twice_nor_on_two_ranks(ident, phase):
    seconds = PHASES[phase]
    by_step = {step: seconds(ident, 0, step) for step in range(1, 40)}
    by_rank = {rank: seconds(ident, rank, 10) for rank in range(ident.world)}
    assert len(set(by_step.values())) == len(by_step)
    assert len(set(by_rank.values())) == len(by_rank)
    assert seconds(ident, 3, 10) == seconds(ident, 3, 10)  # one seed, one run


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_every_rank_s_phase_stays_within_the_plans_bound(ident, phase):
    bound = sim.bounds(ident).sim_s
    worst = max(PHASES[phase](ident, rank, step) for rank in range(ident.world) for step in range(200))
    assert worst <= bound
    nominal = PHASES[phase](ident, 0, 0) / sim.phase_factor(ident, phase, 0, 0)
    assert worst <= nominal * sim.slowest_phase_factor(phase)


def test_each_evaluation_reports_its_own_runtime_and_the_rates_follow_it(ident):
    clock = VirtualClock(T0, UTC)
    timeline = Timeline(ident, clock)
    runtimes = []
    for step in (10, 20, 30):
        sim_s = {r: sim.eval_seconds(ident, r, step) for r in range(ident.world)}
        events, _, _ = timeline.on_collective(Completed("validation", "all_reduce", step, 1, sim_s,
                                                        {r: [2.0] for r in sim_s}, [2.0], 0))
        (validation,) = events
        assert validation.eval_time_s == max(sim_s.values())  # the slowest rank's
        runtimes.append(validation.eval_time_s)
    assert len({round(r, 4) for r in runtimes}) == 3  # as HF prints eval_runtime


def _stamp(line: str) -> datetime:
    """A c10 line's `[E101 00:02:49.851492405 ` stamp (to the microsecond)."""
    month_day, clock, nanos = re.search(r"\[E(\d+) (\d\d:\d\d:\d\d)\.(\d{9}) ", line).groups()
    return datetime.strptime(f"2026{int(month_day):04d} {clock}.{nanos[:6]}", "%Y%m%d %H:%M:%S.%f")


def test_no_two_ranks_share_a_watchdog_stamp_and_each_thread_logs_forward():
    formatter = EventFormatter(tz=UTC, ident=identity.build(4, 1, 8))
    e = ev.WatchdogTimeout("default_pg", 25, "all_reduce", 2, 600000, 600061, list(range(1, 8)), [0], T0)
    lines = formatter.lines(e)
    stamped = [(line.rank, line.text) for line in lines if re.search(r"\[E\d+ ", line.text)]
    first = {rank: text for rank, text in reversed(stamped)}
    assert len({_stamp(text) for text in first.values()}) == 7
    for rank in range(1, 8):
        mine = [_stamp(text) for r, text in stamped if r == rank]
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
        # Its own `ran for`: the deadline's overshoot plus the moment its thread looked.
        ran_for = int(re.search(r"ran for (\d+) milliseconds", first[rank]).group(1))
        lag_ms = (_stamp(first[rank]) - datetime(2026, 1, 1)).total_seconds() * 1000
        assert abs(ran_for - 600061 - lag_ms) <= 0.501
        assert 0 <= lag_ms < 1000 * sim.WATCHDOG_POLL_S
    assert formatter.lines(e) == lines


def _timer(lines) -> tuple[float, float]:
    (row,) = [line.text for line in lines if "...: (" in line.text]
    low, high = re.search(r"\(([\d.]+), ([\d.]+)\)", row).groups()
    return float(low), float(high)


def test_megatron_timers_differ_between_occasions_and_stay_ordered():
    out = MegatronLines(100, UTC)
    out.lines(ev.RunIdentity(identity.build(4, 1, 8)))
    pairs = [_timer(out._timers([("save-checkpoint", 10921.97)], step)) for step in (10, 20, 30)]
    assert len({low for low, _ in pairs}) == 3
    assert all(low < high == 10921.97 for low, high in pairs)


def test_deepspeed_ranks_save_their_shards_each_on_its_own_clock(ident):
    out = DeepSpeedLog(UTC)
    out.v = version_table("0.14.4")
    step, start = 10, T0 + 100.0
    seconds = max(sim.checkpoint_seconds(ident, r, step) for r in range(ident.world))
    e = ev.Checkpoint(step, 1, "checkpoints/x/global_step10/", 1, 1, 1, seconds, start + seconds)
    lines = CheckpointSave(out, ident, e, "checkpoints/x", "global_step10").lines()
    end = ds_stamp(e.time, UTC)
    for rank in range(ident.world):
        mine = [line.text[:25] for line in lines if line.rank == rank]
        assert mine == sorted(mine) and mine[-1] <= end
    ready = {line.text[:25] for line in lines if "is ready now!" in line.text}
    saved = {line.text[:25] for line in lines if "zero checkpoint saved" in line.text}
    assert len(ready) == len(saved) == ident.world
