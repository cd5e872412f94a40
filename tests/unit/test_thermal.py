"""The thermal-throttle scenario: the GPU's condition over the steps, the
pace it sets, and what `fakerun smi` shows of it (issue 22)."""

from __future__ import annotations

import dataclasses

import pytest

from fakerun import events as ev
from fakerun.config.options import Fault
from fakerun.errors import UsageError
from fakerun.rank.training import Script
from fakerun.smi import SmiStateSink, Snapshot
from fakerun.world import hardware, identity, pace, physics, thermal
from fakerun.world.scenarios import ScenarioError, build, catalog
from tests.unit.test_bounds import Recorder, config
from tests.unit.test_nvidia_smi import run

H100 = "NVIDIA H100 80GB HBM3"
START, HEAT = 3, 4.0  # the fault's step; the scenario's heat_steps
THROTTLED = ("--nproc", "2", "--max-steps", "12", "--seed", "3", "--scenario", "thermal-throttle",
             "--fail-step", str(START), "--fail-rank", "1", "--gpu", H100)


@pytest.fixture(scope="module")
def run_config():
    return config(*THROTTLED)


def conditions(c, rank: int = 1) -> dict[int, hardware.Condition]:
    return {s: hardware.condition(c.identity, c.fault, rank, s) for s in range(1, c.steps + 1)}


def test_the_scenario_is_in_the_catalog_with_its_parameters():
    s = catalog()["thermal-throttle"]
    assert (s.fault, s.params, s.recurs) == ("thermal", {"cooling": 2.5, "heat_steps": 4.0}, False)
    with pytest.raises(ScenarioError, match="cooling must be at least 2"):
        build("mild", {"fault": "thermal", "cooling": 1.2}, "mild.toml")  # it would never reach slowdown


def test_healthy_before_the_fault_and_on_every_other_gpu(run_config):
    assert all(cond == hardware.HEALTHY for s, cond in conditions(run_config).items() if s < START)
    assert set(conditions(run_config, rank=0).values()) == {hardware.HEALTHY}


def test_it_heats_over_a_few_steps_to_its_slowdown_temperature(run_config):
    # nvidia-smi -q of an H100 SXM: GPU Slowdown Temp 89 C, GPU Max Operating Temp 87 C
    # (data/nvidia_smi.toml's card, from a real capture).
    ident, card = run_config.identity, thermal.board(H100)
    temps = {s: hardware.reading(ident, run_config.fault, 1, s, "train").temp_c for s in range(1, 13)}
    climbing = [temps[s] for s in range(START, START + int(HEAT))]
    assert climbing == sorted(climbing) and len(set(climbing)) == len(climbing)  # gradual: a new high each step
    assert climbing[0] < card.max_operating_c
    assert all(temps[s] == card.slowdown_c for s in range(START + int(HEAT) - 1, 13))


def test_sw_then_hw_thermal_slowdown_lower_the_clock(run_config):
    conds = conditions(run_config)
    reasons = [conds[s].event_reasons for s in range(START, 13)]
    # nvml.h: SwThermalSlowdown 0x20 from the max operating temperature; at the slowdown
    # temperature HwThermalSlowdown 0x40 and its parent HwSlowdown 0x8.
    assert reasons[:4] == [0, 0x20, 0x20, 0x68] and set(reasons[4:]) == {0x68}
    clocks = [round(conds[s].clock_factor * 1980) for s in range(START, 13)]
    assert clocks[0] == clocks[1] == 1980 and 1980 > clocks[2] > clocks[3]
    assert all(c % 15 == 0 for c in clocks)  # the board's clock steps
    assert 0.6 < conds[12].clock_factor < 0.8  # a loaded H100 near 1.4 GHz: its heat balances its cooling


def test_the_held_clock_draws_what_the_failed_cooling_carries_away(run_config):
    """Power and temperature balance: through `cooling` times the heatsink's
    resistance, the throttled draw heats it exactly to its slowdown temperature."""
    ident, fault = run_config.identity, run_config.fault
    for step in range(START + int(HEAT), 13):
        healthy = physics.telemetry(ident, 1, step, "train")
        inlet = healthy.temp_c - physics.HEATSINK_C_AT_CAP * healthy.power_w / ident.gpu.power_cap_w
        hot = hardware.reading(ident, fault, 1, step, "train")
        balanced = inlet + physics.HEATSINK_C_AT_CAP * fault.param("cooling") * hot.power_w / ident.gpu.power_cap_w
        assert balanced == pytest.approx(thermal.board(H100).slowdown_c, abs=1.5)
        assert hot.power_w < 0.6 * healthy.power_w


def test_its_compute_slows_by_the_clock_ratio_and_every_step_waits_for_it(run_config):
    """The throttled rank's reported work over the healthy run's: the clock
    ratio, step by step (the coordinator's step time is the slowest rank's)."""
    healthy = config(*THROTTLED[:6], "--gpu", H100)
    work = {}
    for name, c in (("hot", run_config), ("cool", healthy)):
        comm = Recorder()
        Script(comm, 1, c, c.identity).run()
        work[name] = [s for tag, s, _ in comm.contributions if tag == "train_step"]
    assert len(work["hot"]) == len(work["cool"]) == 12
    for step, (hot, cool) in enumerate(zip(work["hot"], work["cool"], strict=True), start=1):
        clock = hardware.condition(run_config.identity, run_config.fault, 1, step).clock_factor
        assert hot / cool == pytest.approx(1 / clock, rel=1e-9)
        assert hot / cool == pace.compute_factor(run_config.identity, run_config.fault, 1, step)
    assert work["hot"][-1] > 1.3 * work["cool"][-1]
    assert max(work["hot"]) <= run_config.bounds.sim_s  # the coordinator accepts what the plan allows


def test_the_ranks_report_the_heat_they_send(run_config):
    comm = Recorder()
    Script(comm, 1, run_config, run_config.identity).run()
    late = [t for t in comm.telemetry if t.step >= START + HEAT and t.phase == "train"]
    assert late and all(t.temp_c == thermal.board(H100).slowdown_c for t in late)


@pytest.mark.parametrize("gpu", ["AMD Instinct MI300X"])
def test_a_board_without_nvml_limits_is_refused(gpu):
    with pytest.raises(UsageError, match="thermal-throttle needs an NVIDIA GPU"):
        config(*THROTTLED[:-1], gpu)


# -- fakerun smi -----------------------------------------------------------------
def throttled_snapshot(tmp_path, step: int) -> Snapshot:
    ident = identity.build(seed=3, nnodes=1, nproc=2, total_steps=100, gpu=H100)
    fault = Fault("thermal", 1, START, (("cooling", 2.5), ("heat_steps", HEAT)))
    sink = SmiStateSink(tmp_path / "smi.json", "/opt/conda/bin/python3", monotonic=lambda: 0.0,
                        wall=lambda: 1.8e9, fault=fault)
    sink.event(ev.RunIdentity(ident))
    for r in range(2):
        sink.event(ev.RankStarted(r, r, 0, 5000 + r, {}))
    sink.event(ev.Step(step, 100, 2.0, 2.0, 2.0, 1.0))
    snap = sink.snapshot()
    assert snap is not None
    return snap


QUERY = ("--query-gpu=index,clocks.sm,temperature.gpu,clocks_event_reasons.active,clocks_event_reasons.hw_slowdown,"
         "clocks_event_reasons.hw_thermal_slowdown,clocks_event_reasons.sw_thermal_slowdown", "--format=csv,noheader")


def test_smi_query_shows_the_throttled_gpu_and_its_reasons(tmp_path):
    code, out, err = run(*QUERY, shot=throttled_snapshot(tmp_path, 20))
    cool, hot = out.splitlines()
    assert (code, err) == (0, "")
    assert cool.split(", ")[1:2] + cool.split(", ")[3:] == [
        "1980 MHz", "0x0000000000000000", "Not Active", "Not Active", "Not Active"]
    index, clock, temp, active, hw, hw_thermal, sw_thermal = hot.split(", ")
    assert (index, temp, active, hw, hw_thermal, sw_thermal) == (
        "1", "89", "0x0000000000000068", "Active", "Active", "Active")
    assert 1200 < int(clock.removesuffix(" MHz")) < 1600


def test_smi_report_and_dmon_show_it(tmp_path):
    shot = throttled_snapshot(tmp_path, 20)
    _, out, _ = run("-q", "-i", "1", "-d", "PERFORMANCE,CLOCK", shot=shot)
    lines = [" ".join(x.split()) for x in out.splitlines()]
    for key in ("HW Slowdown", "HW Thermal Slowdown", "SW Thermal Slowdown"):
        assert f"{key} : Active" in lines
    assert "HW Power Brake Slowdown : Not Active" in lines
    clock = round(dataclasses.replace(shot).gpus[1].clock_factor * 1980 / 15) * 15
    assert f"SM : {clock} MHz" in lines
    _, dmon, _ = run("dmon", "-c", "1", "-s", "pc", shot=shot)
    assert [row.split()[-1] for row in dmon.splitlines() if not row.startswith("#")] == ["1980", str(clock)]


def test_smi_shows_the_climb_before_the_slowdown(tmp_path):
    code, out, _ = run(*QUERY, shot=throttled_snapshot(tmp_path, START + 1))
    hot = out.splitlines()[1].split(", ")
    assert (hot[1], hot[2], hot[3], hot[6]) == ("1980 MHz", "87", "0x0000000000000020", "Active")


def test_every_clocks_event_reason_field_reads_active_or_not(tmp_path):
    # The H100 capture's --query-gpu of every field (utkuozdemir/nvidia_gpu_exporter
    # internal/captures/, 590.48.01): each reason "Active" or "Not Active", none [N/A].
    names = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "hw_thermal_slowdown",
             "hw_power_brake_slowdown", "sw_thermal_slowdown", "sync_boost")
    asked = ",".join(f"clocks_throttle_reasons.{n}" for n in names)  # the old spelling, an alias
    _, out, _ = run(f"--query-gpu={asked}", "--format=csv,noheader", shot=throttled_snapshot(tmp_path, 20))
    assert out.splitlines() == ["Not Active, " * 7 + "Not Active",
                                "Not Active, Not Active, Not Active, Active, Active, Not Active, Active, Not Active"]
