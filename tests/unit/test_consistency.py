"""The run tells one story: what the step blocks, the export, the summary,
the cluster box and the ETA say agree with each other and with the run."""

from __future__ import annotations

from datetime import UTC

from fakerun import events as ev
from fakerun.coordinator.timeline import Timeline
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
    scratch = identity.build(1, 1, 8, 20)
    tuned = identity.build(1, 1, 8, 20, asked=identity.Asked(pretrained=True))
    assert Timeline(scratch, VirtualClock(0.0, UTC)).output_dir().endswith("-pretrained/")
    assert Timeline(tuned, VirtualClock(0.0, UTC)).output_dir().endswith("-finetuned/")


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
    one = identity.build(1, 1, 8, 20, gpu="NVIDIA H100 80GB HBM3")
    two = identity.build(1, 2, 8, 20, gpu="NVIDIA H100 80GB HBM3")
    [power_one] = [t for t in cluster_box(one) if "Power:" in t]
    [power_two] = [t for t in cluster_box(two) if "Power:" in t]
    assert "NVLink: 360 GB/s bus" in power_one and "InfiniBand" not in power_one
    # Across nodes the all_reduce runs at the network's pace: that figure is InfiniBand's, not NVLink's.
    assert "NVLink: 45 GB/s" not in power_two
    assert "InfiniBand: 8x400 Gb/s, 45 GB/s bus" in power_two
