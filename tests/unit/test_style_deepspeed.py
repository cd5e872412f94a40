"""The deepspeed renderer's exact strings, against lines in the formats of
deepspeedai/DeepSpeed v0.14.4 (deepspeed/utils/logging.py's logger and
log_dist, deepspeed/utils/timer.py's throughput line, deepspeed/runtime/
utils.py's see_memory_usage, deepspeed/runtime/config.py's print) and the
other pinned tags."""

from __future__ import annotations

import pickle
import re
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fakerun import events as ev
from fakerun.checkpoint.deepspeed import DeepSpeedWriter
from fakerun.checkpoint.layouts import Saving
from fakerun.render.lines import STDOUT
from fakerun.render.styles.deepspeed import DeepSpeedLines, skip_record, timer_text
from fakerun.render.styles.deepspeed_config import config_dump, config_line, ds_json
from fakerun.render.styles.deepspeed_engine import EngineInit
from fakerun.render.styles.deepspeed_log import ds_stamp, version_table
from fakerun.render.styles.deepspeed_memory import GIB, Memory, gib, memory_figures
from fakerun.world import identity, styles
from fakerun.world import physics as sim
from fakerun.world.loss_scale import HysteresisSpent, LossScaler, ScaleReduced, restored


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def renderer(version: str = "0.14.4") -> DeepSpeedLines:
    out = DeepSpeedLines(100, UTC)
    out.v = version_table(version)
    return out


def test_the_logger_stamps_with_a_comma_and_whole_milliseconds():
    assert ds_stamp(at("2024-06-25T10:12:30.456"), UTC) == "[2024-06-25 10:12:30,456]"
    assert ds_stamp(at("2024-06-25T10:12:30.4569"), UTC) == "[2024-06-25 10:12:30,456]"  # truncated


def test_log_dist_lines_as_in_the_reference():
    lines = renderer().dist(at("2024-06-25T10:21:04.317"),
                            "step=10, skipped=0, lr=[1.9997482349425065e-05], mom=[(0.9, 0.999)]")
    assert [(line.text, line.stream, line.rank) for line in lines] == [(
        "[2024-06-25 10:21:04,317] [INFO] [logging.py:96:log_dist] [Rank 0] step=10, skipped=0, "
        "lr=[1.9997482349425065e-05], mom=[(0.9, 0.999)]", STDOUT, 0)]
    cdb = renderer().log(at("2024-06-25T10:12:05.001"), "cdb", "cdb=None", rank=3)
    assert cdb[0].text == "[2024-06-25 10:12:05,001] [INFO] [comm.py:637:init_distributed] cdb=None"
    assert cdb[0].rank == 3


def test_see_memory_usage_figures_as_in_the_reference():
    assert memory_figures(15.81 * GIB, 17.39 * GIB, 17.45 * GIB) == \
        "MA 15.81 GB         Max_MA 17.39 GB         CA 17.45 GB         Max_CA 17 GB "
    # round(x, 2) printed raw, as in a real 0.14.4 log: 0.9, not 0.90.
    assert memory_figures(0.81 * GIB, 0.9 * GIB, 0.96 * GIB) == \
        "MA 0.81 GB         Max_MA 0.9 GB         CA 0.96 GB         Max_CA 1 GB "


def test_the_throughput_timer_line_as_in_the_reference():
    # The timer prints the figures' repr (v0.14.4 deepspeed/utils/timer.py): 27.498614098766253
    # is no double's repr, its neighbour ...254 is.
    assert timer_text(10, 40, 27.498614098766254, 27.61307466592154, 15.82 * GIB, 41.37 * GIB) == (
        "epoch=0/micro_step=40/global_step=10, RunningAvgSamplesPerSec=27.498614098766254, "
        "CurrSamplesPerSec=27.61307466592154, MemAllocated=15.82GB, MaxMemAllocated=41.37GB")


@pytest.mark.parametrize("name,value,line", [
    ("activation_checkpointing_config", "{", "  activation_checkpointing_config  {"),
    ("optimizer_legacy_fusion", "False", "  optimizer_legacy_fusion ...... False"),
    ("pld_enabled", "False", "  pld_enabled .................. False"),
    ("seq_parallel_communication_data_type", "torch.float32", "  seq_parallel_communication_data_type  torch.float32"),
    ("train_micro_batch_size_per_gpu", "4", "  train_micro_batch_size_per_gpu  4"),
    ("zero_allow_untested_optimizer", "True", "  zero_allow_untested_optimizer  True"),
    ("zero_optimization_stage", "2", "  zero_optimization_stage ...... 2")])
def test_config_dump_lines_as_in_the_reference(name, value, line):
    assert config_line(name, value) == line


def test_json_as_deepspeeds_scientific_notation_encoder_writes_it():
    # The shape of a real 0.15.1 dump: %e above 1e3, ", " before each newline.
    config = {"train_batch_size": 16, "fp16": {"enabled": True, "hysteresis": 2}, "steps_per_print": 1e10,
              "reduce_bucket_size": 5e8, "betas": [0.9, 0.98], "nvme_path": None}
    assert ds_json(config) == (
        '{\n    "train_batch_size": 16, \n    "fp16": {\n        "enabled": true, \n        "hysteresis": 2\n'
        '    }, \n    "steps_per_print": 1.000000e+10, \n    "reduce_bucket_size": 5.000000e+08, \n'
        '    "betas": [0.9, 0.98], \n    "nvme_path": null\n}')


def test_the_loss_scaler_spends_its_hysteresis_then_halves():
    scaler = LossScaler()
    skips = [scaler.update(overflow) for overflow in (True, True, True)]
    assert skips == [HysteresisSpent(65536, 2, 1), ScaleReduced(65536, 32768), ScaleReduced(32768, 16384)]
    assert [skip_record(skip) for skip in skips] == [
        ("hysteresis", "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, "
                       "but hysteresis is 2. Reducing hysteresis to 1"),
        ("overflow", "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768"),
        ("overflow", "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 32768, reducing to 16384")]
    # loss_scale_window clean steps after the last overflow: the scale doubles, the hysteresis is back.
    for _ in range(999):
        assert scaler.update(False) is None
    assert (scaler.scale, scaler.hysteresis) == (16384, 1)
    scaler.update(False)
    assert (scaler.scale, scaler.hysteresis) == (32768, 2)


def test_the_reference_hysteresis_line():
    scaler = LossScaler(scale=2.0**32)
    skip = scaler.update(True)
    assert isinstance(skip, HysteresisSpent)
    assert skip_record(skip)[1] == ("[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: "
                                    "4294967296, but hysteresis is 2. Reducing hysteresis to 1")
    assert version_table("0.14.4")["hysteresis"] == "loss_scaler.py:190:update_scale"


@pytest.mark.parametrize("version,log_dist,timer,memory,comm,config", [
    ("0.14.4", 96, 258, (781, 782, 789), (637, 668), (997, 1001)),
    ("0.15.4", 128, 264, (781, 782, 789), (652, 683), (999, 1003)),
    ("0.16.4", 128, 264, (781, 782, 789), (658, 689), (1001, 1005)),
    ("0.18.2", 123, 265, (786, 787, 794), (821, 852), (958, 962))])
def test_each_version_logs_from_the_reference_lines(version, log_dist, timer, memory, comm, config):
    v = version_table(version)
    assert v["log_dist"] == f"logging.py:{log_dist}:log_dist"
    assert v["timer"] == f"timer.py:{timer}:stop"
    assert [v[k] for k in ("mem_title", "mem_figures", "mem_cpu")] == \
        [f"utils.py:{n}:see_memory_usage" for n in memory]
    assert (v["cdb"], v["backend"]) == tuple(f"comm.py:{n}:init_distributed" for n in comm)
    assert (v["config_print"], v["config_item"]) == tuple(f"config.py:{n}:print" for n in config)
    assert v["level"] == ("WARNING" if version == "0.18.2" else "INFO")
    assert v["model_ckpt_ranks"] == ([0] if version == "0.18.2" else [0, 1])


def test_the_default_version_matches_the_reference_sequence():
    v = version_table("0.14.4")
    assert v["accelerator"] == "real_accelerator.py:203:get_accelerator"
    assert v["zero_support"] == "utils.py:56:is_zero_supported_optimizer"
    assert [v[k] for k in ("reduce_bucket", "allgather_bucket", "cpu_offload", "round_robin")] == \
        [f"stage_1_and_2.py:{n}:__init__" for n in (148, 149, 150, 151)]
    assert v["state_initialized"] == "stage_1_and_2.py:543:__init__"
    assert v["zero_saved"] == "engine.py:3478:_save_zero_checkpoint"
    # load_checkpoint (engine.py, checkpoint_engine/torch_checkpoint_engine.py at v0.14.4)
    assert (v["ckpt_loading"], v["ckpt_loaded"]) == ("torch_checkpoint_engine.py:27:load",
                                                     "torch_checkpoint_engine.py:29:load")
    assert v["zero_read"] == "engine.py:3018:_get_all_zero_checkpoint_state_dicts"
    assert v["zero_loaded"] == "engine.py:2968:_load_zero_checkpoint"
    assert "ckpt_loading" not in version_table("0.18.2")  # log_dist(..., ranks=[0]) from 0.18
    assert v["user_config"] == "config.py:987:print_user_config"
    assert (v["z3_reduce_bucket"], v["z3_prefetch_bucket"]) == ("stage3.py:130:__init__", "stage3.py:131:__init__")
    assert v["z3_state_initialized"] == "stage3.py:486:_setup_for_real_optimizer"
    assert version_table("0.14.9") is v and version_table("0.17.0") is version_table("0.16.4")


VALUES = {"comms_addr": "0x7f0000000000", "init_scale": 65536, "scale_power": 16, "scale_window": 1000,
          "hysteresis": 2, "grad_accum": 4, "clip": 1.0, "steps_per_print": 10, "train_batch_size": 128,
          "micro_batch": 4, "dp": 8, "stage": 2, "gather16": False}


def test_the_config_dump_is_sorted_and_follows_the_version():
    old = dict(config_dump("0.14.4", VALUES))
    assert list(old) == sorted(old)
    assert (old["fp16_enabled"], old["zero_optimization_stage"], old["world_size"]) == ("True", "2", "8")
    assert old["activation_checkpointing_config"].startswith('{\n    "partition_activations": false, \n')
    assert "sub_group_size=1,000,000,000" in old["zero_config"]  # pydantic 1's pp_int
    new = dict(config_dump("0.18.2", VALUES))
    assert "fp16_enabled" not in new and new["float16_config"].startswith("enabled=True auto_cast=False")
    assert "sub_group_size=1000000000" in new["zero_config"]


def test_a_skipped_step_counts_and_holds_the_learning_rate():
    pinned = styles.parse("deepspeed").versions()[0]
    ident = identity.build(5, 1, 2, total_steps=12, versions=pinned)
    out = DeepSpeedLines(100, UTC)
    out.lines(ev.RunIdentity(ident))
    every = ident.hyper.log_every
    step = every * max(2, 8 // every + 1)  # past the scaler's first few steps
    early = [line.text for n in range(1, step) for line in out.lines(
        ev.Step(n, 12, 6.5, 6.4, 6.6, 9.0, step_time_s=2.0, time=at("2026-01-30T14:29:00") + n))]
    found = sum("OVERFLOW!" in text for text in early)  # the scaler coming down to its level
    assert found >= 3
    printed = out.lines(ev.Step(step, 12, 6.5, 6.4, 6.6, 9.0, overflow=True, step_time_s=2.0, time=at("2026-01-30T14:30:00")))
    texts = [line.text for line in printed]
    # The hysteresis is spent by then: this overflow halves the scale.
    assert "OVERFLOW!" in texts[0] and "[loss_scaler.py:183:update_scale]" in texts[0]
    lr = sim.learning_rate(ident, step - found - 1)
    assert f"step={step}, skipped={found + 1}, lr=[{lr}, {lr}]" in texts[1]
    assert texts[-1].endswith("[Rank 0] Loss: 6.5000") and printed[-1].stream == "stderr"


@pytest.mark.parametrize("seed", [5, 11, 4])  # ZeRO-1, 2 and 3
def test_adams_states_come_at_the_first_step_not_at_initialisation(seed):
    """ZeRO's initialize_optimizer_states (stage_1_and_2.py and stage3.py,
    the same at v0.14.4, v0.15.4, v0.16.4 and v0.18.2) gives each fp32
    partition a zero grad and frees it again; torch's AdamW makes exp_avg and
    exp_avg_sq lazily, in its first step(). So see_memory_usage shows the
    same MA before and after "initializing optimizer states" (Max_MA up by
    the fp32 grad partition), and the throughput timer's MemAllocated after
    the first steps is up by the two moments: the fp32 partition twice."""
    pinned = styles.parse("deepspeed").versions()[0]
    ident = identity.build(seed, 1, 2, total_steps=12, versions=pinned)
    out = DeepSpeedLines(100, UTC)
    out.lines(ev.RunIdentity(ident))
    texts = [line.text for line in EngineInit(out, ident, at("2026-01-30T14:22:00")).lines()]
    figures = {title: re.search(r"MA ([\d.]+) GB +Max_MA ([\d.]+) GB", texts[n + 1]).groups()
               for n, text in enumerate(texts) for title in ("Before", "After")
               if text.endswith(f"] {title} initializing optimizer states")}
    (before, _), (after, after_peak) = [tuple(map(float, figures[t])) for t in ("Before", "After")]
    memory = Memory(ident)
    assert before == after == gib(memory.weights + memory.master)
    assert after_peak == gib(memory.weights + 2 * memory.master)
    steady = gib(memory.steady() - (memory.grads if ident.parallel.zero >= 3 else 0))
    assert abs(steady - after - gib(2 * memory.master)) <= 0.011


def test_fp16_runs_overflow_early_while_the_scaler_finds_its_level():
    """From 2**16 the scale halves a step (after the hysteresis's first
    overflow) until the gradients fit fp16: a few skipped steps, a level of
    2048 to 16384 for most runs (deepspeedai/DeepSpeed#931: 6 skips, 2048),
    and few overflows after it."""
    pinned = styles.parse("deepspeed").versions()[0]
    levels, later = [], 0
    for seed in range(1, 121):
        ident = identity.build(seed, 1, 2, total_steps=300, versions=pinned)
        scaler = LossScaler()
        skips = [scaler.step(ident, step, False) for step in range(1, 11)]
        assert isinstance(skips[0], HysteresisSpent) and skips[0].attempted == 65536
        assert sum(isinstance(s, ScaleReduced) for s in skips) >= 1
        levels.append(scaler.scale)
        later += restored(ident, ident.hyper.total_steps).skipped - scaler.skipped
    assert min(levels) >= 1024 and max(levels) <= 32768
    assert sum(2048 <= level <= 16384 for level in levels) >= 0.9 * len(levels)
    assert later <= 0.25 * len(levels)


def test_a_resumed_run_carries_on_its_scaler():
    """load_checkpoint restores the loss scaler with the optimizer states: a
    view that first sees step N carries on where the run's steps left it."""
    pinned = styles.parse("deepspeed").versions()[0]
    ident = identity.build(5, 1, 2, total_steps=12, versions=pinned)
    whole, resumed = DeepSpeedLines(100, UTC), DeepSpeedLines(100, UTC)
    for view in (whole, resumed):
        view.lines(ev.RunIdentity(ident))

    def step(view: DeepSpeedLines, n: int) -> list[str]:
        e = ev.Step(n, 12, 6.5, 6.4, 6.6, 9.0, step_time_s=2.0, time=at("2026-01-30T14:29:00") + n)
        # (the throughput timer counts the steps its own process timed: not restored)
        return [line.text for line in view.lines(e) if "[timer.py:" not in line.text]

    for n in range(1, 9):
        step(whole, n)
    expected = [step(whole, n) for n in range(9, 13)]
    assert [step(resumed, n) for n in range(9, 13)] == expected
    assert whole.scaler == resumed.scaler and resumed.scaler.skipped >= 3
    # --max-restarts: the new worker group resumes from step 2's checkpoint,
    # its scaler still coming down, not from where step 12 left the old one's.
    fresh = DeepSpeedLines(100, UTC)
    fresh.lines(ev.RunIdentity(ident))
    from_two = [step(fresh, n) for n in range(1, 13)][2:]
    resumed.lines(ev.Restart(1, 1, 2, at("2026-01-30T15:00:00")))
    assert [step(resumed, n) for n in range(3, 13)] == from_two
    assert any("OVERFLOW!" in line for line in from_two[0])


def test_the_checkpoint_writer_restores_its_scaler_on_a_restart(tmp_path):
    """skipped_steps in the model states of a run restarted from step 2
    (after it had run to step 6) are an uninterrupted run's."""
    pinned = styles.parse("deepspeed").versions()[0]
    ident = identity.build(5, 1, 2, total_steps=12, versions=pinned)

    def saved(out: Path, events: list[ev.Event]) -> dict[str, Any]:
        writer = DeepSpeedWriter(Saving(out, ident, 5))
        for e in events:
            writer.event(e)
        with zipfile.ZipFile(out / "global_step3/mp_rank_00_model_states.pt") as zf:
            return pickle.loads(zf.read("mp_rank_00_model_states/data.pkl"))

    def steps(numbers: range) -> list[ev.Event]:
        return [ev.Step(n, 12, 6.5, 6.4, 6.6, 9.0, time=at("2026-01-30T14:29:00") + n) for n in numbers]

    checkpoint = ev.Checkpoint(3, 1, "", 1, 0, 0, 1.0, at("2026-01-30T14:40:00"))
    whole = saved(tmp_path / "whole", [*steps(range(1, 4)), checkpoint])
    restarted = saved(tmp_path / "restarted", [*steps(range(1, 7)), ev.Restart(1, 1, 2, 0.0),
                                               *steps(range(3, 4)), checkpoint])
    assert whole["skipped_steps"] >= 3 and restarted["skipped_steps"] == whole["skipped_steps"]
    assert restarted["lr_scheduler"] == whole["lr_scheduler"]
