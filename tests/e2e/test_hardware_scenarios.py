"""Issue 22's hardware scenarios end to end: a thermally throttled GPU
(the steps slow, `fakerun smi` shows the slowdown while the job runs) and
an InfiniBand link flap across two nodes (one slow step, then training goes
on), each exiting 0 with nothing left running."""

from __future__ import annotations

import os

from tests.conftest import wait_until
from tests.e2e.test_smi_cmd import smi

H100 = "NVIDIA H100 80GB HBM3"
HOT = ("--query-gpu=index,clocks.sm,temperature.gpu,clocks_event_reasons.hw_thermal_slowdown",
       "--format=csv,noheader")


def test_a_throttled_gpu_slows_every_step_and_smi_shows_it(runner, tmp_path):
    # Paced (100x) so that the job is still running when smi looks: ~2 s of wall time.
    job = runner.start("--nproc", "2", "--max-steps", "16", "--speed", "100", "--seed", "3", "--scenario",
                       "thermal-throttle", "--fail-step", "2", "--fail-rank", "1", "--gpu", H100,
                       "--output", "jsonl", env={**os.environ, "TMPDIR": str(tmp_path)})

    def throttled() -> list[str] | None:
        code, out, _ = smi(*HOT, tmp=tmp_path)
        rows = out.splitlines()
        # Both at work (a rank that left shows its GPU idle), the second past its slowdown temperature.
        busy = code == 0 and len(rows) == 2 and ", 1980 MHz, " in rows[0]
        return rows if busy and rows[1].endswith(", Active") else None

    cool, hot = wait_until(throttled, 30)
    assert cool.split(", ")[1:] == ["1980 MHz", cool.split(", ")[2], "Not Active"]
    index, clock, temp, _ = hot.split(", ")
    assert (index, temp) == ("1", "89") and 1200 < int(clock.removesuffix(" MHz")) < 1600
    assert job.wait(60) == 0, job.stderr[-2000:]
    steps = {s["step"]: s for s in job.of("step")}
    assert len(steps) == 16
    # Heating to 87 C at full clock (steps 2, 3), slowing (4), held at 89 C from step 5: the step
    # time goes up by the clock's ratio, less the all-reduce that does not slow.
    assert all(steps[s]["step_time_s"] < 1.1 * steps[1]["step_time_s"] for s in (2, 3))
    assert all(steps[s]["step_time_s"] > 1.3 * steps[1]["step_time_s"] for s in range(5, 17))
    assert steps[16]["mfu"] < 0.8 * steps[1]["mfu"] and steps[16]["tokens_per_s"] < 0.8 * steps[1]["tokens_per_s"]
    assert steps[16]["gpu_temp_c"] > steps[1]["gpu_temp_c"] + 5  # the average of two GPUs, one at 89 C


def test_a_link_flap_slows_one_step_across_nodes_then_training_goes_on(runner):
    job = runner.run("--nodes", "2", "--nproc", "1", "--no-theatre", "--speed", "0", "--seed", "3",
                     "--max-steps", "6", "--scenario", "link-flap", "--fail-step", "3", "--fail-rank", "1",
                     "--gpu", H100, "--output", "jsonl", timeout=90)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    steps = {s["step"]: s["step_time_s"] for s in job.of("step")}
    assert sorted(steps) == list(range(1, 7))
    # 1 s unplugged and 5.94 s of link training, waited out by NCCL's IB retries (1.07 s or 4.29 s apart).
    assert 7.0 < steps[3] - steps[2] < 9.5
    assert all(abs(steps[s] - steps[2]) < 0.1 * steps[2] for s in (1, 4, 5, 6))  # it recovers at once
    kernel = [(e["node_rank"], e["text"].split(": ", 1)[1]) for e in job.of("kernel_message")]
    assert kernel == [(1, "Port module event: module 0, Cable unplugged"),
                      (1, "Port module event: module 0, Cable plugged")]
    assert [(e["node_rank"], e["active"]) for e in job.of("port_event")] == [(1, False), (1, True)]
