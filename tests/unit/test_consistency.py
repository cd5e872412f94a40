"""The run tells one story: what the step blocks, the export, the summary,
the cluster box and the ETA say agree with each other and with the run."""

from __future__ import annotations

from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.cli.main import build_parser, to_config
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.rank.faults import Faults
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.world import identity
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock


def layout(ident: identity.Identity) -> PytorchLines:
    out = PytorchLines(100, UTC)
    out.routed(ev.RunIdentity(ident))
    return out


def texts(out: PytorchLines, event: object) -> list[str]:
    return [line.text for line in out.lines(event)]


def test_the_output_directory_says_fine_tuned_or_pre_trained():
    scratch = identity.build(1, 1, 8, 20, asked=identity.Asked(dataset="FineWeb"))  # a corpus: pre-training
    tuned = identity.build(1, 1, 8, 20, asked=identity.Asked(pretrained=True))
    assert Timeline(scratch, VirtualClock(0.0, UTC)).output_dir().endswith("-pretrained/")
    assert Timeline(tuned, VirtualClock(0.0, UTC)).output_dir().endswith("-finetuned/")


def test_the_default_layout_names_the_gpus_half_precision():
    """A V100 has no bf16: its job trains in fp16 mixed precision, and says so."""
    # Seeds whose draw is ZeRO-3, whose export consolidates the shards (ZeRO-1/2 has none to merge).
    for gpu, half, seed in (("Tesla V100-SXM2-32GB", "fp16", 1), ("NVIDIA A100-SXM4-80GB", "bf16", 2)):
        ident = identity.build(seed, 1, 8, 20, gpu=gpu)
        out = layout(ident)
        banner = [line.text for line in out.banner(0.0)]
        assert any(x.endswith(f"| {half} mixed precision") for x in banner)
        model = texts(out, ev.Phase("init", "model", 0, 1.0))
        assert any("  Parameters: " in x and f"({half}: " in x for x in model)
        export = texts(out, ev.Phase("export", "", 20, 2.0))
        assert f"  Consolidating ZeRO-{ident.parallel.zero} shards into {half} weights..." in export


def test_the_output_directory_is_said_once():
    ident = identity.build(1, 1, 8, 20)
    out, path = layout(ident), "./models/x-pretrained/"
    export = texts(out, ev.Export(path, ["model-00001-of-00001.safetensors"], 10**9, 1.0, 0.0))
    summary = texts(out, ev.Summary("x", 1, 20, 2.0, 7.4, 2.1, 60.0, 10**6, 1e4, path, 0.0))
    assert sum(path in t for t in export + summary) == 1


def cluster_box(ident: identity.Identity) -> list[str]:
    """The GPU box after an NCCL report whose all_reduce ran at the run's modelled bus bandwidth."""
    out = layout(ident)
    seconds = sim.allreduce_seconds(ident, sim.grad_numel(ident))
    busbw = 2 * (ident.world - 1) / ident.world * 2 * sim.grad_numel(ident) / seconds / 1e9
    texts(out, ev.NcclStats(20, [ev.OpStats("all_reduce", 1, 2 * sim.grad_numel(ident), 1e3 * seconds, busbw)],
                            0.0))
    gpus = [ev.GpuSample(r, ident.topology.node_of(r), ident.topology.local_rank_of(r), 99, 70, 600, 1000,
                         ident.gpu.memory_mib) for r in range(ident.world)]
    return texts(out, ev.GpuStatus(20, gpus, 0.0))


def test_the_cluster_box_names_the_link_that_limits_the_bus_bandwidth():
    # An 8B model: its all-reduce is long enough for NCCL's latency to vanish in the bus bandwidth.
    one = identity.build(1, 1, 8, 20, model="Llama-3.1-8B", gpu="NVIDIA H100 80GB HBM3")
    two = identity.build(1, 2, 8, 20, model="Llama-3.1-8B", gpu="NVIDIA H100 80GB HBM3")
    [power_one] = [t for t in cluster_box(one) if "Power:" in t]
    [power_two] = [t for t in cluster_box(two) if "Power:" in t]
    assert "NVLink: 360 GB/s bus" in power_one and "InfiniBand" not in power_one
    # Across nodes the all_reduce runs at the network's pace: that figure is InfiniBand's, not NVLink's.
    assert "NVLink: 45 GB/s" not in power_two
    assert "InfiniBand: 8x400 Gb/s, 45 GB/s bus" in power_two


def test_pcie_boxes_across_nodes_are_on_ethernet_as_ncclsays():
    """NCCL on a PCIe box finds no IB device and uses its socket transport
    (render/torchrun/nccl_fabric.py: NET/Socket): the box says Ethernet, and the
    bus bandwidth stays under a 100 GbE port's 12.5 GB/s."""
    from fakerun.render.torchrun.nccl_fabric import Fabric

    two = identity.build(1, 2, 4, 20, gpu="NVIDIA L40S")
    [power] = [t for t in cluster_box(two) if "Power:" in t]
    assert Fabric.of(two).network == "Socket"
    assert "PCIe Gen4 | Ethernet: 100 Gb/s, 10 GB/s bus" in power and "InfiniBand" not in power
    assert sim.network(two).busbw < 12.5e9


def step_event(ident: identity.Identity, step: int, stopped: bool = False) -> ev.Step:
    return ev.Step(step, ident.hyper.total_steps, 3.0, 2.9, 3.1, 1.0, epoch=1, lr=1e-4, tokens_per_s=1e5,
                   samples_per_s=50.0, step_time_s=5.0, mfu=0.5, eta_s=60.0, gpu_mem_total_mib=80_000,
                   stopped=stopped)


def test_the_step_training_stops_at_is_shown_and_the_export_says_it_stopped_early():
    ident = identity.build(1, 1, 8, 400, asked=identity.Asked(log_every=20))
    out = layout(ident)
    assert texts(out, step_event(ident, 16)) == []  # between two logged steps
    shown = texts(out, step_event(ident, 16, stopped=True))
    assert "Step 16/400" in shown[0] and "Loss: 3.0000" in shown[1]
    header = texts(out, ev.Phase("export", "", 16, 0.0))[0]  # then the shards' merge, where there are shards
    assert "Training stopped early at step 16/400." in header and "complete" not in header
    header = texts(out, ev.Phase("export", "", 400, 0.0))[0]
    assert "Training complete!" in header


def test_a_stop_marks_the_step_it_ends_training_at():
    ident = identity.build(1, 1, 2, 400)
    timeline = Timeline(ident, VirtualClock(0.0, UTC))

    def step(n: int, stop_requested: bool) -> tuple[list, bool]:
        done = Completed("train_step", "all_reduce", n, sim.grad_numel(ident), {0: 5.0, 1: 5.0},
                         {0: [3.0, 1.0], 1: [3.0, 1.0]}, [3.0, 1.0], 0)
        events, stop, _ = timeline.on_collective(done, stop_requested)
        return events, stop

    events, stop = step(1, False)
    assert not stop and not events[0].stopped
    events, stop = step(2, True)
    assert stop and events[0].stopped


def test_the_eta_counts_the_evaluations_and_checkpoints_to_come():
    """Step 1's ETA lands where training really ends: at the last step's
    checkpoint, after every evaluation and save."""
    ident = identity.build(5, 1, 2, 40)  # a draw evaluating every 10 steps (seed 5 since the catalog grew)
    clock = VirtualClock(0.0, UTC)
    timeline = Timeline(ident, clock)
    h, step_s = ident.hyper, 5.0
    assert h.evaluations > 1
    first = None
    for n in range(1, h.total_steps + 1):
        done = Completed("train_step", "all_reduce", n, 0, {0: step_s, 1: step_s},
                         {0: [3.0, 1.0], 1: [3.0, 1.0]}, [3.0, 1.0], 0)
        [step, *_] = timeline.on_collective(done)[0]
        first = first or step
        if h.evaluates_after(n):
            for tag, seconds in (("validation", sim.eval_seconds), ("checkpoint", sim.checkpoint_seconds)):
                values = {0: [2.9], 1: [2.9]} if tag == "validation" else {0: [], 1: []}
                timeline.on_collective(Completed(tag, "all_reduce" if values[0] else "barrier", n, 0,
                                                 {r: seconds(ident, r, n) for r in (0, 1)}, values,
                                                 [2.9] if values[0] else [], 0))
    # Only the barriers' few microseconds of simulated NCCL time are left out.
    assert first.time + first.eta_s == pytest.approx(clock.now, abs=0.01)
    assert first.eta_s - first.pauses_s == pytest.approx((h.total_steps - 1) * step_s)


def test_every_natural_loss_spike_shows_at_a_logged_step():
    seen = 0
    for seed in range(40):
        ident = identity.build(seed, 1, 8, 800, asked=identity.Asked(log_every=20))
        h = ident.hyper
        for start, height, _ in sim.spikes(ident):
            logged = sim.next_logged_step(start, h.log_every, h.total_steps)
            assert sim.spike(ident, logged) >= height / 2, (seed, start)
            seen += 1
    assert seen > 20  # the check ran on spikes that start anywhere between two logged steps


@pytest.mark.parametrize("fail_step", ["16", "21", "39"])
def test_the_loss_spike_scenario_shows_at_the_next_logged_step(fail_step):
    c = to_config(build_parser().parse_args(["--speed", "0", "--max-steps", "400", "--scenario", "loss-spike",
                                             "--fail-step", fail_step, "train.py", "--logging_steps", "20"]),
                  environ={})
    assert c.fault is not None and c.identity.hyper.log_every == 20
    faults = Faults(c, c.identity, 0)
    logged = sim.next_logged_step(int(fail_step), 20, 400)
    loss, _, _ = faults.apply(logged, 3.0, 1.0, 5.0)
    assert loss >= 3.0 * (1 + c.fault.param("height") / 2)


def test_with_sparse_logging_a_spike_still_shows_and_never_lasts_for_hundreds_of_steps():
    for seed in range(20):
        ident = identity.build(seed, 1, 8, 800, asked=identity.Asked(log_every=500))
        for start, height, decay in sim.spikes(ident):
            assert decay <= sim.SPIKE_MAX_DECAY
            assert sim.spike(ident, sim.next_logged_step(start, 500, 800)) >= height / 2, (seed, start)
