"""Values that differ between processes and occurrences, as a real run's do:
phase durations, a watchdog's stamps, Megatron's timers, DeepSpeed's
per-rank checkpoint lines. Each is drawn from the run's seed (the same run
prints the same bytes) and stays coherent with the figures around it. And
the warnings ProcessGroupNCCL prints in every healthy run of the pinned
torch where the script triggers them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from fakerun import events as ev
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.render.styles import renderer_for
from fakerun.render.styles.deepspeed_checkpoint import CheckpointSave
from fakerun.render.styles.deepspeed_engine import EngineInit
from fakerun.render.styles.deepspeed_log import DeepSpeedLog, ds_stamp, version_table
from fakerun.render.styles.megatron import MegatronLines
from fakerun.render.torchrun.formatter import WATCHDOG_GAPS_US, EventFormatter
from fakerun.world import catalog, identity, styles
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock
from fakerun.world.settings import Flags, resolve

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
    """A c10 line's `[E101 00:02:49.851492405 ` (or [W...) stamp, to the microsecond."""
    month_day, clock, nanos = re.search(r"\[[EW](\d+) (\d\d:\d\d:\d\d)\.(\d{9}) ", line).groups()
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


def test_the_clock_moves_past_every_watchdog_line_however_late_its_thread_looks():
    """The coordinator advances its clock by WATCHDOG_REPORT_S after a timeout: a
    rank's last line comes at most the poll, the first gap and a gap per further line
    (the watchdog's sequence: its text's lines) after the deadline."""
    lines = len(EventFormatter().text["watchdog"]) + 1
    worst_us = WATCHDOG_GAPS_US[0][1] + (lines - 2) * WATCHDOG_GAPS_US[1][1]
    assert sim.WATCHDOG_POLL_S + worst_us * 1e-6 < sim.WATCHDOG_REPORT_S


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
    assert len(ready) >= ident.world // 2 and len(saved) >= ident.world // 2  # whole milliseconds



def test_deepspeed_ranks_log_their_config_mesh_line_each_at_its_own_moment(ident):
    out = DeepSpeedLog(UTC)
    out.v = version_table("0.16.4")
    lines = EngineInit(out, ident, T0 + 15.0).lines()
    mesh = [line.text[:25] for line in lines if "Config mesh_device" in line.text]
    # Whole milliseconds: two processes may share one, but not the whole job.
    assert len(mesh) == ident.world and len(set(mesh)) >= ident.world // 2
    rank0 = [line.text[:25] for line in lines if line.rank == 0 and line.text.startswith("[20")]
    assert rank0 == sorted(rank0)

# -- ProcessGroupNCCL's warnings of a healthy run --------------------------------
def _job(style: str, torch: str, nproc: int = 4) -> EventFormatter:
    """A formatter for `style`'s script on the software set of torch `torch`, its ranks started."""
    versions = next(v for v in catalog.versions() if v.torch == torch)
    ident = identity.build(4, 1, nproc, versions=versions)
    formatter = EventFormatter(tz=UTC, script=renderer_for(styles.parse(style), 100, UTC), ident=ident,
                               settings=resolve(Flags(), {}, drop_in=True))
    formatter.lines(ev.RunIdentity(ident))
    formatter.lines(ev.RendezvousComplete(nproc, list(range(nproc)), [4100 + r for r in range(nproc)]))
    return formatter


def _warnings(lines, text: str) -> dict[int, str]:
    found = [(line.rank, line.text) for line in lines if text in line.text]
    assert all(line_rank is not None for line_rank, _ in found)
    assert len({rank for rank, _ in found}) == len(found)  # once per process
    return dict(found)


def _finish(formatter: EventFormatter, exit_code: int = 0) -> list:
    formatter.lines(ev.Phase("summary", "", 30, T0 + 500.0))
    return formatter.lines(ev.RunFinished(exit_code, 30))


def test_an_hf_script_s_first_barrier_guesses_each_rank_s_gpu_on_torch_2_5():
    lines = _job("hf", "2.5.1").lines(ev.Phase("init", "nccl", 0, T0 + 2.0))
    guessed = _warnings(lines, "to perform barrier")
    assert sorted(guessed) == [0, 1, 2, 3]
    # As kohya-ss/sd-scripts#1925's rank 4 (torch 2.5), stamp aside.
    assert re.sub(r"\[W\d+ [\d:.]+ ", "[W<stamp> ", guessed[3]) == (
        "[rank3]:[W<stamp> ProcessGroupNCCL.cpp:4115] [PG ID 0 PG GUID 0 Rank 3]  using GPU 3 to perform "
        "barrier as devices used by this process are currently unknown. This can potentially cause a hang if "
        "this rank to GPU mapping is incorrect.Specify device_ids in barrier() to force use of a particular "
        "device,or call init_process_group() with a device_id.")
    assert len({_stamp(text) for text in guessed.values()}) == 4
    assert all(line.stream == "stderr" for line in lines if "to perform barrier" in line.text)


@pytest.mark.parametrize(("style", "torch", "line"), [("hf", "2.5.1", 1250), ("hf", "2.4.1", 1168),
                                                      ("deepspeed", "2.5.1", 1250)])
def test_a_script_that_never_destroys_its_group_is_warned_at_exit(style, torch, line):
    destroyed = _warnings(_finish(_job(style, torch)), "has NOT been destroyed")
    assert sorted(destroyed) == [0, 1, 2, 3]
    assert all(f"ProcessGroupNCCL.cpp:{line}] Warning: WARNING: " in text for text in destroyed.values())
    assert len({_stamp(text) for text in destroyed.values()}) == 4
    assert min(_stamp(text) for text in destroyed.values()) > datetime(2026, 1, 1, 0, 8, 20)  # after the end


@pytest.mark.parametrize(("style", "torch"), [("torchrun", "2.5.1"), ("lightning", "2.5.1"), ("hf", "2.3.1"),
                                              ("megatron", "2.5.1")])
def test_no_exit_warning_where_the_script_destroys_its_group_or_torch_has_none(style, torch):
    assert not _warnings(_finish(_job(style, torch)), "has NOT been destroyed")


def test_a_failed_run_prints_no_exit_warning():
    assert not _warnings(_finish(_job("hf", "2.5.1"), exit_code=1), "has NOT been destroyed")


def test_no_barrier_warning_where_the_first_collective_is_not_a_bare_barrier():
    for style in ("torchrun", "deepspeed", "lightning", "megatron"):
        assert not _warnings(_job(style, "2.5.1").lines(ev.Phase("init", "nccl", 0, T0)), "to perform barrier")
